"""The garbage collector's settings for a long-running process (API or worker)."""

from __future__ import annotations

import gc

#: Allocations between collections of the youngest generation (CPython's default is 700).
YOUNG_GC_THRESHOLD = 20_000


def settle_heap() -> None:
    """Moves everything alive after start-up (modules, FastAPI and pydantic state: hundreds of
    thousands of objects) out of the garbage collector's sight: otherwise every full
    collection walks them all, a pause of tens of milliseconds in the middle of requests or
    of dispatch.

    The youngest generation is also collected every ``YOUNG_GC_THRESHOLD`` allocations instead
    of every 700: a 1,000-row bulk request makes tens of thousands of short-lived containers,
    none of them in cycles, and collecting them every 700 cost several percent of its CPU."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def unsettle_heap(threshold: tuple[int, int, int]) -> None:
    """Undoes :func:`settle_heap` (for a process that goes on with other work: tests, bench)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)
