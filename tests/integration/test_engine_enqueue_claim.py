"""Enqueue and claim: priorities, FIFO, idempotency, scheduling, pause, limits."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from engine_support import MakeQueue, own_number, spec

from callqueue.engine.codec import text
from callqueue.engine.reads import queued_total
from callqueue.models import (
    CallSpec,
    CallStatus,
    ClaimBlock,
    EnqueueResult,
    EnqueueState,
    Priority,
)


async def test_priority_order_then_fifo(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=0)
    order = [
        ("l1", Priority.LOW),
        ("n1", Priority.NORMAL),
        ("u1", Priority.URGENT),
        ("h1", Priority.HIGH),
        ("n2", Priority.NORMAL),
        ("u2", Priority.URGENT),
        ("l2", Priority.LOW),
        ("h2", Priority.HIGH),
    ]
    await q.enqueue_many([spec(i, p) for i, p in order[:4]])
    for i, p in order[4:]:
        await q.enqueue(spec(i, p))
    claimed = []
    for _ in range(8):
        result = await q.claim(1)
        claimed += [c.call_id for c in result.calls]
    assert claimed == ["u1", "u2", "h1", "h2", "n1", "n2", "l1", "l2"]
    assert (await q.claim(5)).blocked == ClaimBlock.EMPTY


async def test_bulk_enqueue_keeps_input_order_across_its_scripts(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=0)
    # Many small scripts in flight at once, on several connections: whichever the server runs
    # first, the calls come out in input order; a single enqueue meanwhile goes after them.
    ids = [f"c{i:03d}" for i in range(300)]
    await q.enqueue_many([spec(i) for i in ids], batch_size=7)
    await q.enqueue(spec("later"))
    claimed: list[str] = []
    while len(claimed) < 301:
        claimed += [c.call_id for c in (await q.claim(50)).calls]
    assert claimed == [*ids, "later"]


async def test_enqueue_is_idempotent_on_call_id(make_queue: MakeQueue) -> None:
    q = make_queue()
    first = await q.enqueue(spec("same", body_hash="h1"))
    again = await q.enqueue(spec("same", body_hash="h1"))
    other = await q.enqueue(spec("same", body_hash="h2"))
    assert first.state == EnqueueState.CREATED
    assert again.state == EnqueueState.EXISTS and again.status == CallStatus.QUEUED
    assert other.state == EnqueueState.CONFLICT
    bulk = await q.enqueue_many([spec("same", body_hash="h1"), spec("b1"), spec("b1")])
    assert [r.state for r in bulk] == [
        EnqueueState.EXISTS,
        EnqueueState.CREATED,
        EnqueueState.EXISTS,
    ]
    assert await queued_total(q) == 2
    assert int(text(await q.client.hget(q.keys.stats, "enqueued"))) == 2


async def test_bulk_enqueue_spans_batches_and_tracks_the_batch(make_queue: MakeQueue) -> None:
    q = make_queue()
    results = await q.enqueue_many(
        [spec(f"c{i}") for i in range(2500)], batch_id="b-1", batch_size=1000
    )
    assert [r.call_id for r in results] == [f"c{i}" for i in range(2500)]
    assert await q.client.scard(q.keys.batch("b-1")) == 2500
    ttl_days = await q.client.pttl(q.keys.batch("b-1")) / 86_400_000
    assert 36 < ttl_days <= 37  # retention (7 days) + 30: the index never outlives its use
    assert await queued_total(q) == 2500


async def test_scheduled_call_waits_until_due(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=0)
    due = int(time.time() * 1000) + 400
    result = await q.enqueue(spec("later", scheduled_at_ms=due))
    assert result.status == CallStatus.SCHEDULED
    early = await q.claim(1)
    assert early.calls == [] and early.blocked == ClaimBlock.EMPTY
    assert early.next_due_ms == due
    await asyncio.sleep(max(0, (due - early.server_now_ms) / 1000) + 0.01)
    late = await q.claim(1)
    assert [c.call_id for c in late.calls] == ["later"]
    assert late.calls[0].granted_at_ms >= due
    record = await q.get("later")
    assert record is not None
    assert [h.status for h in record.history] == [
        CallStatus.SCHEDULED,
        CallStatus.QUEUED,
        CallStatus.DIALING,
    ]


async def test_past_scheduled_at_is_queued_at_once(make_queue: MakeQueue) -> None:
    q = make_queue()
    result = await q.enqueue(spec("past", scheduled_at_ms=int(time.time() * 1000) - 60_000))
    assert result.status == CallStatus.QUEUED


async def test_pause_stops_claims_and_resume_restores_them(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.enqueue(spec("p1"))
    await q.set_paused(True)
    assert await q.is_paused()
    assert (await q.claim(1)).blocked == ClaimBlock.PAUSED
    await q.set_paused(False)
    assert [c.call_id for c in (await q.claim(1)).calls] == ["p1"]


async def test_live_call_cap_is_global_and_says_what_blocks(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=3, rate_per_second=0)
    await q.enqueue_many([spec(f"c{i}") for i in range(10)])
    first = await q.claim(10)
    assert len(first.calls) == 3 and first.blocked == ClaimBlock.CONCURRENCY
    blocked = await q.claim(10)
    assert blocked.calls == [] and blocked.blocked == ClaimBlock.CONCURRENCY
    assert blocked.wait_ms is not None and blocked.wait_ms > 0  # the earliest slot expiry
    assert await q.client.zcard(q.keys.live) == 3


@pytest.mark.slow
async def test_rate_limiter_never_exceeds_limit_in_any_sliding_window(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=5, rate_margin_ms=0)
    await q.enqueue_many([spec(f"c{i}") for i in range(40)])
    grants: list[int] = []
    deadline = time.monotonic() + 2.6
    while time.monotonic() < deadline:
        result = await q.claim(3)
        grants += [c.granted_at_ms for c in result.calls]
        if result.blocked == ClaimBlock.RATE and not result.calls:
            assert result.wait_ms is not None and 0 < result.wait_ms <= 1000
            await asyncio.sleep(result.wait_ms / 1000)
    grants.sort()
    for i in range(len(grants) - 5):
        assert grants[i + 5] - grants[i] >= 1000, "6 grants inside one second"
    # Used to the full, at the limit's pace: one grant every 200 ms (the limit paces grants
    # rather than giving a second's worth at once and then nothing for a second), so 2.6 s
    # hold 13 or 14 of them.
    assert len(grants) >= 13
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= 190 and sorted(gaps)[len(gaps) // 2] <= 260, gaps


async def test_fractional_rate_means_a_longer_window(make_queue: MakeQueue) -> None:
    q = make_queue(rate_per_second=0.5, rate_margin_ms=0)
    await q.enqueue_many([spec("a"), spec("b")])
    first = await q.claim(2)
    assert len(first.calls) == 1
    second = await q.claim(2)
    assert second.blocked == ClaimBlock.RATE and second.wait_ms is not None
    assert 1900 <= second.wait_ms <= 2000


async def test_concurrent_single_enqueues_answer_as_if_each_ran_alone(
    make_queue: MakeQueue,
) -> None:
    # Many callers at once share scripts (engine/grouping.py); each still gets its own row's
    # answer: replays, conflicts, do-not-call, scheduled and batch calls included.
    q = make_queue(max_live_calls=0, rate_per_second=0)
    await q.dnc_add(["+919800000013"])
    later = int(time.time() * 1000) + 3_600_000
    specs = []
    for i in range(120):
        kw: dict[str, Any] = {"phone_number": own_number(i)}
        if i % 10 == 3:
            kw["phone_number"] = "+919800000013"
        if i % 10 == 5:
            kw["scheduled_at_ms"] = later
        if i % 10 == 7:
            kw["batch_id"] = "grouped"
        specs.append(spec(f"g{i:03d}", body_hash="h", **kw))
    specs += [spec("g001", body_hash="h", phone_number=own_number(1))]  # a replay
    specs += [spec("g002", body_hash="other", phone_number=own_number(2))]  # a conflict
    sent = 0
    send = q._enqueue_batch

    async def counting(group: Sequence[Any]) -> list[EnqueueResult]:
        nonlocal sent
        sent += 1
        return await send(group)

    q._singles._send = counting
    results = await asyncio.gather(*(q.enqueue(s) for s in specs))
    assert sent < len(specs)  # they did share scripts
    assert [r.call_id for r in results] == [s.call_id for s in specs]
    for s, r in zip(specs[:120], results[:120], strict=True):
        i = int(s.call_id[1:])
        if i % 10 == 3:
            assert r.state == EnqueueState.DNC, s.call_id
        elif i % 10 == 5:
            assert (r.state, r.status) == (EnqueueState.CREATED, CallStatus.SCHEDULED), s.call_id
        else:
            assert (r.state, r.status) == (EnqueueState.CREATED, CallStatus.QUEUED), s.call_id
    # The replay and the conflict may have shared a script with the first g001 / g002: either
    # way they meet the call already there.
    assert (results[120].state, results[121].state) == (EnqueueState.EXISTS, EnqueueState.CONFLICT)
    assert await queued_total(q) == 120 - 12 - 12
    batch = await q.client.smembers(q.keys.batch("grouped"))
    assert sorted(text(b) for b in batch) == [f"g{i:03d}" for i in range(7, 120, 10)]


async def test_a_malformed_call_fails_alone_among_concurrent_ones(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=0)
    bad = CallSpec("bad", own_number(0), config={"max_duration": "half an hour"})
    good = [spec(f"ok{i}", phone_number=own_number(i + 1)) for i in range(20)]
    results = await asyncio.gather(
        *(q.enqueue(s) for s in [*good[:10], bad, *good[10:]]), return_exceptions=True
    )
    assert isinstance(results[10], ValueError)
    others = [r for i, r in enumerate(results) if i != 10]
    assert all(isinstance(r, EnqueueResult) and r.state == EnqueueState.CREATED for r in others)
    assert await queued_total(q) == 20


async def test_concurrent_single_enqueues_keep_their_order(make_queue: MakeQueue) -> None:
    # Grouped or not, the calls of concurrent callers are queued in the order they were asked
    # for (one connection: scripts run in the order they were sent).
    q = make_queue(max_live_calls=0, rate_per_second=0)
    ids = [f"o{i:03d}" for i in range(150)]
    await asyncio.gather(
        *(q.enqueue(spec(i, phone_number=own_number(n))) for n, i in enumerate(ids))
    )
    claimed: list[str] = []
    while len(claimed) < len(ids):
        claimed += [c.call_id for c in (await q.claim(50)).calls]
    assert claimed == ids
