"""Worker processes and ledger analysis shared by the multi-process tests."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


def start_worker(
    tmp: Path, env: Mapping[str, str], name: str = "worker"
) -> subprocess.Popen[bytes]:
    """Starts ``callqueue worker`` in its own directory (so no stray .env is read)."""
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "QUEUE_"))}
    full.update({"LOG_LEVEL": "WARNING", **env})
    log = open(home / "out.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        [sys.executable, "-m", "callqueue.cli", "worker"],
        cwd=home,
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_workers(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 15) -> list[int]:
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


async def wait_for(
    check: Callable[[], Awaitable[bool]], limit_s: float, what: str, every: float = 0.05
) -> None:
    """Waits until ``check()`` is true; fails naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(every)


def dials(ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in ledger if r["ev"] == "dial"]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Largest number of events inside any sliding window of ``window`` seconds."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of intervals live at one instant (an end before a start at a tie)."""
    points = [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals]
    points.sort(key=lambda p: (p[0], p[1]))
    live = best = 0
    for _, step in points:
        live += step
        best = max(best, live)
    return best


def attempts_by_call(ledger: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """call id -> attempt -> {"dials": [t...], "end": t | None}."""
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in ledger:
        entry = out[r["call"]].setdefault(int(r["attempt"]), {"dials": [], "end": None})
        if r["ev"] == "dial":
            entry["dials"].append(r["t"])
        elif r["ev"] == "end":
            entry["end"] = r["t"]
    return out


def check_no_double_dial(
    ledger: list[dict[str, Any]],
    longest_life_s: float,
    killed_at: Mapping[int, float] | None = None,
) -> None:
    """Each attempt dialed once; a new attempt only after the previous one is over (it ended,
    its longest possible life has passed, or the process that placed it was killed: a simulated
    call lives in its process - ``killed_at`` maps such pids to when they were killed)."""
    killed_at = killed_at or {}
    pid_of = {(r["call"], int(r["attempt"])): int(r["pid"]) for r in ledger if r["ev"] == "dial"}
    for call, attempts in attempts_by_call(ledger).items():
        # An attempt missing here was claimed by a worker that died before placing it.
        numbers = sorted(attempts)
        for n in numbers:
            assert len(attempts[n]["dials"]) == 1, f"{call} attempt {n} dialed twice"
        for before, n in itertools.pairwise(numbers):
            prev = attempts[before]
            over = prev["end"]
            if over is None:
                died = killed_at.get(pid_of[(call, before)], float("inf"))
                over = min(prev["dials"][0] + longest_life_s, died)
            assert attempts[n]["dials"][0] >= over - 0.005, (
                f"{call}: attempt {n} dialed at {attempts[n]['dials'][0]:.3f} while attempt "
                f"{before} could still be live until {over:.3f}"
            )


def check_no_redial_after_completion(ledger: list[dict[str, Any]]) -> None:
    """Nobody whose call the carrier reported completed (a person or a machine answered and the
    call ended normally) is dialed again."""
    done: dict[str, float] = {}
    for r in ledger:
        if r["ev"] == "end" and r.get("outcome") in ("completed", "machine"):
            done[r["call"]] = min(done.get(r["call"], float("inf")), float(r["t"]))
    again = [
        (r["call"], r["attempt"])
        for r in ledger
        if r["ev"] == "dial" and float(r["t"]) > done.get(r["call"], float("inf"))
    ]
    assert not again, f"dialed again after the carrier reported them completed: {again[:10]}"


def live_intervals(
    ledger: list[dict[str, Any]], longest_life_s: float
) -> list[tuple[float, float]]:
    """[dial, end] per attempt; an attempt with no end (its process died) holds its slot for
    its longest life."""
    out = []
    for attempts in attempts_by_call(ledger).values():
        for entry in attempts.values():
            start = entry["dials"][0]
            end = entry["end"] if entry["end"] is not None else start + longest_life_s
            out.append((start, end))
    return out
