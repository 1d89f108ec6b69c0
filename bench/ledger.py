"""Exact figures from the simulator's ledger (one JSON line per dial and per end)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

Record = dict[str, Any]


def dial_times(ledger: Sequence[Record]) -> list[float]:
    return sorted(float(r["t"]) for r in ledger if r["ev"] == "dial")


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """Largest number of dials in any closed window ``[t, t + window_s]`` (sorted input)."""
    return max(
        (bisect.bisect_right(times, t + window_s) - i for i, t in enumerate(times)), default=0
    )


def count_between(times: Sequence[float], start: float, end: float) -> int:
    """Dials in ``[start, end)`` (sorted input)."""
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


def live_intervals(ledger: Sequence[Record]) -> list[tuple[float, float]]:
    """``[dial, end]`` per attempt; an attempt the ledger never saw end counts as live forever."""
    dials: dict[tuple[str, int], float] = {}
    ends: dict[tuple[str, int], float] = {}
    for r in ledger:
        key = (str(r["call"]), int(r["attempt"]))
        if r["ev"] == "dial":
            dials[key] = min(float(r["t"]), dials.get(key, float("inf")))
        elif r["ev"] == "end":
            ends[key] = float(r["t"])
    return [(t, ends.get(key, float("inf"))) for key, t in dials.items()]


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """Most intervals live at one instant (at a tie, an end comes before a start)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    live = best = 0
    for _, step in points:
        live += step
        best = max(best, live)
    return best


def mean_live(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Time-average number of live intervals over ``[start, end]``."""
    covered = sum(max(0.0, min(e, end) - max(s, start)) for s, e in intervals)
    return covered / (end - start)
