"""A carrier callback names its call (Plivo: CallUUID and RequestUUID; Twilio: CallSid). Once
the engine knows the attempt's carrier id, an event naming other ids changes nothing (code
``mismatch``), in the same script run that would have applied it."""

from __future__ import annotations

from typing import Any

from engine_support import MakeQueue, spec

from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.models import CallStatus, CarrierEvent, ClaimedCall, Outcome, RetryPolicy
from waiting import until

REQUEST, CALL, OTHER = "req-0001", "call-0001", "call-9999"
FAST_RETRY = RetryPolicy(base_delay_s=0.05, factor=2, max_delay_s=0.2, jitter=0.1)


async def claim_one(q: CallQueue) -> ClaimedCall:
    got: list[ClaimedCall] = []

    async def check() -> bool:
        got.extend((await q.claim(1)).calls)
        return bool(got)

    await until(check, 5, "a call to claim")
    return got[0]


async def state(q: CallQueue, call_id: str) -> tuple[Any, ...]:
    """Everything an event may change: the call's hash, the live set, the leases, the stats."""
    c, k = q.client, q.keys
    return (
        await c.hgetall(k.call(call_id)),
        await c.zrange(k.live, 0, -1, withscores=True),
        await c.zrange(k.leases, 0, -1, withscores=True),
        await c.hgetall(k.stats),
    )


async def test_callbacks_naming_another_call_change_nothing(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("c1", max_retries=0))
    call = await claim_one(q)
    assert (await q.accepted(call, REQUEST)).status == CallStatus.RINGING  # Plivo's request id

    before = await state(q, "c1")
    for kind in (CarrierEvent.RINGING, CarrierEvent.ANSWERED, CarrierEvent.MACHINE):
        result = await q.event("c1", 1, kind, carrier_call_id=OTHER, carrier_ids=(OTHER, "req-x"))
        assert (result.applied, result.code) == (False, "mismatch"), kind
    ended = await q.event(
        "c1", 1, CarrierEvent.ENDED, end=EndFacts(Outcome.BUSY, OTHER), carrier_ids=(OTHER,)
    )
    assert ended.code == "mismatch"
    assert await state(q, "c1") == before

    # The request id matches until a callback names the call: then only the call id does.
    answered = await q.event(
        "c1", 1, CarrierEvent.ANSWERED, carrier_call_id=CALL, carrier_ids=(CALL, REQUEST)
    )
    assert answered.applied
    record = await q.get("c1")
    assert record is not None and record.attempts[0].carrier_call_id == CALL
    before = await state(q, "c1")
    by_request = await q.event(
        "c1", 1, CarrierEvent.ENDED, end=EndFacts(Outcome.BUSY, OTHER),
        carrier_ids=(OTHER, REQUEST),
    )  # fmt: skip
    assert by_request.code == "mismatch" and await state(q, "c1") == before
    done = await q.event(
        "c1", 1, CarrierEvent.ENDED, end=EndFacts(Outcome.COMPLETED, CALL, duration_s=3.0),
        carrier_ids=(CALL, REQUEST),
    )  # fmt: skip
    assert done.applied and done.status == CallStatus.COMPLETED


async def test_an_unknown_carrier_id_is_learnt_from_the_first_callback(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    await q.enqueue(spec("c1", max_retries=0))
    call = await claim_one(q)
    # The callback overtook the dial's answer: nothing to compare with yet.
    early = await q.event(
        "c1", 1, CarrierEvent.ANSWERED, carrier_call_id=CALL, carrier_ids=(CALL, REQUEST)
    )
    assert early.applied
    assert (await q.accepted(call, REQUEST)).code == "dup"
    before = await state(q, "c1")
    other = await q.event("c1", 1, CarrierEvent.MACHINE, carrier_ids=(OTHER,))
    assert other.code == "mismatch" and await state(q, "c1") == before
    # Events without ids (the dispatcher's, the simulator's) are not checked.
    assert (await q.event("c1", 1, CarrierEvent.MACHINE, carrier_call_id=OTHER)).applied


async def test_a_late_callback_about_an_earlier_attempt_must_name_it(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue(spec("c1", max_retries=2))
    first = await claim_one(q)
    await q.accepted(first, REQUEST)
    busy = await q.event(
        "c1", 1, CarrierEvent.ENDED, end=EndFacts(Outcome.BUSY, CALL),
        carrier_ids=(CALL, REQUEST),
    )  # fmt: skip
    assert busy.status == CallStatus.SCHEDULED
    second = await claim_one(q)
    assert second.attempt == 2
    before = await state(q, "c1")
    late = EndFacts(Outcome.BUSY, OTHER, hangup_cause="USER_BUSY", duration_s=0.0)
    wrong = await q.event("c1", 1, CarrierEvent.ENDED, end=late, carrier_ids=(OTHER,))
    assert wrong.code == "mismatch" and await state(q, "c1") == before
    right = await q.event(
        "c1", 1, CarrierEvent.ENDED, end=EndFacts(Outcome.BUSY, CALL, "USER_BUSY"),
        carrier_ids=(CALL,),
    )  # fmt: skip
    assert right.code == "stale"
    record = await q.get("c1")
    assert record is not None and record.status == CallStatus.DIALING
    assert record.attempts[0].hangup_cause == "USER_BUSY"  # its facts kept, as before
