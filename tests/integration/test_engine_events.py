"""Carrier events, settle and retries, release, cancel, reap, retention, the transition table."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_support import MakeQueue, spec
from procs import wait_for

from callqueue.engine.codec import text
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.engine.scripts import ScriptError
from callqueue.models import (
    CallSpec,
    CallStatus,
    CarrierEvent,
    ClaimedCall,
    EnqueueState,
    Outcome,
    RetryPolicy,
)

FAST_RETRY = RetryPolicy(base_delay_s=0.05, factor=2, max_delay_s=0.2, jitter=0.1)


async def claim_one(q: CallQueue) -> ClaimedCall:
    result = await q.claim(1)
    assert len(result.calls) == 1, result
    return result.calls[0]


async def grants_for(q: CallQueue, seconds: float) -> list[ClaimedCall]:
    """Every call granted while claiming for ``seconds``, waiting as the limiter says."""
    got: list[ClaimedCall] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await q.claim(50)
        got += result.calls
        if not result.calls:
            wait = (result.wait_ms or 50) / 1000
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
    return got


async def claim_when_due(q: CallQueue, limit_s: float = 5) -> ClaimedCall:
    got: list[ClaimedCall] = []

    async def check() -> bool:
        got.extend((await q.claim(1)).calls)
        return bool(got)

    await wait_for(check, limit_s, "the retry to come due")
    return got[0]


async def test_answered_call_completes_with_its_facts(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    assert (await q.accepted(call, "req-uuid")).status == CallStatus.RINGING
    assert (await q.event("c1", 1, CarrierEvent.RINGING)).code == "dup"
    assert (await q.event("c1", 1, CarrierEvent.ANSWERED)).status == CallStatus.IN_PROGRESS
    done = await q.ended(
        "c1",
        1,
        EndFacts(
            Outcome.COMPLETED, "call-uuid", "NORMAL_CLEARING", duration_s=42.0, bill_duration_s=60.0
        ),
    )
    assert done.applied and done.status == CallStatus.COMPLETED
    record = await q.get("c1")
    assert record is not None and record.status == CallStatus.COMPLETED
    (attempt,) = record.attempts
    assert attempt.number == 1 and attempt.outcome == Outcome.COMPLETED
    assert attempt.carrier_call_id == "call-uuid"  # the callback's call id wins over the request's
    assert attempt.duration_s == 42.0 and attempt.bill_duration_s == 60.0
    assert attempt.hangup_cause == "NORMAL_CLEARING" and attempt.answered_ms is not None
    assert [h.status for h in record.history] == [
        CallStatus.QUEUED,
        CallStatus.DIALING,
        CallStatus.RINGING,
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
    ]
    assert await q.client.zcard(q.keys.live) == 0
    assert await q.client.zscore(q.keys.finished, "c1") is not None


async def test_duplicate_and_out_of_order_events_change_nothing(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue(spec("c1", max_retries=0))
    call = await claim_one(q)
    # Hangup arrives before the dial response and before ringing.
    first = await q.ended("c1", 1, EndFacts(Outcome.BUSY, "uuid-1"))
    assert first.applied and first.status == CallStatus.FAILED
    before = await q.client.hgetall(q.keys.call("c1"))
    for result in [
        await q.ended("c1", 1, EndFacts(Outcome.BUSY, "uuid-1")),
        await q.ended("c1", 1, EndFacts(Outcome.COMPLETED, "uuid-1")),
        await q.event("c1", 1, CarrierEvent.RINGING),
        await q.event("c1", 1, CarrierEvent.ANSWERED),
        await q.accepted(call, "uuid-1"),
    ]:
        assert not result.applied and result.code == "dup"
    assert await q.client.hgetall(q.keys.call("c1")) == before
    assert int(text(await q.client.hget(q.keys.stats, "o:busy"))) == 1


async def test_events_for_another_attempt_are_stale(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue(spec("c1"))
    await claim_one(q)
    assert (await q.ended("c1", 1, EndFacts(Outcome.NO_ANSWER))).status == CallStatus.SCHEDULED
    second = await claim_when_due(q)
    assert second.attempt == 2
    late = await q.ended("c1", 1, EndFacts(Outcome.NO_ANSWER, hangup_cause="late copy"))
    assert late.code == "stale"
    bogus = await q.event("c1", 7, CarrierEvent.ANSWERED)
    assert bogus.code == "stale"
    record = await q.get("c1")
    assert record is not None and record.status == CallStatus.DIALING
    assert record.attempts[0].hangup_cause == "late copy"  # facts kept, no state change


async def test_retries_with_backoff_then_fail_for_good(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue(spec("c1", max_retries=2))
    gaps = []
    for n in (1, 2, 3):
        call = await claim_when_due(q)
        assert call.attempt == n
        result = await q.ended("c1", n, EndFacts(Outcome.BUSY))
        record = await q.get("c1")
        assert record is not None
        if n < 3:
            assert result.status == CallStatus.SCHEDULED and record.next_attempt_ms is not None
            gaps.append(record.next_attempt_ms - record.updated_ms)
        else:
            assert result.status == CallStatus.FAILED
    assert 45 <= gaps[0] <= 55 and 90 <= gaps[1] <= 110  # base 50 ms, factor 2, jitter 10%
    record = await q.get("c1")
    assert record is not None and [a.outcome for a in record.attempts] == [Outcome.BUSY] * 3
    assert await q.dead_letter() == ["c1"]


async def test_outcomes_outside_the_retry_policy_end_the_call(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue_many([spec("rej"), spec("mach")])
    a, b = (await q.claim(2)).calls
    assert (await q.ended(a.call_id, 1, EndFacts(Outcome.REJECTED))).status == CallStatus.FAILED
    assert (await q.ended(b.call_id, 1, EndFacts(Outcome.MACHINE))).status == CallStatus.FAILED


async def test_release_gives_the_attempt_back_unused(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=1)
    await q.enqueue_many([spec("c1"), spec("c2")])
    call = await claim_one(q)
    wrong = ClaimedCall(call.call_id, call.attempt, "not-the-token", call.spec, 0)
    assert (await q.release(wrong, "429")).code == "token"
    released = await q.release(call, "429")
    assert released.applied and released.status == CallStatus.QUEUED
    again = await claim_one(q)
    assert again.call_id == "c1" and again.attempt == 1  # same place in line, attempt unused
    assert (await q.release(call, "429")).code == "token"  # the old claim is void
    record = await q.get("c1")
    assert record is not None and len(record.attempts) == 1


async def test_release_after_carrier_word_is_refused(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    await q.event("c1", 1, CarrierEvent.RINGING)
    assert (await q.release(call, "late 429")).code == "stale"


async def test_cancel_waiting_and_live_calls(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue_many([spec("queued"), spec("sched", scheduled_at_ms=2**42), spec("live")])
    assert (await q.cancel("queued")).code == "cancelled"
    assert (await q.cancel("sched")).code == "cancelled"
    assert await q.client.zcard(q.keys.scheduled) == 0
    call = await claim_one(q)
    assert call.call_id == "live"
    await q.accepted(call, "uuid-9")
    pubsub = q.client.pubsub()
    await pubsub.subscribe(q.keys.wake_channel)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    result = await q.cancel("live")
    assert result.code == "hangup" and result.carrier_call_id == "uuid-9"
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["data"] == b"h live 1 uuid-9"
    await pubsub.aclose()
    # The carrier's hangup then ends it as cancelled, never retried, whatever the outcome.
    ended = await q.ended("live", 1, EndFacts(Outcome.NO_ANSWER))
    assert ended.status == CallStatus.CANCELLED
    assert (await q.cancel("live")).code == "final"
    assert (await q.cancel("nope")).code == "not_found"


async def test_cancel_while_dialing_is_reported_to_the_dialer(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    await q.cancel("c1")
    accepted = await q.accepted(call, "uuid")
    assert accepted.cancel_requested  # the dispatcher hangs up at once


@pytest.mark.slow
async def test_reap_lapsed_lease_holds_slot_then_recovers_lost_attempt(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(
        max_live_calls=1,
        dial_lease_s=0.05,
        ring_timeout_s=1,
        default_max_duration_s=1,
        grace_s=0,
        retry=FAST_RETRY,
    )
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    await asyncio.sleep(0.1)
    reaped = await q.reap()
    assert reaped.lapsed_leases == 1 and reaped.lost_attempts == 0
    assert (await q.get("c1")).status == CallStatus.DIALING  # type: ignore[union-attr]
    await q.enqueue(spec("c2"))
    assert (await q.claim(1)).calls == []  # the slot is still held: it may be live
    assert reaped.next_expiry_ms is not None
    await asyncio.sleep(max(0, reaped.next_expiry_ms - reaped.server_now_ms) / 1000 + 0.01)
    reaped = await q.reap()
    assert reaped.lost_attempts == 1
    record = await q.get("c1")
    assert record is not None and record.status == CallStatus.SCHEDULED
    assert record.attempts[0].outcome == Outcome.LOST
    # A worker that comes back late with the old claim changes nothing.
    assert (await q.accepted(call, "late")).code == "dup"
    assert (await q.claim(1)).calls[0].call_id == "c2"


async def test_finished_calls_expire_after_retention(make_queue: MakeQueue) -> None:
    q = make_queue(retention_s=1)
    await q.enqueue(spec("c1"))
    await claim_one(q)
    await q.ended("c1", 1, EndFacts(Outcome.COMPLETED, duration_s=1))
    ttl = await q.client.pttl(q.keys.call("c1"))
    assert 0 < ttl <= 1000

    async def gone() -> bool:
        return await q.get("c1") is None

    await wait_for(gone, 5, "the finished call to expire")
    await asyncio.sleep(0.01)
    await q.reap()
    assert await q.client.zcard(q.keys.finished) == 0


async def test_transition_table_is_enforced_inside_redis(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    # Corrupt the state behind the engine's back: the script must refuse the move.
    await q.client.hset(q.keys.call("c1"), "st", "completed")
    with pytest.raises(ScriptError, match="CQ_BAD_TRANSITION completed->ringing"):
        await q.accepted(call, "uuid")


async def test_a_batch_of_events_applies_each_in_order_and_refuses_one_alone(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    await q.enqueue_many([spec("c1"), spec("c2")])
    first, second = (await q.claim(2)).calls
    await q.client.hset(q.keys.call(second.call_id), "st", "completed")  # corrupted
    results = await q.events(
        [
            q.event_call(first.call_id, 1, "accepted", token=first.token, carrier_call_id="u1"),
            q.event_call(second.call_id, 1, "accepted", token=second.token),
            q.event_call(first.call_id, 1, CarrierEvent.ANSWERED),
            q.event_call(first.call_id, 1, CarrierEvent.ANSWERED),  # the same twice
            q.event_call(first.call_id, 1, "ended", end=EndFacts(Outcome.COMPLETED, duration_s=3)),
        ]
    )
    assert [r.code for r in results] == ["ok", "error", "ok", "dup", "ok"]
    assert "CQ_BAD_TRANSITION completed->ringing" in results[1].error
    assert results[4].status == CallStatus.COMPLETED
    record = await q.get(first.call_id)
    assert record is not None and record.status == CallStatus.COMPLETED
    assert record.attempts[0].carrier_call_id == "u1"


async def test_machine_detection_ends_the_attempt_as_machine(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue(spec("c1", max_retries=0))
    call = await claim_one(q)
    await q.accepted(call, "uuid")
    await q.event("c1", 1, CarrierEvent.ANSWERED)
    assert (await q.event("c1", 1, CarrierEvent.MACHINE)).applied
    assert (await q.event("c1", 1, CarrierEvent.MACHINE)).applied  # harmless twice
    done = await q.ended("c1", 1, EndFacts(Outcome.COMPLETED, duration_s=4))
    assert done.status == CallStatus.FAILED  # machine is not in the default retry policy
    record = await q.get("c1")
    assert record is not None and record.attempts[0].outcome == Outcome.MACHINE


async def test_throttled_attempt_is_free_and_the_rate_backs_off(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(rate_per_second=8, rate_margin_ms=0, rate_backoff_s=5, retry=FAST_RETRY)
    await q.enqueue_many([spec(f"c{i}", max_retries=0) for i in range(20)])
    call = await claim_one(q)
    result = await q.ended(call.call_id, 1, EndFacts(Outcome.THROTTLED, hangup_cause="5030"))
    assert result.status == CallStatus.SCHEDULED
    record = await q.get(call.call_id)
    assert record is not None and record.next_attempt_ms is not None
    assert [a.outcome for a in record.attempts] == [Outcome.THROTTLED]
    # Half the limit (8 -> 4) for the next while: 4 grants in a second, one already made.
    assert len(await grants_for(q, 0.9)) == 3


async def test_release_with_throttle_halves_the_dial_rate(make_queue: MakeQueue) -> None:
    q = make_queue(rate_per_second=10, rate_margin_ms=0, rate_backoff_s=5)
    await q.enqueue_many([spec(f"c{i}") for i in range(30)])
    call = await claim_one(q)
    await q.release(call, "429", throttle=True)
    assert len(await grants_for(q, 0.9)) == 4  # 10 -> 5 a second, one grant already used


async def test_an_unsent_release_gives_the_rate_token_back(make_queue: MakeQueue) -> None:
    q = make_queue(rate_per_second=2, rate_margin_ms=0)
    await q.enqueue_many([spec(f"c{i}") for i in range(5)])
    first, second = await grants_for(q, 0.6)  # paced: one at once, the next 500 ms later
    assert (await q.claim(5)).calls == []
    await q.release(second, "429")  # the request went out: its token stays spent
    assert (await q.claim(5)).calls == []
    await q.release(first, "stalled before dialing", unsent=True)
    again = await q.claim(5)
    assert [c.call_id for c in again.calls] == ["c0"]


async def test_a_throttled_attempt_costs_no_retry_and_its_number_is_never_reused(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(rate_backoff_s=0.01, retry=FAST_RETRY)
    await q.enqueue(spec("c1", max_retries=0))
    await claim_one(q)
    await q.ended("c1", 1, EndFacts(Outcome.THROTTLED, hangup_cause="5030"))
    second = await claim_when_due(q)
    assert second.attempt == 2  # a late callback for attempt 1 cannot touch this one
    assert (await q.ended("c1", 1, EndFacts(Outcome.THROTTLED))).code == "stale"
    done = await q.ended("c1", 2, EndFacts(Outcome.BUSY))
    assert done.status == CallStatus.FAILED  # max_retries=0: one real attempt, no more


async def test_a_cancelled_call_ends_cancelled_even_when_it_was_answered(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    await q.enqueue(spec("c1"))
    call = await claim_one(q)
    await q.accepted(call, "uuid")
    await q.event("c1", 1, CarrierEvent.ANSWERED)
    assert (await q.cancel("c1")).code == "hangup"
    ended = await q.ended("c1", 1, EndFacts(Outcome.COMPLETED, duration_s=12))
    assert ended.status == CallStatus.CANCELLED
    record = await q.get("c1")
    assert record is not None and record.attempts[0].outcome == Outcome.COMPLETED  # as reported


async def test_machine_policy_counts_the_call_as_done_when_asked(make_queue: MakeQueue) -> None:
    q = make_queue(retry=RetryPolicy(base_delay_s=0.05, machine_is_done=True))
    await q.enqueue(spec("c1"))
    await claim_one(q)
    await q.event("c1", 1, CarrierEvent.MACHINE)
    done = await q.ended("c1", 1, EndFacts(Outcome.COMPLETED, duration_s=3))
    assert done.status == CallStatus.COMPLETED
    record = await q.get("c1")
    assert record is not None and record.attempts[0].outcome == Outcome.MACHINE


async def test_do_not_call_refuses_at_enqueue_and_cancels_at_claim(make_queue: MakeQueue) -> None:
    q = make_queue(rate_per_second=0)
    await q.enqueue_many([spec("before"), CallSpec("other", "+919123456780")])
    assert await q.dnc_add(["+919123456789", "+919123456789"]) == 1
    refused = await q.enqueue(spec("after"))
    assert refused.state == EnqueueState.DNC and refused.status is None
    assert await q.get("after") is None
    # Queued before the number was listed: cancelled at claim, never handed out for dialing.
    claimed = await q.claim(5)
    assert [c.call_id for c in claimed.calls] == ["other"]
    record = await q.get("before")
    assert record is not None and record.status == CallStatus.CANCELLED
    assert "do-not-call" in record.history[-1].note and record.attempts == []
    assert await q.dnc_contains(["+919123456789", "+919123456780"]) == [True, False]
    assert await q.dnc_remove(["+919123456789"]) == 1
    assert (await q.enqueue(spec("again"))).state == EnqueueState.CREATED
