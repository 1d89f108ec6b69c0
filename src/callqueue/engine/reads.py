"""Read-only queries over a queue's keys, for the API, the CLI and the demo.

Nothing here changes state (every change is a script, see ``lua/``). Each query takes a few
pipelined round trips however many calls it covers (never one per call), and "now" is the
server's clock (TIME), the same clock the scripts use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from callqueue.engine.codec import Counters, decode_counters, decode_record, text
from callqueue.engine.queue import CallQueue, problems_in
from callqueue.models import LIVE_STATUSES, CallStatus, Outcome, Priority

#: Score band of one priority level in a ready ZSET (score = rank * 2**40 + arrival seq).
PRIORITY_BAND = 2**40
#: A worker counts as alive when its last heartbeat is at most this old.
#: Commands per pipeline when reading many calls.
CHUNK = 2000


def _int(value: Any, default: int = 0) -> int:
    return int(float(text(value))) if value not in (None, b"", "") else default


def _time_ms(reply: Sequence[Any]) -> int:
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


async def server_now_ms(queue: CallQueue) -> int:
    """The server clock (the one the scripts use), from the node that holds the queue's keys.

    A separate round trip: a cluster pipeline refuses keyless commands such as TIME.
    """
    client = queue.client
    if isinstance(client, RedisCluster):
        await client.initialize()  # no-op once connected; the slot map is needed below
        node = client.get_node_from_key(queue.keys.stats)
        return _time_ms(await client.time(target_nodes=node))
    return _time_ms(await client.time())


@dataclass(frozen=True, slots=True)
class ControlState:
    """What a health check wants: the switches, the heartbeats, what workers report stops
    them, and whether any call waits for a worker."""

    now_ms: int
    paused: bool
    workers_alive: int
    problems: dict[str, str] = field(default_factory=dict)  # by part (carrier, agent)
    # Calls a worker would dial now: queued in a campaign that may be dialed, or scheduled
    # for a time that has come (a worker's claim moves those to the queue).
    calls_due: bool = False


async def control_state(queue: CallQueue, worker_ttl_ms: int | None = None) -> ControlState:
    """A few constant-time reads in one round trip (plus the clock's)."""
    if worker_ttl_ms is None:
        worker_ttl_ms = int(queue.options.worker_ttl_s * 1000)
    k = queue.keys
    now = await server_now_ms(queue)
    pipe = queue.client.pipeline(transaction=False)
    pipe.hgetall(k.control)
    pipe.zcount(k.workers, f"({now - worker_ttl_ms}", "+inf")
    # The campaign index holds exactly the campaigns with queued calls that may be dialed
    # (active, not paused or cancelled): one entry is enough to know a call waits.
    pipe.zcard(k.campaign_index)
    pipe.zrange(k.scheduled, 0, 0, withscores=True)
    control_raw, alive, ready_campaigns, first_scheduled = await pipe.execute()
    control = {text(name): text(value) for name, value in control_raw.items()}
    return ControlState(
        now_ms=now,
        paused=control.get("paused") == "1",
        workers_alive=int(alive),
        problems=problems_in(control),
        calls_due=bool(ready_campaigns) or any(score <= now for _, score in first_scheduled),
    )


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Counters and gauges of one queue at one moment (server clock)."""

    now_ms: int
    paused: bool
    queued: int
    scheduled: int
    queued_by_priority: dict[Priority, int]
    live_slots: int  # attempts holding a live-call slot (longest life not yet passed)
    live_by_status: dict[CallStatus, int]
    final_by_status: dict[CallStatus, int]  # cumulative, includes calls expired by retention
    outcomes: dict[Outcome, int]  # attempt outcomes, cumulative
    enqueued: int
    dialed: int
    released: int
    lapsed_leases: int
    dials_last_second: int
    dials_by_second: dict[int, int]  # epoch second -> dials granted, about the last minute
    duration_sum_s: float
    duration_count: int
    workers: list[str] = field(default_factory=list)

    @property
    def dials_last_minute(self) -> int:
        now_s = self.now_ms // 1000
        return sum(n for sec, n in self.dials_by_second.items() if now_s - 60 < sec <= now_s)

    @property
    def peak_dials_per_second(self) -> int:
        return max(self.dials_by_second.values(), default=0)

    @property
    def counts(self) -> dict[CallStatus, int]:
        """Calls by status: waiting and live ones now, terminal ones cumulative."""
        counts = dict.fromkeys(CallStatus, 0)
        counts[CallStatus.QUEUED] = self.queued
        counts[CallStatus.SCHEDULED] = self.scheduled
        counts.update(self.live_by_status)
        counts.update(self.final_by_status)
        return counts

    @property
    def average_duration_s(self) -> float | None:
        return self.duration_sum_s / self.duration_count if self.duration_count else None

    @property
    def success_rate(self) -> float | None:
        """Completed calls over calls that ended completed or failed (cancelled ones aside)."""
        done = self.final_by_status[CallStatus.COMPLETED] + self.final_by_status[CallStatus.FAILED]
        return self.final_by_status[CallStatus.COMPLETED] / done if done else None

    @property
    def failure_rate(self) -> float | None:
        rate = self.success_rate
        return None if rate is None else 1.0 - rate


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_id: str
    status: CallStatus
    attempt: int
    phone_number: str
    campaign_id: str | None
    priority: Priority
    carrier_call_id: str | None
    started_ms: int
    answered_ms: int | None
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class CallState:
    """The status of one call and how many attempts it has had."""

    status: CallStatus
    attempts: int


def _count_live(states: Iterable[CallState | None]) -> dict[CallStatus, int]:
    counts = dict.fromkeys(sorted(LIVE_STATUSES), 0)
    for state in states:
        if state is not None and state.status in counts:
            counts[state.status] += 1
    return counts


async def _live_statuses(queue: CallQueue, ids: Sequence[str]) -> dict[CallStatus, int]:
    return _count_live((await call_states(queue, ids)).values())


async def campaign_ids(queue: CallQueue) -> list[str]:
    """Every campaign of the queue, oldest first, and ``""`` (the calls of no campaign)."""
    return ["", *(text(c) for c in await queue.client.zrange(queue.keys.campaigns, 0, -1))]


async def queued_by_priority(
    queue: CallQueue, campaigns: Sequence[str] | None = None
) -> dict[Priority, int]:
    """Queued calls by priority, over ``campaigns`` (default: all of them)."""
    ids = await campaign_ids(queue) if campaigns is None else list(campaigns)
    counts = dict.fromkeys(Priority, 0)
    for start in range(0, len(ids), CHUNK // 4):
        pipe = queue.client.pipeline(transaction=False)
        for cp in ids[start : start + CHUNK // 4]:
            ready = queue.keys.campaign_ready(cp)
            for p in Priority:
                low = p.rank * PRIORITY_BAND
                pipe.zcount(ready, low, f"({low + PRIORITY_BAND}")
        replies = await pipe.execute()
        for i, n in enumerate(replies):
            counts[list(Priority)[i % len(Priority)]] += int(n)
    return counts


async def queued_total(queue: CallQueue) -> int:
    """Calls queued now (waiting for their turn), over every campaign."""
    return sum((await queued_by_priority(queue)).values())


async def queue_snapshot(queue: CallQueue, worker_ttl_ms: int | None = None) -> QueueSnapshot:
    if worker_ttl_ms is None:
        worker_ttl_ms = int(queue.options.worker_ttl_s * 1000)
    k = queue.keys
    now = await server_now_ms(queue)
    by_priority_now = await queued_by_priority(queue)
    pipe = queue.client.pipeline(transaction=False)
    pipe.zcard(k.scheduled)
    pipe.zrange(k.live, 0, -1, withscores=True)
    pipe.zrange(k.rate_log, 0, -1, withscores=True)
    pipe.hgetall(k.stats)
    pipe.hgetall(k.dials_per_second)
    pipe.hget(k.control, "paused")
    pipe.zrange(k.workers, 0, -1, withscores=True)
    (
        scheduled,
        live,
        rate_log,
        stats_raw,
        dps_raw,
        paused,
        workers,
    ) = await pipe.execute()
    counters = decode_counters(stats_raw)
    dps = {_int(sec): _int(n) for sec, n in dps_raw.items()}
    live_ids = [text(member) for member, score in live if score > now]
    if queue.options.rate_per_second > 0:
        last_second = sum(1 for _, score in rate_log if score > now - 1000)
    else:
        last_second = dps.get(now // 1000 - 1, 0)
    return QueueSnapshot(
        now_ms=now,
        paused=text(paused) == "1" if paused is not None else False,
        queued=sum(by_priority_now.values()),
        scheduled=int(scheduled),
        queued_by_priority=by_priority_now,
        live_slots=len(live_ids),
        live_by_status=await _live_statuses(queue, live_ids),
        final_by_status=counters.final_by_status,
        outcomes=counters.outcomes,
        enqueued=counters.enqueued,
        dialed=counters.dialed,
        released=counters.released,
        lapsed_leases=counters.lapsed_leases,
        dials_last_second=last_second,
        dials_by_second=dps,
        duration_sum_s=counters.talk_time_s,
        duration_count=counters.talked,
        workers=sorted(text(w) for w, beat in workers if beat > now - worker_ttl_ms),
    )


async def call_states(queue: CallQueue, call_ids: Iterable[str]) -> dict[str, CallState | None]:
    """Status and attempt count of each call; None for calls that do not exist (any more)."""
    ids = list(call_ids)
    out: dict[str, CallState | None] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        pipe = queue.client.pipeline(transaction=False)
        for call_id in chunk:
            pipe.hmget(queue.keys.call(call_id), "st", "a")
        for call_id, (status, attempts) in zip(chunk, await pipe.execute(), strict=True):
            out[call_id] = (
                None if status is None else CallState(CallStatus(text(status)), _int(attempts))
            )
    return out


async def live_calls(queue: CallQueue) -> tuple[int, list[LiveCall]]:
    """(server now ms, the calls holding a live-call slot that are dialing, ringing or talking),
    oldest attempt first."""
    now = await server_now_ms(queue)
    ids = [text(m) for m in await queue.client.zrange(queue.keys.live, 0, -1)]
    calls: list[LiveCall] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        pipe = queue.client.pipeline(transaction=False)
        for call_id in chunk:
            pipe.hgetall(queue.keys.call(call_id))
        for call_id, fields in zip(chunk, await pipe.execute(), strict=True):
            if not fields:
                continue
            record = decode_record(call_id, fields)
            if not record.status.is_live or not record.attempts:
                continue
            current = record.attempts[-1]
            calls.append(
                LiveCall(
                    call_id=call_id,
                    status=record.status,
                    attempt=current.number,
                    phone_number=record.spec.phone_number,
                    campaign_id=record.spec.campaign_id,
                    priority=record.spec.priority,
                    carrier_call_id=current.carrier_call_id or None,
                    started_ms=current.started_ms,
                    answered_ms=current.answered_ms,
                    cancel_requested=record.cancel_requested,
                )
            )
    calls.sort(key=lambda c: (c.started_ms, c.call_id))
    return now, calls


@dataclass(frozen=True, slots=True)
class BatchCounts:
    batch_id: str
    total: int
    by_status: dict[str, int]  # every CallStatus value, plus "expired" (gone by retention)

    @property
    def done(self) -> bool:
        open_statuses = {s.value for s in CallStatus if not s.is_terminal}
        return not any(self.by_status.get(s) for s in open_statuses)


async def batch_counts(queue: CallQueue, batch_id: str) -> BatchCounts | None:
    """Calls of a bulk batch by status; None when no batch has that id."""
    members = await queue.client.smembers(queue.keys.batch(batch_id))
    if not members:
        return None
    states = await call_states(queue, sorted(text(m) for m in members))
    counts: Counter[str] = Counter(
        "expired" if state is None else state.status.value for state in states.values()
    )
    by_status = {s.value: counts.get(s.value, 0) for s in CallStatus}
    by_status["expired"] = counts.get("expired", 0)
    return BatchCounts(batch_id, len(states), by_status)


@dataclass(frozen=True, slots=True)
class CampaignState:
    """A campaign's settings and progress at one moment (server clock)."""

    campaign_id: str
    settings: dict[str, str]  # the raw fields of its settings hash (see campaign.lua)
    status: str  # active | paused | cancelled | completed
    created_ms: int
    now_ms: int
    queued: int
    live: int
    open: int  # calls not final yet
    counters: Counters
    dials_last_minute: int
    # Its calls holding a live-call slot, by their status now (dialing, ringing, in_progress).
    live_by_status: dict[CallStatus, int] = field(default_factory=dict)

    @property
    def scheduled(self) -> int:
        """Open calls neither queued nor live: waiting for a time (scheduled_at, a retry, or
        the calling window)."""
        return max(0, self.open - self.queued - self.live)

    @property
    def counts(self) -> dict[CallStatus, int]:
        counts = dict.fromkeys(CallStatus, 0)
        counts[CallStatus.QUEUED] = self.queued
        counts[CallStatus.SCHEDULED] = self.scheduled
        counts.update(self.live_by_status)
        counts.update(self.counters.final_by_status)
        return counts

    @property
    def attempts(self) -> int:
        return sum(self.counters.outcomes.values())

    @property
    def connect_rate(self) -> float | None:
        """Attempts answered by a person over attempts that ended."""
        ended = self.attempts
        return self.counters.outcomes[Outcome.COMPLETED] / ended if ended else None

    @property
    def dial_rate_per_s(self) -> float:
        return self.dials_last_minute / 60

    @property
    def eta_s(self) -> float | None:
        """Seconds until every open call has been dialed once more, at the last minute's pace
        (None when nothing was dialed in that minute)."""
        if not self.open:
            return 0.0
        rate = self.dial_rate_per_s
        return (self.open - self.live) / rate if rate else None


async def campaign_states(queue: CallQueue, ids: Sequence[str]) -> list[CampaignState | None]:
    """Settings and progress of each campaign (None: no such campaign), in a few round trips."""
    k = queue.keys
    now = await server_now_ms(queue)
    out: list[CampaignState | None] = []
    for start in range(0, len(ids), CHUNK // 8):
        chunk = ids[start : start + CHUNK // 8]
        pipe = queue.client.pipeline(transaction=False)
        for cp in chunk:
            pipe.hgetall(k.campaign(cp))
            pipe.hgetall(k.campaign_stats(cp))
            pipe.zcard(k.campaign_ready(cp))
            pipe.zrangebyscore(k.campaign_live(cp), f"({now}", "+inf")
            pipe.hgetall(k.campaign_dials_per_second(cp))
        replies = await pipe.execute()
        # The statuses of their live calls: as many reads as live calls, which the live-call
        # cap bounds (the same reads /api/queue/status makes for the whole queue).
        live_ids = [[text(m) for m in replies[i * 5 + 3]] for i in range(len(chunk))]
        states = await call_states(queue, [m for ids in live_ids for m in ids])
        for i, cp in enumerate(chunk):
            settings_raw, stats_raw, queued, _, dps_raw = replies[i * 5 : i * 5 + 5]
            if not settings_raw:
                out.append(None)
                continue
            settings = {text(a): text(b) for a, b in settings_raw.items()}
            stats = {text(a): text(b) for a, b in stats_raw.items()}
            now_s = now // 1000
            minute = sum(_int(v) for sec, v in dps_raw.items() if now_s - 60 < _int(sec) <= now_s)
            out.append(
                CampaignState(
                    campaign_id=cp,
                    settings=settings,
                    status=settings.get("st", "active"),
                    created_ms=_int(settings.get("cr")),
                    now_ms=now,
                    queued=int(queued),
                    live=len(live_ids[i]),
                    open=max(0, _int(stats.get("open"))),
                    counters=decode_counters(stats_raw),
                    dials_last_minute=minute,
                    live_by_status=_count_live(states[m] for m in live_ids[i]),
                )
            )
    return out


async def campaign_page(
    queue: CallQueue, offset: int = 0, limit: int = 100
) -> tuple[int, list[str]]:
    """(how many campaigns there are, the ids of one page, newest first)."""
    pipe = queue.client.pipeline(transaction=False)
    pipe.zcard(queue.keys.campaigns)
    pipe.zrevrange(queue.keys.campaigns, offset, offset + limit - 1)
    total, ids = await pipe.execute()
    return int(total), [text(i) for i in ids]
