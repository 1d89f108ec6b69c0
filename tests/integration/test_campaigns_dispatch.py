"""Campaigns under a running dispatcher, checked from the simulated carrier's ledger: their own
limits together with the global ones, turns, pause/resume/cancel, do-not-call mid-campaign."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from engine_support import MakeQueue
from procs import dials, live_intervals, max_in_window, max_overlap, wait_for

from callqueue.carriers.simulator import SimProfile, SimulatedCarrier, read_ledger
from callqueue.dispatcher import Dispatcher
from callqueue.engine.campaigns import CampaignEngine
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, CallStatus, Outcome

LONGEST_LIFE_S = 30.0


def dispatcher(
    q: CallQueue,
    ledger: Path,
    ring: tuple[float, float],
    talk: tuple[float, float],
    concurrency: int = 20,
) -> Dispatcher:
    writer = EventWriter(q)
    profile = SimProfile(mix={Outcome.COMPLETED: 1.0}, ring_s=ring, talk_s=talk, seed=11)
    return Dispatcher(q, SimulatedCarrier(writer, profile, ledger), writer, concurrency=concurrency)


def calls(campaign: str, n: int, first_number: int = 0) -> list[CallSpec]:
    return [
        CallSpec(
            call_id=f"{campaign}-{i:04d}",
            phone_number=f"+9198{first_number + i:08d}",
            campaign_id=campaign,
            max_retries=0,
        )
        for i in range(n)
    ]


def of(ledger: list[dict[str, Any]], campaign: str) -> list[dict[str, Any]]:
    return [r for r in ledger if r["call"].startswith(campaign + "-")]


def dial_times(ledger: list[dict[str, Any]]) -> list[float]:
    return [r["t"] for r in dials(ledger)]


@pytest.mark.slow
async def test_campaign_limits_hold_together_with_the_global_ones(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(max_live_calls=8, rate_per_second=20, rate_margin_ms=15)
    camps = CampaignEngine(q)
    await camps.configure("a", {"mc": "3", "rl": "5"})
    await camps.configure("c", {"mc": "2"})
    await q.enqueue_many(calls("a", 60, 0) + calls("b", 60, 1000) + calls("c", 30, 2000))
    ledger_path = tmp_path / "ledger"
    d = dispatcher(q, ledger_path, ring=(0.02, 0.05), talk=(0.1, 0.3))
    await d.start()
    try:
        await wait_for(lambda: _dialed_at_least(ledger_path, 70), 30, "70 dials")
    finally:
        await d.stop()
    ledger = read_ledger(ledger_path)
    a, b, c = of(ledger, "a"), of(ledger, "b"), of(ledger, "c")
    assert max_in_window(dial_times(ledger)) <= 20
    assert max_overlap(live_intervals(ledger, LONGEST_LIFE_S)) <= 8
    assert max_in_window(dial_times(a)) <= 5
    assert max_overlap(live_intervals(a, LONGEST_LIFE_S)) <= 3
    assert max_overlap(live_intervals(c, LONGEST_LIFE_S)) <= 2
    assert dials(a) and dials(b) and dials(c)
    # The limits are used, not just respected: b (no limits of its own) takes what a and c
    # leave of the global ones.
    assert len(dials(b)) > len(dials(a)) and len(dials(b)) > len(dials(c))


def _ledger(path: Path) -> list[dict[str, Any]]:
    return read_ledger(path) if os.path.exists(path) else []


async def _dialed_at_least(path: Path, n: int) -> bool:
    return len(dials(_ledger(path))) >= n


async def test_a_small_campaign_queued_behind_a_big_one_starts_at_once(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=20)
    await q.enqueue_many(calls("big", 2000))
    ledger_path = tmp_path / "ledger"
    d = dispatcher(q, ledger_path, ring=(0, 0), talk=(0, 0))
    await d.start()
    try:
        await wait_for(lambda: _dialed_at_least(ledger_path, 20), 20, "the big campaign to dial")
        queued_at = time.time()
        await q.enqueue_many(calls("small", 5, 5000))
        await wait_for(
            lambda: _small_done(ledger_path), 20, "the small campaign's calls to be dialed"
        )
    finally:
        await d.stop()
    ledger = read_ledger(ledger_path)
    small = dial_times(of(ledger, "small"))
    # Turns alternate at 20 dials/s: the small campaign's five calls go within ten dials.
    assert small[0] - queued_at < 1.0
    after = [t for t in dial_times(ledger) if t >= queued_at]
    assert after.index(small[-1]) < 12, "the small campaign waited behind the big one"


async def _small_done(path: Path) -> bool:
    return len(dials(of(_ledger(path), "small"))) >= 5


@pytest.mark.slow
async def test_pause_resume_cancel_while_dialing(make_queue: MakeQueue, tmp_path: Path) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=25)
    camps = CampaignEngine(q)
    await q.enqueue_many(calls("run", 300))
    ledger_path = tmp_path / "ledger"
    d = dispatcher(q, ledger_path, ring=(0.01, 0.02), talk=(0.5, 0.8))
    await d.start()
    try:
        await wait_for(lambda: _dialed_at_least(ledger_path, 10), 20, "dialing to start")
        await camps.pause("run")
        paused_at = time.time()
        await asyncio.sleep(0.6)
        during = [t for t in dial_times(read_ledger(ledger_path)) if t > paused_at + 0.05]
        assert during == [], "dialed while paused"
        dialed_before = len(dials(read_ledger(ledger_path)))
        await camps.resume("run")
        await wait_for(
            lambda: _dialed_at_least(ledger_path, dialed_before + 5), 20, "dialing to resume"
        )
        cancelled = await camps.cancel("run")
        cancelled_at = time.time()
        await asyncio.sleep(1.0)  # live calls (talk 0.5-0.8 s) finish meanwhile
    finally:
        await d.stop()
    ledger = read_ledger(ledger_path)
    assert [t for t in dial_times(ledger) if t > cancelled_at + 0.05] == []
    dialed = {r["call"] for r in dials(ledger)}
    ended = {r["call"] for r in ledger if r["ev"] == "end"}
    assert dialed <= ended  # the live ones finished
    assert cancelled + len(dialed) == 300
    statuses = {(await q.get(s.call_id)).status for s in calls("run", 300)}  # type: ignore[union-attr]
    assert statuses <= {CallStatus.COMPLETED, CallStatus.CANCELLED}


@pytest.mark.slow
async def test_a_number_listed_mid_campaign_is_never_dialed(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    q = make_queue(max_live_calls=0, rate_per_second=25)
    specs = calls("dnc", 120)
    await q.enqueue_many(specs)
    ledger_path = tmp_path / "ledger"
    d = dispatcher(q, ledger_path, ring=(0, 0), talk=(0, 0))
    await d.start()
    try:
        await wait_for(lambda: _dialed_at_least(ledger_path, 10), 20, "dialing to start")
        late = specs[60:]
        await q.dnc_add([s.phone_number for s in late])
        listed_at = time.time()
        await wait_for(lambda: _all_final(q, specs), 30, "every call to end")
    finally:
        await d.stop()
    late_ids = {s.call_id for s in late}
    for r in dials(read_ledger(ledger_path)):
        if r["call"] in late_ids:
            assert r["t"] <= listed_at + 0.05, f"{r['call']} dialed after its number was listed"
    for s in late:
        record = await q.get(s.call_id)
        assert record is not None
        assert record.status in (CallStatus.COMPLETED, CallStatus.CANCELLED)


async def _all_final(q: CallQueue, specs: list[CallSpec]) -> bool:
    for s in specs:
        record = await q.get(s.call_id)
        if record is None or not record.status.is_terminal:
            return False
    return True
