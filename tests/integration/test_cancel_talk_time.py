"""A call cancelled after it was answered records the talk time it had, not 0."""

from __future__ import annotations

from pathlib import Path

from engine_support import MakeQueue, spec
from procs import wait_for

from callqueue.carriers.simulator import SimProfile, SimulatedCarrier
from callqueue.dispatcher import Dispatcher
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.queue import EndFacts
from callqueue.engine.reads import server_now_ms
from callqueue.models import CallStatus, CarrierEvent, Outcome


async def test_cancel_after_answer_records_the_talk_time(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("talked"))
    [call] = (await q.claim(1)).calls
    await q.accepted(call, "cid-1")
    answered = await server_now_ms(q)
    await q.event("talked", 1, CarrierEvent.ANSWERED, answered_ms=answered)
    assert (await q.cancel("talked")).code == "hangup"
    # The carrier's word on the hang-up we asked for: 24 s after the answer, no duration.
    ended = answered + 24_000
    facts = EndFacts(Outcome.CANCELLED, "cid-1", "ORIGINATOR_CANCEL", 0.0, 0.0, None, ended)
    assert (await q.ended("talked", 1, facts)).status == CallStatus.CANCELLED
    record = await q.get("talked")
    assert record is not None and record.status == CallStatus.CANCELLED
    [attempt] = record.attempts
    assert attempt.answered_ms == answered and attempt.ended_ms == ended
    assert attempt.duration_s == 24.0


async def test_a_duration_the_carrier_gives_is_kept(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("told"))
    assert len((await q.claim(1)).calls) == 1
    answered = await server_now_ms(q)
    await q.event("told", 1, CarrierEvent.ANSWERED, answered_ms=answered)
    facts = EndFacts(Outcome.COMPLETED, "cid-2", "NORMAL_CLEARING", 17.0, 18.0, None,
                     answered + 20_000)  # fmt: skip
    await q.ended("told", 1, facts)
    record = await q.get("told")
    assert record is not None and record.attempts[0].duration_s == 17.0
    # An attempt never answered has no talk time to work out.
    await q.enqueue(spec("unanswered", phone_number="+919123456780"))
    assert len((await q.claim(1)).calls) == 1
    await q.ended("unanswered", 1, EndFacts(Outcome.NO_ANSWER, duration_s=0.0))
    record = await q.get("unanswered")
    assert record is not None and record.attempts[0].duration_s == 0.0


async def test_the_simulator_hung_up_on_cancel_records_the_talk_time(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue()
    await q.enqueue(spec("talker"))
    writer = EventWriter(q)
    profile = SimProfile(mix={Outcome.COMPLETED: 1.0}, ring_s=(0, 0), talk_s=(60, 60), seed=1)
    carrier = SimulatedCarrier(writer, profile, tmp_path / "ledger")
    d = Dispatcher(q, carrier, writer, concurrency=2)
    await d.start()
    try:

        async def talked_a_while() -> bool:
            record = await q.get("talker")
            if record is None or record.status != CallStatus.IN_PROGRESS:
                return False
            answered = record.attempts[-1].answered_ms
            return answered is not None and await server_now_ms(q) >= answered + 500

        await wait_for(talked_a_while, 10, "the call to be answered and talk for 0.5 s")
        assert (await q.cancel("talker")).code == "hangup"

        async def cancelled() -> bool:
            record = await q.get("talker")
            return record is not None and record.status == CallStatus.CANCELLED

        await wait_for(cancelled, 10, "the hang-up to end the call as cancelled")
    finally:
        await d.stop()
    record = await q.get("talker")
    assert record is not None
    [attempt] = record.attempts
    assert attempt.outcome == Outcome.CANCELLED
    assert attempt.answered_ms is not None and attempt.ended_ms is not None
    assert attempt.duration_s is not None and attempt.duration_s >= 0.5
    assert attempt.duration_s == (attempt.ended_ms - attempt.answered_ms) / 1000
