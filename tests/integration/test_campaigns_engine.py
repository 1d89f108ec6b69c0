"""Campaigns in the engine: turns within a priority, their own limits together with the global
ones, pause/resume/cancel, completion, retry policy, calling windows at claim time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from engine_support import MakeQueue
from procs import wait_for

from callqueue.engine.campaigns import CampaignEngine, CampaignNotFound, CampaignRetry
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.engine.reads import campaign_ids, campaign_states, queued_total
from callqueue.models import CallSpec, CallStatus, ClaimBlock, Outcome, Priority
from callqueue.windows import CallingWindow

NO_LIMITS = {"max_live_calls": 0, "rate_per_second": 0}


def call(call_id: str, campaign: str | None, priority: Priority = Priority.NORMAL,
         **kw: object) -> CallSpec:  # fmt: skip
    number = kw.pop("phone_number", "+919876500001")
    return CallSpec(call_id=call_id, phone_number=str(number), campaign_id=campaign,
                    priority=priority, **kw)  # type: ignore[arg-type]  # fmt: skip


async def claim_ids(q: CallQueue, want: int) -> list[str]:
    return [c.call_id for c in (await q.claim(want)).calls]


async def finish(q: CallQueue, call_id: str, outcome: Outcome = Outcome.COMPLETED) -> None:
    await q.ended(call_id, 1, EndFacts(outcome, duration_s=5))


async def test_campaigns_take_turns_and_a_late_small_one_starts_at_once(
    make_queue: MakeQueue,
) -> None:
    q = make_queue(**NO_LIMITS)
    await q.enqueue_many([call(f"big-{i:03d}", "big") for i in range(200)])
    first = await claim_ids(q, 10)
    assert first == [f"big-{i:03d}" for i in range(10)]  # alone: FIFO
    await q.enqueue_many([call(f"small-{i}", "small") for i in range(3)])
    nxt = await claim_ids(q, 6)
    # The small campaign joins at the current turn: its calls alternate with the big one's.
    assert sorted(nxt) == sorted(["small-0", "small-1", "small-2", "big-010", "big-011", "big-012"])
    assert [i for i in nxt if i.startswith("small")] == ["small-0", "small-1", "small-2"]
    assert await claim_ids(q, 3) == ["big-013", "big-014", "big-015"]


async def test_priorities_come_before_turns(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    await q.enqueue_many([call(f"a{i}", "a") for i in range(5)])
    await q.enqueue_many([call("b-urgent", "b", Priority.URGENT), call("b-low", "b", Priority.LOW)])
    await q.enqueue(call("none-high", None, Priority.HIGH))
    order = await claim_ids(q, 10)
    assert order[:2] == ["b-urgent", "none-high"]
    assert order[2:7] == [f"a{i}" for i in range(5)]
    assert order[7:] == ["b-low"]


async def test_weights_share_turns(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    await camps.configure("heavy", {"w": "3"})
    await q.enqueue_many([call(f"h{i:02d}", "heavy") for i in range(40)])
    await q.enqueue_many([call(f"l{i:02d}", "light") for i in range(40)])
    taken = await claim_ids(q, 40)
    heavy = sum(1 for i in taken if i.startswith("h"))
    assert 28 <= heavy <= 32, taken  # 3 : 1


async def test_campaign_cap_and_rate_hold_with_the_global_ones(make_queue: MakeQueue) -> None:
    q = make_queue(max_live_calls=5, rate_per_second=0)
    camps = CampaignEngine(q)
    await camps.configure("capped", {"mc": "2"})
    await q.enqueue_many([call(f"c{i}", "capped") for i in range(10)])
    await q.enqueue_many([call(f"o{i}", "other") for i in range(10)])
    got = await claim_ids(q, 10)
    assert len(got) == 5  # the global cap
    assert sum(1 for i in got if i.startswith("c")) == 2  # the campaign's own cap
    result = await q.claim(10)
    assert result.calls == [] and result.blocked == ClaimBlock.CONCURRENCY
    capped = [i for i in got if i.startswith("c")]
    await finish(q, capped[0])
    again = await claim_ids(q, 10)
    assert len(again) == 1  # one global slot came back; the campaign may use it


async def test_campaign_dial_rate(make_queue: MakeQueue) -> None:
    r = make_queue(**NO_LIMITS)
    rc = CampaignEngine(r)
    await rc.configure("slow", {"rl": "3"})
    await r.enqueue_many([call(f"s{i}", "slow") for i in range(10)])
    first = await r.claim(10)
    assert len(first.calls) == 1  # paced: one every 333 ms, not three at once
    blocked = await r.claim(10)
    assert blocked.calls == [] and blocked.blocked == ClaimBlock.RATE
    assert blocked.wait_ms is not None and 0 < blocked.wait_ms <= 340
    granted = [first.calls[0].granted_at_ms]
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        result = await r.claim(10)
        granted += [c.granted_at_ms for c in result.calls]
        await asyncio.sleep((result.wait_ms or 20) / 1000)
    granted.sort()
    assert all(b - a >= 1000 for a, b in zip(granted, granted[3:], strict=False))  # 3 a second
    assert len(granted) >= 5  # and used to the full: 1 + 1.5 s x 3/s


async def test_pause_resume_and_cancel(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    await q.enqueue_many([call(f"p{i}", "p") for i in range(6)])
    in_a_minute = int(datetime.now(UTC).timestamp() * 1000) + 60_000
    await q.enqueue(call("later", "p", scheduled_at_ms=in_a_minute))
    await q.enqueue_many([call(f"x{i}", "x") for i in range(2)])
    live = await claim_ids(q, 2)
    assert await camps.pause("p") == "paused"
    rest = await claim_ids(q, 10)
    assert all(not i.startswith("p") for i in rest)  # nothing of a paused campaign
    assert await camps.resume("p") == "active"
    resumed = await claim_ids(q, 2)
    assert resumed and all(i.startswith("p") for i in resumed)
    cancelled = await camps.cancel("p")
    # Every call not yet dialed ends: the queued ones and the scheduled one.
    assert cancelled == 6 - len([i for i in live + resumed if i.startswith("p")]) + 1
    record = await q.get("later")
    assert record is not None and record.status == CallStatus.CANCELLED
    assert await queued_total(q) == 0
    refused = await q.enqueue(call("after", "p"))
    assert refused.state == "campaign_cancelled"
    try:
        await camps.pause("nope")
    except CampaignNotFound:
        pass
    else:
        raise AssertionError("pausing an unknown campaign must fail")


async def test_a_campaign_completes_when_every_call_is_final(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    await q.enqueue_many([call("k1", "k"), call("k2", "k")])
    ids = await claim_ids(q, 2)
    await finish(q, ids[0])
    assert await q.client.hget(q.keys.campaign("k"), "st") == b"active"
    await finish(q, ids[1], Outcome.REJECTED)
    assert await q.client.hget(q.keys.campaign("k"), "st") == b"completed"
    stats = await q.client.hgetall(q.keys.campaign_stats("k"))
    assert stats[b"open"] == b"0" and stats[b"final:completed"] == b"1"
    assert stats[b"final:failed"] == b"1" and stats[b"dialed"] == b"2"
    await q.enqueue(call("k3", "k"))  # more calls: active again
    assert await q.client.hget(q.keys.campaign("k"), "st") == b"active"


async def test_campaign_retry_policy_overrides_the_queue_default(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    policy = CampaignRetry(retry_on=frozenset({Outcome.BUSY}), max_retries=1, delay_s=0,
                           backoff="linear")  # fmt: skip
    assert CampaignRetry.decode(policy.encode()) == policy
    await camps.configure("r", {"rp": policy.encode()})
    await q.enqueue_many([call("r1", "r"), call("r2", "r")])
    await claim_ids(q, 2)
    # no_answer is not retried by this campaign (the queue's default would retry it).
    assert (await q.ended("r1", 1, EndFacts(Outcome.NO_ANSWER))).status == CallStatus.FAILED
    assert (await q.ended("r2", 1, EndFacts(Outcome.BUSY))).status == CallStatus.SCHEDULED
    assert (await claim_ids(q, 1)) == ["r2"]
    assert (await q.ended("r2", 2, EndFacts(Outcome.BUSY))).status == CallStatus.FAILED


async def test_a_call_outside_its_window_waits_for_the_opening(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    now = datetime.now(UTC)
    # A one-hour window that opened at the top of the hour three hours from now (UTC).
    start = (now.hour + 3) % 24
    window = CallingWindow(frozenset(range(7)), start * 60, (start + 1) * 60 % 1440 or 1440)
    await camps.configure("w", {"win": window.encode(), "wtz": "UTC"})
    await q.enqueue_many([
        call("in-utc", "w", time_zones=("UTC",)),
        call("unknown-zone", "w"),  # the window's own zone: UTC
        call("kolkata", "w", time_zones=("Asia/Kolkata",)),
    ])  # fmt: skip
    taken = await claim_ids(q, 3)
    opening = window.next_open(["UTC"], now)
    assert opening is not None and opening > now
    for call_id in ("in-utc", "unknown-zone"):
        assert call_id not in taken
        record = await q.get(call_id)
        assert record is not None and record.status == CallStatus.SCHEDULED
        assert record.next_attempt_ms is not None
        assert abs(record.next_attempt_ms - opening.timestamp() * 1000) < 1000
    kolkata = window.next_open(["Asia/Kolkata"], now)
    assert kolkata is not None
    if kolkata <= now:
        assert "kolkata" in taken
    else:
        assert "kolkata" not in taken


async def test_one_person_one_line_across_campaigns(make_queue: MakeQueue) -> None:
    q = make_queue(one_call_per_number=True, line_wait_s=0.2, **NO_LIMITS)
    same = "+919876512345"
    await q.enqueue_many([call("a1", "a", phone_number=same), call("b1", "b", phone_number=same),
                          call("a2", "a", phone_number="+919876512346")])  # fmt: skip
    first = await claim_ids(q, 3)
    assert sorted(first) == ["a1", "a2"]  # b1 waits: its number is on a live call
    waiting = await q.get("b1")
    assert waiting is not None and waiting.status == CallStatus.SCHEDULED
    assert "another call to this number is live" in waiting.history[-1].note
    await finish(q, "a1")
    again: list[str] = []
    deadline = time.monotonic() + 5
    while not again and time.monotonic() < deadline:
        again = await claim_ids(q, 3)
        await asyncio.sleep(0.05)
    assert again == ["b1"]  # the line is free once the first call is over
    assert await q.client.hget(q.keys.lines, same) == b"b1"


async def test_attempts_per_number_per_day(make_queue: MakeQueue) -> None:
    q = make_queue(max_attempts_per_number_per_day=2, one_call_per_number=False, **NO_LIMITS)
    number = "+919876500099"
    await q.enqueue_many([call(f"d{i}", f"camp{i}", phone_number=number) for i in range(3)])
    assert sorted(await claim_ids(q, 3)) == ["d0", "d1"]
    third = await q.get("d2")
    assert third is not None and third.status == CallStatus.SCHEDULED
    assert third.next_attempt_ms is not None
    day = third.history[-1].at_ms // 86_400_000
    assert third.next_attempt_ms == (day + 1) * 86_400_000  # the next UTC day


def ms(text: str, zone: str) -> int:
    """Epoch ms of a local wall time in ``zone``."""
    from zoneinfo import ZoneInfo

    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


async def test_windows_at_claim_across_zones_and_midnight(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    # Friday and Saturday nights, 22:00 to 02:00 the next morning, callee's local time.
    window = CallingWindow.parse("fri-sat 22:00-02:00")
    await camps.configure("night", {"win": window.encode()})
    ny, kolkata, both = ("America/New_York",), ("Asia/Kolkata",), (
        "America/New_York", "America/Chicago")  # fmt: skip
    await q.enqueue_many([
        call("ny", "night", time_zones=ny, phone_number="+12125550101"),
        call("in", "night", time_zones=kolkata, phone_number="+919876500201"),
        call("us", "night", time_zones=both, phone_number="+12125550102"),
    ])  # fmt: skip
    # Saturday 2026-12-05 01:30 in New York: still Friday night's opening there; in Kolkata it is
    # Saturday 12:00 (closed); in Chicago 00:30 (open): the two-zone call may go too.
    at = ms("2026-12-05T01:30", "America/New_York")
    await q.register_zones([*ny, *kolkata, *both], now_ms=at)
    taken = {c.call_id for c in (await q.claim(10, at_ms=at)).calls}
    assert taken == {"ny", "us"}
    record = await q.get("in")
    assert record is not None and record.status == CallStatus.SCHEDULED
    # Its next opening: Saturday 22:00 in Kolkata.
    assert record.next_attempt_ms == ms("2026-12-05T22:00", "Asia/Kolkata")
    # At 02:30 in New York (01:30 in Chicago) New York's night is over: a call spanning both
    # zones waits, closed in one zone is closed.
    await q.enqueue(call("late", "night", time_zones=both, phone_number="+12125550103"))
    later = ms("2026-12-05T02:30", "America/New_York")
    assert (await q.claim(10, at_ms=later)).calls == []
    late = await q.get("late")
    assert late is not None and late.status == CallStatus.SCHEDULED
    # Both zones are open again when Saturday 22:00 comes in Chicago (23:00 in New York).
    assert late.next_attempt_ms == ms("2026-12-05T22:00", "America/Chicago")


async def test_a_retry_is_scheduled_into_the_window(make_queue: MakeQueue) -> None:
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    now = datetime.now(UTC)
    start = (now.hour + 2) % 24
    window = CallingWindow(frozenset(range(7)), start * 60, (start + 1) * 60 % 1440 or 1440)
    policy = CampaignRetry(retry_on=frozenset({Outcome.BUSY}), max_retries=2, delay_s=0,
                           backoff="linear")  # fmt: skip
    await camps.configure("rw", {"win": window.encode(), "wtz": "UTC", "rp": policy.encode()})
    await q.enqueue(call("r", "rw", time_zones=("UTC",)))
    await q.register_zones(["UTC"])
    opening = window.next_open(["UTC"], now)
    assert opening is not None
    inside = int(opening.timestamp() * 1000) + 60_000
    (c,) = (await q.claim(1, at_ms=inside)).calls  # dialed inside the window
    result = await q.ended(c.call_id, 1, EndFacts(Outcome.BUSY))
    assert result.status == CallStatus.SCHEDULED
    record = await q.get("r")
    assert record is not None and record.next_attempt_ms is not None
    # Retried "at once" by the policy, but now is outside the window: due at its opening.
    assert record.next_attempt_ms == int(opening.timestamp() * 1000)


async def campaign_keys(q: CallQueue, cp: str) -> list[str]:
    k = q.keys
    keys = [k.campaign(cp), k.campaign_stats(cp), k.campaign_ready(cp), k.campaign_live(cp),
            k.campaign_rate_log(cp), k.campaign_dials_per_second(cp)]  # fmt: skip
    return [key for key in keys if await q.client.exists(key)]


async def test_a_completed_campaign_made_by_its_calls_is_forgotten_after_the_retention(
    make_queue: MakeQueue,
) -> None:
    # Campaigns that calls make (the seed's campaign_id, never configured) would otherwise pile
    # up for ever: keys, and a registry entry that every queue-status read walks.
    q = make_queue(retention_s=1, **NO_LIMITS)
    camps = CampaignEngine(q)
    await q.dnc_add(["+919876500099"])
    await q.enqueue_many([call("a1", "auto-done"), call("a2", "auto-done")])
    await q.enqueue(call("k1", "kept"))
    await camps.configure("kept", {"name": "Kept: it has settings"})
    await q.enqueue(call("c1", "auto-cancelled"))
    await q.enqueue(call("r1", "revived"))
    await q.enqueue(call("p1", "paused-resumed"))
    await q.enqueue(call("p2", "paused"))
    await q.enqueue(call("open1", "still-open"))
    claimed = await claim_ids(q, 10)
    assert sorted(claimed) == ["a1", "a2", "c1", "k1", "open1", "p1", "p2", "r1"]
    for call_id in ("a1", "a2", "k1", "r1", "p1", "p2"):
        await finish(q, call_id)
    await camps.cancel("auto-cancelled")
    await finish(q, "c1")
    await camps.pause("paused-resumed")  # completed, paused, resumed: complete again
    await camps.resume("paused-resumed")
    await camps.pause("paused")  # completed, then paused by hand: kept
    # Rows that create nothing (a replay, a conflict, a listed number) leave a completed
    # campaign as it is, and make no campaign of a name not seen before.
    replay = await q.enqueue_many([call("a1", "auto-done"), call("a2", "auto-done", body_hash="x"),
                                   call("dnc1", "auto-done", phone_number="+919876500099"),
                                   call("a1", "never-made")])  # fmt: skip
    assert [r.state.value for r in replay] == ["exists", "conflict", "dnc", "exists"]
    assert "never-made" not in await campaign_ids(q)
    done = {_s(cp) for cp in await q.client.zrange(q.keys.campaigns_done, 0, -1)}
    assert done == {"auto-done", "revived", "paused-resumed"}
    await q.enqueue(call("r2", "revived"))  # a new call brings it back before it is forgotten
    # Reap checks again: a campaign in use that is in the done set by mistake is kept.
    await q.client.zadd(q.keys.campaigns_done, {"still-open": 0})

    async def forgotten() -> bool:
        # Both completed a few milliseconds apart: each is forgotten once its own retention
        # has passed.
        await q.reap()
        ids = await campaign_ids(q)
        return "auto-done" not in ids and "paused-resumed" not in ids

    await wait_for(forgotten, 10, "the completed campaigns to be forgotten")
    ids = set(await campaign_ids(q))
    assert {"kept", "revived", "paused", "still-open", "auto-cancelled"} <= ids
    for cp in ("auto-done", "paused-resumed"):
        assert await campaign_keys(q, cp) == [], cp
    assert await campaign_states(q, ["auto-done"]) == [None]
    kept, revived, cancelled = await campaign_states(q, ["kept", "revived", "auto-cancelled"])
    assert kept is not None and kept.status == "completed"
    assert revived is not None and revived.status == "active" and revived.queued == 1
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await q.client.zcard(q.keys.campaigns_done) == 0
    # A cancelled campaign is kept, so it goes on refusing calls that name it.
    refused = await q.enqueue(call("c2", "auto-cancelled"))
    assert refused.state.value == "campaign_cancelled"
    # A campaign forgotten and then named again starts afresh, with default settings.
    await q.enqueue(call("a3", "auto-done"))
    state = (await campaign_states(q, ["auto-done"]))[0]
    assert state is not None and state.status == "active" and state.counters.enqueued == 1


async def test_a_call_handed_back_after_its_campaign_was_cancelled_ends_cancelled(
    make_queue: MakeQueue,
) -> None:
    # The carrier refused the dial (nothing placed) while the campaign was being cancelled:
    # the call must end, not wait in a queue that nothing dials any more.
    q = make_queue(**NO_LIMITS)
    camps = CampaignEngine(q)
    await q.enqueue_many(
        [call("x1", "stopped"), call("x2", "stopped", phone_number="+919876500002")]
    )
    claimed = (await q.claim(1)).calls[0]
    await camps.cancel("stopped")
    result = await q.release(claimed, "carrier said 503")
    assert result.code == "ok"
    record = await q.get(claimed.call_id)
    assert record is not None and record.status == CallStatus.CANCELLED
    state = (await campaign_states(q, ["stopped"]))[0]
    assert state is not None and state.queued == 0 and state.open == 0


async def test_a_higher_priority_call_moves_its_campaign_up(make_queue: MakeQueue) -> None:
    # enqueue leaves the campaign index alone when a new call goes behind the head; a call
    # that goes before it must still rank its campaign anew.
    q = make_queue(**NO_LIMITS)
    await q.enqueue_many([call(f"a{i}", "a") for i in range(3)])
    await q.enqueue_many([call(f"b{i}", "b", phone_number=f"+91987650010{i}") for i in range(3)])
    await q.enqueue(call("a-late", "a", phone_number="+919876500200"))  # behind a's head
    await q.enqueue(call("b-urgent", "b", Priority.URGENT, phone_number="+919876500201"))
    order = await claim_ids(q, 8)
    assert order[0] == "b-urgent"
    assert sorted(order[1:]) == sorted(["a0", "a1", "a2", "a-late", "b0", "b1", "b2"])
    assert [i for i in order if i.startswith("a")] == ["a0", "a1", "a2", "a-late"]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
