"""Events of one attempt that pile up in a batch are folded into one script call."""

from __future__ import annotations

import asyncio

from callqueue.engine.event_writer import fold
from callqueue.engine.queue import EndFacts, EventCall
from callqueue.models import EventResult, Outcome


async def test_accepted_answered_ended_fold_into_one_ended_with_all_facts() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[EventResult]] = [loop.create_future() for _ in range(4)]
    batch = [
        (EventCall("a", 1, "accepted", "tok", "uuid-a"), futures[0]),
        (EventCall("b", 1, "ringing"), futures[1]),
        (EventCall("a", 1, "answered", answered_ms=1234), futures[2]),
        (EventCall("a", 1, "ended", end=EndFacts(Outcome.COMPLETED, duration_s=3)), futures[3]),
    ]
    folded = fold(batch)
    assert [(c.call_id, c.kind) for c, _ in folded] == [("a", "ended"), ("b", "ringing")]
    merged, waiters = folded[0]
    assert merged.carrier_call_id == "uuid-a" and merged.answered_ms == 1234
    assert waiters == [futures[0], futures[2], futures[3]]


async def test_a_callback_that_overtakes_the_dial_answer_absorbs_it() -> None:
    loop = asyncio.get_running_loop()
    f1, f2 = loop.create_future(), loop.create_future()
    folded = fold(
        [(EventCall("a", 1, "ringing"), f1), (EventCall("a", 1, "accepted", "tok", "uuid"), f2)]
    )
    assert len(folded) == 1 and folded[0][0].kind == "ringing"
    assert folded[0][0].carrier_call_id == "uuid"


async def test_nothing_folds_across_attempts_or_backwards_or_with_notes() -> None:
    loop = asyncio.get_running_loop()
    f = [loop.create_future() for _ in range(5)]
    folded = fold(
        [
            (EventCall("a", 1, "ended", end=EndFacts(Outcome.BUSY)), f[0]),
            (EventCall("a", 2, "accepted", "t2"), f[1]),  # another attempt
            (EventCall("a", 2, "ambiguous", "t2"), f[2]),  # a note stays separate
            (EventCall("c", 1, "answered"), f[3]),
            (EventCall("c", 1, "ringing"), f[4]),  # backwards: kept, the script ignores it
        ]
    )
    assert [c.kind for c, _ in folded] == ["ended", "accepted", "ambiguous", "answered", "ringing"]
