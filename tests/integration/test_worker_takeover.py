"""Ownership of attempts: what a gone worker leaves behind is taken over at once (reap.lua), and
an attempt whose end was never reported is settled by what was heard of it."""

from __future__ import annotations

from typing import Any

from engine_support import MakeQueue, own_number, spec
from procs import wait_for

from callqueue.engine.queue import CallQueue, EndFacts, ReapResult
from callqueue.models import CallStatus, ClaimedCall, Outcome, RetryPolicy

FAST_RETRY = RetryPolicy(base_delay_s=60, factor=1, max_delay_s=60, jitter=0)


async def claim_as(q: CallQueue, worker: str, n: int) -> list[ClaimedCall]:
    calls = (await q.claim(n, worker_id=worker)).calls
    assert len(calls) == n
    return calls


async def three_phases(q: CallQueue, worker: str) -> dict[str, ClaimedCall]:
    """Three attempts of ``worker``: one the carrier never answered, one accepted, one
    answered."""
    await q.enqueue_many([spec(c, phone_number=own_number(i)) for i, c in enumerate("abc")])
    calls = {c.call_id: c for c in await claim_as(q, worker, 3)}
    await q.accepted(calls["b"], "cid-b")
    await q.accepted(calls["c"], "cid-c")
    await q.event("c", calls["c"].attempt, "answered")
    return calls


async def members(q: CallQueue, key: str) -> set[str]:
    return {m.decode() for m in await q.client.smembers(key)}


async def take_over(q: CallQueue, by: str) -> ReapResult:
    """Reaps as worker ``by`` until another worker's attempts were taken over."""
    seen: list[ReapResult] = []

    async def taken() -> bool:
        seen.append(await q.reap(by))
        return bool(seen[-1].orphans_settled or seen[-1].orphans_held)

    await wait_for(taken, 5, "the gone worker's attempts to be taken over")
    return seen[-1]


async def test_claims_are_owned_and_ending_or_giving_back_disowns(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.enqueue_many([spec(c, phone_number=own_number(i)) for i, c in enumerate("xyz")])
    calls = await claim_as(q, "w1", 3)
    owned = q.keys.worker_calls("w1")
    assert await members(q, owned) == {"x", "y", "z"}
    record = await q.client.hget(q.keys.call("x"), "wk")
    assert record == b"w1"
    by_id = {c.call_id: c for c in calls}
    await q.ended("x", 1, EndFacts(Outcome.COMPLETED, duration_s=3))
    await q.release(by_id["y"], "429")
    await q.ended("z", 1, EndFacts(Outcome.BUSY))  # retried later: no longer in flight
    assert await members(q, owned) == set()


async def test_a_gone_simulator_worker_ends_its_attempts_at_once(make_queue: MakeQueue) -> None:
    # The longest life is an hour: only the takeover can free these slots in this test.
    q = make_queue(max_live_calls=3, worker_ttl_s=0.5, retry=FAST_RETRY)
    await q.reap("sim-1", calls_end_with_worker=True)  # its heartbeat, with its trait
    await three_phases(q, "sim-1")
    await q.enqueue(spec("next", phone_number=own_number(9)))
    assert (await q.claim(1, worker_id="w2")).calls == [], "the cap is full"

    result = await take_over(q, "w2")

    assert (result.orphans_settled, result.orphans_held) == (3, 0)
    outcomes = {}
    for call_id in "abc":
        record = await q.get(call_id)
        assert record is not None and record.status == CallStatus.SCHEDULED  # retry policy
        attempt = record.attempts[-1]
        outcomes[call_id] = (attempt.outcome, attempt.hangup_cause)
        assert any("worker sim-1 stopped answering" in h.note for h in record.history)
    # Nothing was heard of a: lost. b and c were heard of: their process ended them.
    assert outcomes == {
        "a": (Outcome.LOST, "WORKER_GONE"),
        "b": (Outcome.FAILED, "WORKER_GONE"),
        "c": (Outcome.FAILED, "WORKER_GONE"),
    }
    assert await q.client.zcard(q.keys.live) == 0
    assert not await q.client.exists(q.keys.worker_calls("sim-1"))
    assert await q.client.zscore(q.keys.workers, "sim-1") is None
    assert await q.client.hget(q.keys.worker_info, "sim-1") is None
    assert [c.call_id for c in (await q.claim(1, worker_id="w2")).calls] == ["next"]


async def test_late_words_of_a_taken_over_attempt_change_nothing(make_queue: MakeQueue) -> None:
    q = make_queue(worker_ttl_s=0.5, retry=FAST_RETRY)
    await q.reap("sim-1", calls_end_with_worker=True)
    calls = await three_phases(q, "sim-1")
    await take_over(q, "w2")
    before = await q.get("c")
    late = await q.ended("c", calls["c"].attempt, EndFacts(Outcome.COMPLETED, duration_s=9))
    assert late.code == "dup" and not late.applied
    assert (await q.accepted(calls["a"], "late")).code == "dup"
    after = await q.get("c")
    assert before is not None and after is not None
    assert after.status == before.status == CallStatus.SCHEDULED
    assert after.attempts[-1].outcome == Outcome.FAILED


async def test_a_gone_real_carrier_worker_leaves_its_calls_to_their_callbacks(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(max_live_calls=3, worker_ttl_s=0.5, retry=FAST_RETRY)
    await q.reap("plivo-1")  # a real carrier: its calls go on without it
    calls = await three_phases(q, "plivo-1")

    result = await take_over(q, "w2")

    assert (result.orphans_settled, result.orphans_held) == (0, 3)
    notes = {}
    for call_id in "abc":
        record = await q.get(call_id)
        assert record is not None and record.status in (CallStatus.DIALING, CallStatus.RINGING,
                                                        CallStatus.IN_PROGRESS)  # fmt: skip
        notes[call_id] = record.history[-1].note
    assert "slot is held until a callback" in notes["a"]
    assert "callbacks settle it" in notes["b"] and "callbacks settle it" in notes["c"]
    assert await q.client.zcard(q.keys.live) == 3, "slots held: the calls may be live"
    assert await q.client.zscore(q.keys.workers, "plivo-1") is None
    # The carrier's callbacks still settle them, though their worker is gone.
    done = await q.ended("c", calls["c"].attempt, EndFacts(Outcome.COMPLETED, duration_s=4))
    assert done.applied and done.status == CallStatus.COMPLETED
    assert await q.client.zcard(q.keys.live) == 2


async def test_a_stopping_worker_hands_over_its_own_attempts(make_queue: MakeQueue) -> None:
    q = make_queue(retry=FAST_RETRY)
    await q.reap("sim-1", calls_end_with_worker=True)
    await three_phases(q, "sim-1")
    result = await q.reap("sim-1", leaving=True, calls_end_with_worker=True)
    assert result.orphans_settled == 3
    assert await q.client.zcard(q.keys.live) == 0
    assert await q.client.zscore(q.keys.workers, "sim-1") is None


async def test_an_alive_worker_keeps_its_attempts(make_queue: MakeQueue) -> None:
    q = make_queue(worker_ttl_s=60, retry=FAST_RETRY)
    await q.reap("sim-1", calls_end_with_worker=True)
    await three_phases(q, "sim-1")
    result = await q.reap("w2")
    assert (result.orphans_settled, result.orphans_held) == (0, 0)
    assert await q.client.zcard(q.keys.live) == 3
    assert result.next_expiry_ms is not None  # wakes when sim-1's heartbeat would lapse
    assert result.next_expiry_ms - result.server_now_ms <= 60_000


async def test_an_unreported_end_is_settled_by_what_was_heard(make_queue: MakeQueue) -> None:
    """Past its longest life an attempt is surely over. Only one nothing was heard of is
    `lost` (retried); one that was answered is never redialed on a guess."""
    q = make_queue(
        dial_lease_s=0.05, ring_timeout_s=1, default_max_duration_s=1, grace_s=0, retry=FAST_RETRY
    )
    await three_phases(q, "")
    expected = {
        "a": (Outcome.LOST, None, CallStatus.SCHEDULED),
        "b": (Outcome.FAILED, "END_NOT_REPORTED", CallStatus.SCHEDULED),
        "c": (Outcome.COMPLETED, "END_NOT_REPORTED", CallStatus.COMPLETED),
    }
    found: dict[str, Any] = {}

    async def all_settled() -> bool:
        await q.reap()
        for call_id in "abc":
            record = await q.get(call_id)
            assert record is not None
            if record.attempts and record.attempts[-1].outcome is not None:
                last = record.attempts[-1]
                found[call_id] = (last.outcome, last.hangup_cause or None, record.status)
        return len(found) == 3

    await wait_for(all_settled, 10, "the attempts to outlive their longest life")
    assert found == expected
