"""The heap of an API or worker process after start-up: frozen, young collections spaced
out."""

from __future__ import annotations

import gc

from callqueue.heap import YOUNG_GC_THRESHOLD, settle_heap


def test_settle_heap_freezes_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
