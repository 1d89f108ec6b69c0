"""A campaign's new calling window (or window time zone) applies to the calls its old one had
parked: those the new window lets through are due at once, the others at its next opening;
calls scheduled for another reason keep their time. The recheck runs in bounded slices that
anyone may repeat or resume (recheck.lua, CampaignEngine.recheck_parked)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engine_support import MakeQueue
from procs import wait_for

from callqueue.carriers.simulator import SimProfile, SimulatedCarrier
from callqueue.dispatcher import Dispatcher
from callqueue.engine.campaigns import CampaignEngine, CampaignRetry, Recheck
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.models import CallSpec, CallStatus, Outcome, RetryPolicy
from callqueue.windows import CallingWindow

NO_LIMITS = {"max_live_calls": 0, "rate_per_second": 0}
HOUR_MS = 3_600_000
#: Wednesday 2026-12-09 20:00 UTC, the clock the claims and rechecks below are run at.
T0 = int(datetime(2026, 12, 9, 20, 0, tzinfo=UTC).timestamp() * 1000)
KOLKATA = ("Asia/Kolkata",)


def win(text: str) -> str:
    return CallingWindow.parse(text).encode()


def opening(text: str, zones: tuple[str, ...], at_ms: int) -> int:
    """The window's next opening at or after ``at_ms`` by windows.py (the Python twin)."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    nxt = CallingWindow.parse(text).next_open(list(zones), at)
    assert nxt is not None
    return int(nxt.timestamp() * 1000)


def call(call_id: str, zones: tuple[str, ...] = ("UTC",), **kw: object) -> CallSpec:
    return CallSpec(call_id=call_id, phone_number="+919876500001", campaign_id="w",
                    time_zones=zones, **kw)  # type: ignore[arg-type]  # fmt: skip


async def parked(q: CallQueue, specs: list[CallSpec], window: str = "daily 09:00-17:00",
                 **settings: str) -> CampaignEngine:  # fmt: skip
    """Campaign ``w`` with ``window`` (UTC for numbers of no zone), ``specs`` queued into it and
    claimed at T0 (20:00 UTC: closed), so the window parks them."""
    camps = CampaignEngine(q)
    await camps.configure("w", {"win": win(window), "wtz": "UTC", **settings})
    await q.register_zones(["UTC", *KOLKATA], now_ms=T0)
    await q.enqueue_many(specs)
    for _ in range(10):
        if not await q.client.zcard(q.keys.campaign_ready("w")):
            break
        assert (await q.claim(len(specs), at_ms=T0)).calls == []
    assert not await q.client.zcard(q.keys.campaign_ready("w"))
    return camps


async def due_times(q: CallQueue, ids: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for record in await q.records(ids):
        out[record.call_id] = record.next_attempt_ms if record.status == CallStatus.SCHEDULED \
            else None  # fmt: skip
    return out


async def test_a_window_open_now_queues_the_calls_it_parked(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    ids = ["p0", "p1", "p2"]
    camps = await parked(q, [*(call(i) for i in ids), call("kolkata", KOLKATA)])
    first = opening("daily 09:00-17:00", ("UTC",), T0)
    assert await due_times(q, ids) == dict.fromkeys(ids, first)
    # 18:00-23:00 in the callee's local time: open now in UTC (20:00), not in Kolkata (01:30).
    await camps.configure("w", {"win": win("daily 18:00-23:00")}, recheck_budget_s=0)
    assert await due_times(q, ids) == dict.fromkeys(ids, first)  # nothing moved yet
    result = await camps.recheck_parked("w", at_ms=T0)
    assert result == Recheck(due_now=3, moved=1, runs=1, done=True)
    taken = [c.call_id for c in (await q.claim(10, at_ms=T0)).calls]
    assert taken == ids  # claimable now, in their old order
    record = await q.get("kolkata")
    assert record is not None and record.status == CallStatus.SCHEDULED
    assert record.next_attempt_ms == opening("daily 18:00-23:00", KOLKATA, T0)
    assert record.history[-1].note == "the calling window changed: due when it opens"


async def test_a_window_closed_now_moves_them_to_its_opening(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    ids = [f"p{i}" for i in range(4)]
    camps = await parked(q, [call(i) for i in ids])
    for window in ("daily 06:00-08:00", "daily 12:00-13:00"):  # earlier, then later
        await camps.configure("w", {"win": win(window)}, recheck_budget_s=0)
        result = await camps.recheck_parked("w", at_ms=T0)
        assert (result.due_now, result.moved, result.done) == (0, 4, True)
        assert await due_times(q, ids) == dict.fromkeys(ids, opening(window, ("UTC",), T0))
    assert (await q.claim(10, at_ms=T0)).calls == []
    new_open = opening("daily 12:00-13:00", ("UTC",), T0)
    assert (await q.claim(10, at_ms=new_open - 1)).calls == []
    assert [c.call_id for c in (await q.claim(10, at_ms=new_open)).calls] == ids


async def test_calls_scheduled_for_their_own_time_keep_it(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    later = T0 + HOUR_MS  # after T0, so never yet seen by a claim: never parked
    earlier = T0 - 600_000  # due by T0: the claim promotes it and the window parks it
    camps = await parked(q, [call("later", scheduled_at_ms=later),
                             call("earlier", scheduled_at_ms=earlier), call("plain")])  # fmt: skip
    before = await due_times(q, ["later", "earlier", "plain"])
    assert before["later"] == later
    assert before["earlier"] == before["plain"] == opening("daily 09:00-17:00", ("UTC",), T0)
    await camps.configure("w", {"win": win("daily 00:00-23:59")}, recheck_budget_s=0)
    assert (await camps.recheck_parked("w", at_ms=T0)).due_now == 2
    assert await due_times(q, ["later", "earlier", "plain"]) == {
        "later": later, "earlier": None, "plain": None}  # fmt: skip
    assert sorted(c.call_id for c in (await q.claim(10, at_ms=T0)).calls) == ["earlier", "plain"]


async def test_a_retry_moved_into_the_window_keeps_its_delay(make_queue: MakeQueue) -> None:
    # Real clock: attempts end at the server's time. No jitter: the retry's own time is exact.
    q = make_queue(retry=RetryPolicy(jitter=0), **NO_LIMITS)
    camps = CampaignEngine(q)
    hour = datetime.now(UTC).hour
    old = f"daily {(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    policy = CampaignRetry(retry_on=frozenset({Outcome.BUSY}), max_retries=2, delay_s=1800,
                           backoff="linear")  # fmt: skip
    await camps.configure("w", {"win": win(old), "wtz": "UTC", "rp": policy.encode()})
    await q.register_zones(["UTC"])
    await q.enqueue(call("r"))
    inside = opening(old, ("UTC",), int(datetime.now(UTC).timestamp() * 1000)) + 60_000
    (c,) = (await q.claim(1, at_ms=inside)).calls
    assert (await q.ended(c.call_id, 1, EndFacts(Outcome.BUSY))).status == CallStatus.SCHEDULED
    record = await q.get("r")
    assert record is not None and record.next_attempt_ms is not None
    own_time = record.history[-1].at_ms + 1_800_000  # the retry delay
    assert record.next_attempt_ms > own_time  # parked until the old window opens
    # Open from an hour ago for four hours: open now, and when the delay is over.
    new = f"daily {(hour - 1) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    await camps.configure("w", {"win": win(new)})  # the engine runs the recheck itself
    record = await q.get("r")
    assert record is not None and record.status == CallStatus.SCHEDULED
    assert record.next_attempt_ms == own_time


async def test_removing_the_window_queues_every_parked_call(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = await parked(q, [call("utc"), call("kolkata", KOLKATA), call("no-zone", ())])
    await camps.configure("w", {"win": ""}, recheck_budget_s=0)
    assert (await camps.recheck_parked("w", at_ms=T0)).due_now == 3
    assert sorted(c.call_id for c in (await q.claim(10, at_ms=T0)).calls) == [
        "kolkata", "no-zone", "utc"]  # fmt: skip


async def test_thousands_of_parked_calls_are_rechecked_in_slices(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    ids = [f"p{i:05d}" for i in range(5000)]
    camps = await parked(q, [call(i) for i in ids])
    window = "daily 06:00-08:00"
    await camps.configure("w", {"win": win(window)}, recheck_budget_s=0)
    # Three slices by this process, which then "dies"; a worker's loop finishes the rest.
    for _ in range(3):
        result = await camps.recheck_parked("w", budget_s=0, slice_size=500, at_ms=T0)
        assert (result.moved, result.runs, result.done) == (500, 1, False)
    rest = await camps.recheck_parked(slice_size=500, at_ms=T0)  # any campaign's recheck
    assert (rest.moved, rest.runs, rest.done) == (3500, 7, True)  # 500 a run
    assert set((await due_times(q, ids)).values()) == {opening(window, ("UTC",), T0)}
    assert not await q.client.hlen(q.keys.window_rechecks)
    # Then a window open now: all 5,000 due, in slices.
    await camps.configure("w", {"win": win("daily 19:00-21:00")}, recheck_budget_s=0)
    result = await camps.recheck_parked("w", slice_size=1000, at_ms=T0)
    assert result == Recheck(due_now=5000, moved=0, runs=5, done=True)
    assert await q.client.zcard(q.keys.campaign_ready("w")) == 5000
    assert not await q.client.exists(q.keys.campaign_window_parked("w"))


async def test_a_recheck_run_twice_changes_nothing_more(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    ids = [f"p{i}" for i in range(20)]
    camps = await parked(q, [call(i) for i in ids[:10]] + [call(i, KOLKATA) for i in ids[10:]])
    await camps.configure("w", {"win": win("daily 21:00-22:00")}, recheck_budget_s=0)
    assert (await camps.recheck_parked("w", at_ms=T0)).moved == 20

    async def state() -> list[object]:
        return [await q.client.hgetall(q.keys.call(i)) for i in ids] + [
            await q.client.zrange(q.keys.scheduled, 0, -1, withscores=True),
            await q.client.zrange(q.keys.campaign_window_parked("w"), 0, -1, withscores=True),
        ]

    before = await state()
    # Another sweep over the same calls: the window's zone changes to one with the same offsets
    # (each call has its own zone, so no answer changes), and later in time, before any opening.
    await camps.configure("w", {"wtz": "Etc/UTC"}, recheck_budget_s=0)
    again = await camps.recheck_parked("w", at_ms=T0 + 30 * 60_000)
    assert (again.due_now, again.moved, again.done) == (0, 0, True)
    assert await state() == before
    assert await camps.recheck_parked("w", at_ms=T0) == Recheck(0, 0, 1, True)  # nothing under way


async def test_a_change_during_a_recheck_sweeps_again(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    ids = [f"p{i:03d}" for i in range(30)]
    camps = await parked(q, [call(i) for i in ids])
    await camps.configure("w", {"win": win("daily 06:00-08:00")}, recheck_budget_s=0)
    first = await camps.recheck_parked("w", budget_s=0, slice_size=10, at_ms=T0)
    assert (first.moved, first.done) == (10, False)
    await camps.configure("w", {"win": win("daily 12:00-13:00")}, recheck_budget_s=0)
    await camps.recheck_parked("w", slice_size=10, at_ms=T0)
    assert set((await due_times(q, ids)).values()) == {opening("daily 12:00-13:00", ("UTC",), T0)}


async def test_cancelling_the_campaign_drops_its_recheck(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = await parked(q, [call(f"p{i}") for i in range(5)])
    await camps.configure("w", {"win": win("daily 06:00-08:00")}, recheck_budget_s=0)
    assert await q.client.hexists(q.keys.window_rechecks, "w")
    assert await camps.cancel("w") == 5
    assert not await q.client.hexists(q.keys.window_rechecks, "w")
    assert not await q.client.exists(q.keys.campaign_window_parked("w"),
                                     q.keys.campaign_window_recheck("w"))  # fmt: skip
    assert await camps.recheck_parked(at_ms=T0) == Recheck(0, 0, 1, True)


async def test_a_worker_finishes_a_recheck_its_request_left(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    # Real clock: the worker claims at the server's time.
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    hour = datetime.now(UTC).hour
    closed = f"daily {(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    open_now = f"daily {(hour - 1) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    await camps.configure("w", {"win": win(closed), "wtz": "UTC"})
    await q.register_zones(["UTC"])
    ids = [f"p{i}" for i in range(20)]
    await q.enqueue_many([call(i) for i in ids])
    assert (await q.claim(20)).calls == []  # parked for hours
    # The window opens now, but the request that changed it ends (dies) before any recheck.
    await camps.configure("w", {"win": win(open_now)}, recheck_budget_s=0)
    assert await q.client.hexists(q.keys.window_rechecks, "w")
    writer = EventWriter(q)
    profile = SimProfile(ring_s=(0, 0.01), talk_s=(0, 0.02), seed=7,
                         mix={Outcome.COMPLETED: 1.0})  # fmt: skip
    worker = Dispatcher(q, SimulatedCarrier(writer, profile, tmp_path / "ledger"), writer)
    await worker.start()
    try:

        async def all_done() -> bool:
            return int(await q.client.zcard(q.keys.finished)) == len(ids)

        await wait_for(all_done, 30, "the parked calls to be dialed and finish")
    finally:
        await worker.stop()
    assert not await q.client.hexists(q.keys.window_rechecks, "w")
    assert {r.status for r in await q.records(ids)} == {CallStatus.COMPLETED}
