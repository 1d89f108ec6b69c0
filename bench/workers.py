"""Sub-benchmarks with several ``callqueue worker`` processes sharing one queue, judged from the
simulated carrier's ledger (every process appends to one file)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import make_specs, open_queue, private_server
from bench.ledger import (
    count_between,
    dial_times,
    live_intervals,
    max_in_window,
    max_overlap,
    mean_live,
)
from bench.registry import BenchContext, Measured, benchmark
from callqueue.carriers.simulator import read_ledger
from callqueue.config import Settings
from callqueue.engine.codec import text
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import queued_total

PROCESSES = 3
DIALS_IN_FLIGHT = 10  # QUEUE_WORKERS of each process
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _worker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without any callqueue setting, plus ``settings``."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env.update({"LOG_LEVEL": "WARNING", **settings})
    return env


@contextlib.contextmanager
def worker_processes(
    home: Path, count: int, settings: Mapping[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``callqueue worker`` processes, each in its own directory (so no stray
    ``.env`` is read), stopped with SIGTERM (graceful) on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    env = _worker_env(settings)
    try:
        for i in range(count):
            cwd = home / f"worker{i}"
            cwd.mkdir(parents=True)
            with (cwd / "out.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "callqueue.cli", "worker"],
                        cwd=cwd,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield procs
    finally:
        stop_workers(procs)


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


async def _wait_for_workers(
    queue: CallQueue, procs: list[subprocess.Popen[bytes]], home: Path
) -> None:
    """Until every process has sent its first heartbeat (it is connected and dispatching)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while await queue.client.zcard(queue.keys.workers) < len(procs):
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"worker processes did not start:\n{_worker_logs(home)}")
        await asyncio.sleep(0.05)


def _worker_logs(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(home.glob("*/out.log")))


def _ledger_dials(path: Path) -> list[float]:
    return dial_times(read_ledger(path)) if path.exists() else []


async def _dial_at_or_after(ledger: Path, after: float, timeout_s: float) -> float:
    """The time of the first dial in the ledger at or after ``after`` (epoch s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        times = _ledger_dials(ledger)
        i = bisect.bisect_left(times, after)
        if i < len(times):
            return times[i]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no dial within {timeout_s:.0f} s (waiting for one after {after})")
        await asyncio.sleep(0.02)


@dataclass(frozen=True, slots=True)
class LedgerRun:
    ledger: list[dict[str, object]]
    start: float  # first dial (epoch s)
    end: float  # start + measured duration
    next_dial: float  # the first dial at or after ``end``
    backlog_left: int  # calls still queued at ``next_dial``
    stats: dict[str, str]  # the queue's counters at ``next_dial``
    exit_codes: list[int]


async def run_workers(
    ctx: BenchContext,
    name: str,
    options: QueueOptions,
    settings: Mapping[str, str],
    backlog: int,
    duration_s: float,
) -> LedgerRun:
    """Starts the workers, queues ``backlog`` calls, and lets them dispatch for ``duration_s``
    seconds from the first dial, and on until the next dial after that; returns the ledger."""
    with private_server() as server, tempfile.TemporaryDirectory(prefix="cq-bench-") as tmp:
        home = Path(tmp)
        ledger_path = home / "ledger.jsonl"
        env = {
            "REDIS_URL": server.local_url,
            "QUEUE_NAME": name,
            "QUEUE_WORKERS": str(DIALS_IN_FLIGHT),
            "MAX_CONCURRENT_CALLS": str(options.max_live_calls),
            "RATE_LIMIT_PER_SECOND": f"{options.rate_per_second:g}",
            "SIM_LEDGER": str(ledger_path),
            "SIM_OUTCOMES": "completed=1",
            **settings,
        }
        async with open_queue(ctx, server.local_url, name, options) as queue:
            with worker_processes(home, PROCESSES, env) as procs:
                await _wait_for_workers(queue, procs, home)
                await queue.enqueue_many(make_specs(0, backlog))
                start = await _dial_at_or_after(ledger_path, 0.0, timeout_s=10)
                end = start + duration_s
                await asyncio.sleep(max(0.0, end - time.time()))
                next_dial = await _dial_at_or_after(ledger_path, end, timeout_s=10)
                backlog_left = int(await queued_total(queue))
                raw = await queue.client.hgetall(queue.keys.stats)
                stats = {text(k): text(v) for k, v in raw.items()}
                codes = stop_workers(procs)
        ledger = read_ledger(ledger_path)
    if any(codes):
        raise RuntimeError(f"worker exit codes {codes}")
    if backlog_left == 0:
        raise RuntimeError("the backlog ran out before the end of the measured interval")
    return LedgerRun(ledger, start, end, next_dial, backlog_left, stats, codes)


@benchmark("rate_limit", "rate_limit_max_in_window", "rate_limit_utilization")
async def rate_limit(ctx: BenchContext) -> Measured:
    """Limit 50 dials/s, three worker processes, backlog always present."""
    limit = 50
    duration = ctx.n(20, 6)
    run = await run_workers(
        ctx,
        "rate",
        QueueOptions(max_live_calls=0, rate_per_second=limit),
        {"SIM_RING_SECONDS": "0", "SIM_TALK_SECONDS": "0"},
        backlog=int(limit * duration * 1.5) + 100,
        duration_s=duration,
    )
    times = dial_times(run.ledger)
    # The measured interval runs from the first dial to the first dial at least `duration`
    # seconds later (excluded): both ends at the same point of the limiter's cycle, so a
    # bursty dial pattern neither gains nor loses a burst at the edges.
    interval = run.next_dial - run.start
    in_interval = count_between(times, run.start, run.next_dial)
    return Measured(
        {
            "rate_limit_max_in_window": max_in_window(times, 1.0),
            "rate_limit_utilization": in_interval / (limit * interval),
        },
        n={"processes": PROCESSES, "seconds": duration, "limit_per_s": limit, "dials": len(times)},
        notes=[
            f"rate limit: {in_interval} dials in {interval:.3f} s from the first "
            f"({in_interval / interval:.2f}/s), {len(times)} in all; "
            f"{run.backlog_left} still queued at the end; {run.stats.get('released', 0)} "
            f"of {run.stats.get('dialed', '?')} grants handed back unused (released)"
        ],
    )


@benchmark("concurrency", "concurrency_max_live", "concurrency_utilization")
async def concurrency(ctx: BenchContext) -> Measured:
    """Cap 20 live calls, three worker processes, ring 0-0.05 s, talk 0.2-0.6 s, no rate limit."""
    cap = 20
    duration = ctx.n(10, 4)
    run = await run_workers(
        ctx,
        "conc",
        QueueOptions(max_live_calls=cap, rate_per_second=0),
        {"SIM_RING_SECONDS": "0-0.05", "SIM_TALK_SECONDS": "0.2-0.6"},
        backlog=int(cap / 0.25 * duration * 1.3) + 100,  # ~80/s at most (0.25 s calls)
        duration_s=duration,
    )
    intervals = live_intervals(run.ledger)
    unended = sum(1 for _, e in intervals if e == float("inf"))
    return Measured(
        {
            "concurrency_max_live": max_overlap(intervals),
            "concurrency_utilization": mean_live(intervals, run.start, run.end) / cap,
        },
        n={"processes": PROCESSES, "seconds": duration, "cap": cap, "attempts": len(intervals)},
        notes=[
            f"concurrency: {len(intervals)} attempts, {unended} without an end in the "
            f"ledger; {run.backlog_left} still queued at the end"
        ],
    )
