"""The dispatcher in-process with the simulated carrier: outcomes, carrier faults, cancel of a
live call, graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from engine_support import MakeQueue, spec
from procs import attempts_by_call, wait_for

from callqueue.carriers.simulator import SimProfile, SimulatedCarrier, read_ledger
from callqueue.dispatcher import Dispatcher
from callqueue.engine.codec import text
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import queued_total
from callqueue.models import CallStatus, Outcome, RetryPolicy

FAST = RetryPolicy(base_delay_s=0.02, max_delay_s=0.05)


def make(q: CallQueue, ledger: Path, concurrency: int = 10, **profile: object) -> Dispatcher:
    writer = EventWriter(q)
    defaults: dict[str, object] = {"ring_s": (0, 0.01), "talk_s": (0, 0.02), "seed": 7}
    carrier = SimulatedCarrier(writer, SimProfile(**{**defaults, **profile}), ledger)  # type: ignore[arg-type]
    return Dispatcher(q, carrier, writer, concurrency=concurrency)


async def statuses(q: CallQueue, ids: list[str]) -> Counter[CallStatus]:
    counts: Counter[CallStatus] = Counter()
    for call_id in ids:
        record = await q.get(call_id)
        assert record is not None
        counts[record.status] += 1
    return counts


async def finished(q: CallQueue, n: int) -> bool:
    return int(await q.client.zcard(q.keys.finished)) >= n


async def test_every_call_reaches_a_terminal_status(make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue(max_live_calls=5, rate_per_second=0, retry=FAST)
    ids = [f"c{i}" for i in range(120)]
    await q.enqueue_many([spec(i, max_retries=2) for i in ids])
    d = make(q, tmp_path / "ledger")
    await d.start()
    try:
        await wait_for(lambda: finished(q, len(ids)), 30, "all calls to finish")
    finally:
        await d.stop()
    counts = await statuses(q, ids)
    assert counts[CallStatus.COMPLETED] > 60 and sum(counts.values()) == len(ids)
    assert set(counts) <= {CallStatus.COMPLETED, CallStatus.FAILED}
    for call_id, attempts in attempts_by_call(read_ledger(tmp_path / "ledger")).items():
        record = await q.get(call_id)
        assert record is not None and len(record.attempts) == len(attempts)
        assert all(len(a["dials"]) == 1 for a in attempts.values())


@pytest.mark.slow
async def test_refusals_use_no_attempt_and_rejections_are_final(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=0, retry=FAST)
    ids = [f"c{i}" for i in range(40)]
    await q.enqueue_many([spec(i, max_retries=0) for i in ids])
    # A refused call comes back after retry_after (1 s in the simulator).
    d = make(
        q,
        tmp_path / "ledger",
        refuse_rate=0.4,
        reject_rate=0.2,
        seed=3,
        mix={Outcome.COMPLETED: 1.0},
    )
    await d.start()
    try:
        await wait_for(lambda: finished(q, len(ids)), 30, "all calls to finish")
    finally:
        await d.stop()
    stats = {text(k): int(float(v)) for k, v in (await q.client.hgetall(q.keys.stats)).items()}
    assert stats.get("released", 0) > 0
    counts = await statuses(q, ids)
    assert counts[CallStatus.FAILED] == stats.get("o:rejected", 0) > 0
    assert counts[CallStatus.COMPLETED] == len(ids) - counts[CallStatus.FAILED]
    for call_id in ids:  # max_retries=0 and yet refusals never cost the only attempt
        record = await q.get(call_id)
        assert record is not None and len(record.attempts) == 1


async def test_cancel_hangs_up_a_live_call(make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue(retry=FAST)
    await q.enqueue(spec("talker"))
    d = make(q, tmp_path / "ledger", ring_s=(0, 0), talk_s=(30, 30), mix={Outcome.COMPLETED: 1.0})
    await d.start()
    try:

        async def talking() -> bool:
            record = await q.get("talker")
            return record is not None and record.status == CallStatus.IN_PROGRESS

        await wait_for(talking, 10, "the call to be answered")
        assert (await q.cancel("talker")).code == "hangup"

        async def cancelled() -> bool:
            record = await q.get("talker")
            return record is not None and record.status == CallStatus.CANCELLED

        await wait_for(cancelled, 10, "the hang-up to end the call")
    finally:
        await d.stop()
    record = await q.get("talker")
    assert record is not None and record.attempts[-1].outcome == Outcome.CANCELLED


async def test_ambiguous_dial_holds_the_slot_until_the_carrier_reports(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(max_live_calls=1, retry=FAST)
    await q.enqueue_many([spec("a"), spec("b")])
    d = make(
        q,
        tmp_path / "ledger",
        ambiguous_rate=1.0,
        ring_s=(0, 0),
        talk_s=(0.3, 0.3),
        mix={Outcome.COMPLETED: 1.0},
    )
    await d.start()
    try:
        await wait_for(lambda: finished(q, 2), 10, "both calls to finish")
    finally:
        await d.stop()
    runs = attempts_by_call(read_ledger(tmp_path / "ledger"))
    a_end, b_dial = runs["a"][1]["end"], runs["b"][1]["dials"][0]
    assert b_dial >= a_end, "the second call waited for the first one's slot"
    for call_id in ("a", "b"):
        record = await q.get(call_id)
        assert record is not None and record.status == CallStatus.COMPLETED
        assert len(record.attempts) == 1


async def test_graceful_stop_finishes_dials_in_flight(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(retry=FAST)
    await q.enqueue_many([spec(f"c{i}") for i in range(50)])
    d = make(
        q,
        tmp_path / "ledger",
        concurrency=10,
        dial_latency_s=0.3,
        ring_s=(0, 0),
        talk_s=(0, 0),
        mix={Outcome.COMPLETED: 1.0},
    )
    await d.start()

    async def dialing() -> bool:
        return int(await q.client.zcard(q.keys.leases)) > 0

    await wait_for(dialing, 5, "dials in flight")
    started = time.monotonic()
    await d.stop(timeout_s=8)
    assert time.monotonic() - started < 10
    leases = await q.client.zcard(q.keys.leases)
    assert leases == 0, "every dial in flight was answered and recorded before exit"
    remaining = await queued_total(q)
    counts = await statuses(q, [f"c{i}" for i in range(50)])
    assert counts[CallStatus.QUEUED] == remaining  # untouched calls simply wait
    assert counts[CallStatus.COMPLETED] + remaining == 50
    await asyncio.sleep(0)


async def test_a_stopped_worker_no_longer_counts_as_alive(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue()
    d = make(q, tmp_path / "ledger")
    await d.start()

    async def beating() -> bool:
        return await q.client.zscore(q.keys.workers, d.worker_id) is not None

    await wait_for(beating, 5, "the worker's first heartbeat")
    await d.stop()
    assert await q.client.zscore(q.keys.workers, d.worker_id) is None
