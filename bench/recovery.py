"""Recovery after a crash: a ``kill -9`` of a worker among two, and of ``callqueue up`` (started
again at once, as a supervisor would), with the simulated carrier.

The live-call cap binds (calls of 2-4 s, cap 20), so the slots the killed process held are what
matters: until they are taken over, the queue dials with fewer slots. Recovery is measured from
the simulator's ledger: from the kill to the first moment the processes still alive have the
cap's worth of live calls again (each refilled slot is dialed the moment it frees, so the live
count touches the cap at once when every slot is usable). The target is ``WORKER_TTL`` + 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench.common import make_specs, open_queue, private_server
from bench.registry import BenchContext, Measured, benchmark
from bench.workers import _worker_env, stop_workers
from callqueue.carriers.simulator import read_ledger
from callqueue.engine.options import WORKER_TTL_S, QueueOptions

CAP = 20
BACKLOG = 1500
WARM_S = 4.0  # of full dialing before the kill


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _spawned(home: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        stop_workers([p for p in procs if p.poll() is None])


def _start(home: Path, name: str, command: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    cwd = home / name
    cwd.mkdir(parents=True)
    with (cwd / "out.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "callqueue.cli", command],
            cwd=cwd, env=_worker_env(env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _live_of(ledger: list[dict[str, object]], pids: set[int]) -> list[tuple[float, int]]:
    """(time, live calls of ``pids``) after each dial or end of theirs, in time order."""
    steps = sorted(
        (float(r["t"]), 1 if r["ev"] == "dial" else -1)  # type: ignore[arg-type]
        for r in ledger
        if int(r["pid"]) in pids  # type: ignore[call-overload]
    )
    live, out = 0, []
    for t, step in steps:
        live += step
        out.append((t, live))
    return out


async def _until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _recovered_at(ledger_path: Path, pids: set[int], after: float) -> float | None:
    for t, live in _live_of(read_ledger(ledger_path), pids):
        if t >= after and live >= CAP:
            return t
    return None


async def _scenario(ctx: BenchContext, command: str) -> tuple[float, str]:
    """Kills one process of ``command`` (two workers, or one ``up``) once dialing is at full
    rate; returns the seconds to recover and a note."""
    name = f"rec-{command}"
    options = QueueOptions(max_live_calls=CAP, rate_per_second=100)
    with private_server() as server, tempfile.TemporaryDirectory(prefix="cq-bench-") as tmp:
        home = Path(tmp)
        ledger = home / "ledger.jsonl"
        env = {
            "REDIS_URL": server.local_url,
            "QUEUE_NAME": name,
            "QUEUE_WORKERS": "10",
            "MAX_CONCURRENT_CALLS": str(CAP),
            "RATE_LIMIT_PER_SECOND": "100",
            "SIM_LEDGER": str(ledger),
            "SIM_OUTCOMES": "completed=1",
            "SIM_RING_SECONDS": "0-0.2",
            "SIM_TALK_SECONDS": "2-4",
            "HOST": "127.0.0.1",
            "API_KEYS": "",
        }
        async with open_queue(ctx, server.local_url, name, options) as queue:
            with _spawned(home) as procs:
                count = 2 if command == "worker" else 1
                for i in range(count):
                    procs.append(_start(home, f"p{i}", command, {**env, "PORT": str(_free_port())}))
                await queue.enqueue_many(make_specs(0, BACKLOG))
                all_pids = {p.pid for p in procs}
                await _until(
                    lambda: ledger.exists() and _recovered_at(ledger, all_pids, 0) is not None,
                    30, "dialing at the cap",
                )  # fmt: skip
                await asyncio.sleep(WARM_S)
                victim = procs[0]
                os.kill(victim.pid, signal.SIGKILL)
                killed = time.time()
                victim.wait()
                if command == "up":  # a supervisor starts it again at once
                    procs.append(_start(home, "p-again", command,
                                        {**env, "PORT": str(_free_port())}))  # fmt: skip
                alive = {p.pid for p in procs if p.poll() is None}
                limit_s = WORKER_TTL_S + 30
                await _until(
                    lambda: _recovered_at(ledger, alive, killed) is not None,
                    limit_s, "dialing to recover after the kill",
                )  # fmt: skip
                recovered = _recovered_at(ledger, alive, killed)
                assert recovered is not None
                left = await queue.client.zcard(queue.keys.live)
    seconds = recovered - killed
    return seconds, (
        f"recovery after kill -9 of {'a worker among two' if count == 2 else 'callqueue up'}: "
        f"{seconds:.2f} s to {CAP} live calls on the processes alive (worker ttl "
        f"{WORKER_TTL_S:g} s); {left} live at the end"
    )


@benchmark("recovery", "recovery_after_kill_s", "recovery_after_kill_worker_s",
           "recovery_after_kill_up_s")  # fmt: skip
async def recovery(ctx: BenchContext) -> Measured:
    """kill -9 of a worker among two, and of callqueue up; seconds until dialing is back at
    the full rate (the live-call cap filled by live processes)."""
    worker_s, worker_note = await _scenario(ctx, "worker")
    up_s, up_note = await _scenario(ctx, "up")
    return Measured(
        {
            "recovery_after_kill_s": max(worker_s, up_s),
            "recovery_after_kill_worker_s": worker_s,
            "recovery_after_kill_up_s": up_s,
        },
        n={"cap": CAP, "worker_ttl_s": WORKER_TTL_S, "talk_s": "2-4"},
        notes=[worker_note, up_note],
    )
