"""The engine against a model: random interleavings of everything that can happen to a queue.

A hypothesis state machine drives the real ``CallQueue`` (its Lua scripts on the suite's
server, a queue of its own per example) and a small pure-Python model of the rules side by
side: enqueues (scheduled or not, any priority, three campaigns and none), claims, carrier
events for any attempt ever handed out (in any order, duplicated, or never sent at all: a
lost event), the dispatcher's give-back of an attempt the carrier refused, reaper runs,
cancels, pausing and resuming the queue and campaigns, cancelling a campaign, calling-window
changes, and clock jumps. After every step it reads Redis and checks:

- no attempt is handed out twice: a (call, attempt) pair that a claim returned is never
  returned again (an attempt given back unused, ``release``, is not an attempt: its number
  is reused);
- slots balance: the live set holds exactly the model's live attempts, in the campaign's
  own live set too, and the attempts the claim counts never exceed the caps;
- counts are consistent: the queue's and each campaign's counters and progress agree with
  the model and with each other;
- nothing is lost: every call is in exactly one state, in exactly the index of that state
  (ready set, scheduled set, live set, finished set), and a call waiting in an active
  campaign can be reached by the claim (its campaign is in the campaign index).

Clocks. The claim takes its "now" from the test (``at_ms``); every other script reads the
server clock. The model's virtual clock starts near the real time R0 of the example, offset
by whole hours (``offset``), and only jumps forward by whole hours. Every time the engine
compares (a due time, the end of an attempt's longest life, a calling-window boundary) is
built on a 30-minute grid around R0, and calling windows open and close 15 minutes off the
grid, so no comparison falls within the few seconds an example takes: the model's answers
are exact. A negative offset stands for attempts claimed long enough ago that the reaper
(real clock) finds their longest life passed. The limit: the reaper cannot be moved in time,
so "lost" attempts are only those claimed while the offset is an hour or more behind.

Where the engine may choose (which calls a claim looks at in a closed calling window, what
becomes of calls parked for a window when the window changes), the model checks that the
choice is one the rules allow and follows it.

``ENGINE_MODEL_PROFILE=chaos`` selects a longer run (``make chaos``); the default is bounded
to about a minute here and derandomized, so CI is reproducible.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from engine_support import MakeQueue, own_number, spec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from callqueue.engine.campaigns import CampaignEngine, CampaignRetry, CampaignStateConflict
from callqueue.engine.connection import connect
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.engine.reads import campaign_states, queue_snapshot
from callqueue.models import (
    DEFAULT_RETRIES,
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    CallSpec,
    CallStatus,
    ClaimBlock,
    ClaimedCall,
    EnqueueState,
    Outcome,
    Priority,
    RetryPolicy,
)
from callqueue.windows import CallingWindow

T = TypeVar("T")
S = CallStatus

MINUTE = 60_000
HOUR = 60 * MINUTE
#: An attempt's longest life: dial lease 30 + ring timeout 60 + max duration 1650 + grace 60 s.
LIFE_MS = 30 * MINUTE
#: The queue's retry delay: always 30 minutes (factor 1, no jitter).
RETRY_MS = 30 * MINUTE
#: A throttled attempt (the carrier refused after taking the request) is retried 1-2 s later.
THROTTLE_MS = 1_000
CAP = 3  # MAX_CONCURRENT_CALLS
CA_CAP = 2  # campaign "ca"'s own max concurrent calls
ZONE = "Asia/Kolkata"  # no daylight saving: offsets recorded at R0 hold for any offset
MAX_CALLS = 10

OPTIONS = QueueOptions(
    max_live_calls=CAP,
    rate_per_second=0,
    one_call_per_number=False,
    dial_lease_s=30,
    ring_timeout_s=60,
    default_max_duration_s=1650,
    grace_s=60,
    retry=RetryPolicy(base_delay_s=1800, factor=1.0, max_delay_s=1800, jitter=0.0),
)
#: Campaign "cb"'s own retry policy: busy and lost only, one retry, 25 then 45 minutes.
CB_RETRY = CampaignRetry(
    retry_on=frozenset({Outcome.BUSY, Outcome.LOST}),
    max_retries=1,
    delay_s=1500,
    backoff="linear",
    max_delay_s=2700,
)
CAMPAIGNS = ("ca", "cb", "cc", "")  # ca: window + own cap; cb: own retry policy; cc: made by
# its first call; "": the calls of no campaign.
LIVE = LIVE_STATUSES
TERMINAL = TERMINAL_STATUSES
PHASE = {"accepted": 1, "ringing": 1, "answered": 2, "ended": 3}

#: Bounded and derandomized for make test (about half a minute here); "chaos" for a long,
#: random run.
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}
PROFILES = {
    "ci": settings(max_examples=100, stateful_step_count=40, derandomize=True, **_SETTINGS),
    "chaos": settings(max_examples=1000, stateful_step_count=60, derandomize=False, **_SETTINGS),
}


def profile() -> settings:
    name = os.environ.get("ENGINE_MODEL_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"ENGINE_MODEL_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


# -- the model ---------------------------------------------------------------------------


@dataclass
class MCall:
    call_id: str
    campaign: str
    rank: int
    order: int  # arrival: FIFO within a priority
    max_retries: int | None
    status: CallStatus
    due: int | None = None  # when scheduled: the due time (epoch ms)
    approx: bool = False  # due taken from the server clock: exact within the example's age
    parked: bool = False  # scheduled by the claim for its campaign's calling window
    attempts: int = 0
    phase: int = 0  # of the current attempt: 0 dialing, 1 ringing, 2 answered, 3 ended
    token: str = ""
    claimed_offset: int = 0  # the clock offset its current attempt was claimed at
    machine: bool = False
    free: int = 0  # attempts the carrier throttled: they do not count against max_retries
    cancel_requested: bool = False


@dataclass
class Claim:
    """One attempt handed out."""

    call_id: str
    attempt: int
    token: str
    released: bool = False


@dataclass
class MCampaign:
    status: str = "active"
    exists: bool = False
    auto: bool = False
    window: CallingWindow | None = None
    enqueued: int = 0
    dialed: int = 0
    released: int = 0
    finals: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


def windows_around(r0_ms: int) -> list[CallingWindow]:
    """Calling windows whose openings and closings fall 15 minutes off the hour grid that the
    model's clock moves on (R0 + whole hours), in ZONE's local time."""
    local = datetime.fromtimestamp(r0_ms / 1000, UTC).astimezone(ZoneInfo(ZONE))
    m0 = local.hour * 60 + local.minute

    def at(hours: int) -> int:
        return (m0 + 15 + 60 * hours) % 1440

    out = []
    for start, length, days in ((-1, 2, range(7)), (2, 5, range(7)), (-6, 3, range(7)),
                                (0, 9, range(5)), (-12, 20, (5, 6))):  # fmt: skip
        s, e = at(start), at(start + length)
        out.append(CallingWindow(frozenset(days), s, e or 1440))
    return out


def next_open(window: CallingWindow | None, at_ms: int) -> int:
    """When ``window`` is next open at or after ``at_ms`` (``at_ms`` itself when open)."""
    if window is None:
        return at_ms
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    opens = window.next_open([ZONE], at)
    assert opens is not None, "the model's windows open every week"
    return (opens - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


class Model:
    def __init__(self, r0: int, offset: int) -> None:
        self.r0 = r0
        self.offset = offset
        self.calls: dict[str, MCall] = {}
        self.claims: list[Claim] = []
        self.handed: set[tuple[str, int]] = set()  # (call, attempt) handed out and not given back
        self.campaigns = {cp: MCampaign() for cp in CAMPAIGNS}
        self.campaigns[""].exists = True
        self.paused = False
        self.enqueued = 0
        self.dialed = 0
        self.released = 0
        self.finals: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.order = 0

    @property
    def now(self) -> int:
        """The claim's clock."""
        return self.r0 + self.offset

    def campaign(self, call: MCall) -> MCampaign:
        return self.campaigns[call.campaign]

    def live(self) -> list[MCall]:
        return [c for c in self.calls.values() if c.status in LIVE]

    def counted_live(self, campaign: str | None = None) -> int:
        """Live attempts the claim counts at the model's now: claimed at this offset (those
        claimed before a jump of an hour or more have outlived their longest life)."""
        return sum(
            1
            for c in self.live()
            if c.claimed_offset + LIFE_MS > self.offset
            and (campaign is None or c.campaign == campaign)
        )

    # -- transitions ------------------------------------------------------------------------
    def finish(self, call: MCall, final: CallStatus) -> None:
        call.status = final
        call.due = None
        call.parked = False
        self.finals[final.value] += 1
        cp = self.campaign(call)
        if call.campaign:
            cp.finals[final.value] += 1
            if cp.status == "active" and self.open_calls(call.campaign) == 0:
                cp.status = "completed"

    def open_calls(self, campaign: str) -> int:
        return sum(
            1 for c in self.calls.values() if c.campaign == campaign and c.status not in TERMINAL
        )

    def schedule(self, call: MCall, due: int, *, approx: bool, parked: bool = False) -> None:
        call.status = S.SCHEDULED
        call.due = due
        call.approx = approx
        call.parked = parked

    def settle(self, call: MCall, outcome: str, at_approx: int) -> None:
        """An attempt ended (event.lua/reap.lua's settle); ``at_approx``: the server clock, as
        near as the model knows it (R0: every example is short)."""
        if outcome == "completed" and call.machine:
            outcome = "machine"
        self.outcomes[outcome] += 1
        cp = self.campaign(call)
        if call.campaign:
            cp.outcomes[outcome] += 1
        call.phase = 3
        call.token = ""
        if outcome == "throttled" and not call.cancel_requested:
            call.free += 1
            self.schedule(call, at_approx + THROTTLE_MS, approx=True)
            return
        policy = CB_RETRY if call.campaign == "cb" else None
        retry_on = (
            {o.value for o in policy.retry_on}
            if policy
            else {o.value for o in OPTIONS.retry.retry_on}
        )
        if call.max_retries is not None:
            max_retries = call.max_retries
        elif policy and policy.max_retries is not None:
            max_retries = policy.max_retries
        else:
            max_retries = DEFAULT_RETRIES
        n = call.attempts
        if call.cancel_requested:
            self.finish(call, S.CANCELLED)
        elif outcome == "completed":
            self.finish(call, S.COMPLETED)
        elif outcome in retry_on and n - call.free <= max_retries:
            if policy:
                delay = min(int(policy.delay_s * 1000) * n, int(policy.max_delay_s * 1000))
            else:
                delay = RETRY_MS
            due = at_approx + delay
            opens = next_open(cp.window, due) if call.campaign == "ca" else due
            self.schedule(call, opens, approx=opens == due, parked=opens != due)
        else:
            self.finish(call, S.FAILED)


# -- the machine ---------------------------------------------------------------------------

#: A call to queue: campaign, priority, due in half hours from now (None: now), max_retries.
NEW_CALL = st.tuples(
    st.sampled_from(CAMPAIGNS),
    st.sampled_from(list(Priority)),
    st.sampled_from([None, None, -1, 1, 3]),
    st.sampled_from([None, 0, 1]),
)
EVENT_KINDS = ("accepted", "ringing", "answered", "machine", "ended", "ended", "ended")
OUTCOMES = ("completed", "busy", "no_answer", "failed", "machine", "rejected", "throttled")
EVENT = st.tuples(st.sampled_from(EVENT_KINDS), st.sampled_from(OUTCOMES))


class EngineModel(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    client: Any

    def __init__(self) -> None:
        super().__init__()
        self.queue = CallQueue(self.client, "m" + secrets.token_hex(5), OPTIONS)
        self.engine = CampaignEngine(self.queue)
        self.started = time.monotonic()
        self.r0 = self.run(self.server_now())
        self.model = Model(self.r0, 0)
        self.windows = windows_around(self.r0)
        self.serial = 0
        self.specs: dict[str, CallSpec] = {}

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)  # type: ignore[arg-type]

    async def server_now(self) -> int:
        sec, usec = await self.client.time()
        return int(sec) * 1000 + int(usec) // 1000

    def teardown(self) -> None:
        async def drop() -> None:
            keys = [k async for k in self.client.scan_iter(match=f"{self.queue.keys.prefix}*")]
            if keys:
                await self.client.delete(*keys)

        self.run(drop())

    # -- set-up ---------------------------------------------------------------------------
    @initialize(
        offset_hours=st.sampled_from([0, 1, -1, -2]),
        calls=st.lists(NEW_CALL, min_size=1, max_size=6),
    )
    def set_up(
        self, offset_hours: int, calls: list[tuple[str, Priority, int | None, int | None]]
    ) -> None:
        self.model.offset = offset_hours * HOUR
        self.run(self.queue.register_zones([ZONE], self.r0))
        settings_of = {
            "ca": {"mc": str(CA_CAP), "wtz": ZONE},
            "cb": {"rp": CB_RETRY.encode()},
        }
        for cp, fields in settings_of.items():
            status, created = self.run(self.engine.configure(cp, fields))
            assert (status, created) == ("active", True)
            self.model.campaigns[cp].exists = True
        for args in calls:
            self.add_call(*args)

    # -- enqueue ----------------------------------------------------------------------------
    @rule(args=NEW_CALL, again=st.integers(0, 3), data=st.data())
    def enqueue(
        self, args: tuple[str, Priority, int | None, int | None], again: int, data: st.DataObject
    ) -> None:
        """A new call, or (now and then, and once the queue is full) one queued before sent
        again: a client retry, which changes nothing."""
        m = self.model
        if m.calls and (again == 0 or len(m.calls) >= MAX_CALLS):
            call_id = data.draw(st.sampled_from(sorted(m.calls)))
            result = self.run(self.queue.enqueue(self.specs[call_id]))
            assert result.state == EnqueueState.EXISTS, result
            assert result.status == m.calls[call_id].status, result
        else:
            self.add_call(*args)

    def add_call(
        self, campaign: str, priority: Priority, due_half_hours: int | None, max_retries: int | None
    ) -> None:
        m = self.model
        self.serial += 1
        call_id = f"c{self.serial}"
        due = None if due_half_hours is None else m.now + due_half_hours * (HOUR // 2)
        request = CallSpec(
            call_id=call_id,
            phone_number=own_number(self.serial),
            campaign_id=campaign or None,
            priority=priority,
            max_retries=max_retries,
            scheduled_at_ms=due,
            body_hash=call_id,
        )
        result = self.run(self.queue.enqueue(request))
        cp = m.campaigns[campaign]
        if cp.status == "cancelled":
            assert result.state == EnqueueState.CAMPAIGN_CANCELLED, result
            return
        # enqueue.lua compares the due time with the server clock (R0 and a few seconds).
        status = S.SCHEDULED if due is not None and due > m.r0 else S.QUEUED
        assert (result.state, result.status) == (EnqueueState.CREATED, status), result
        m.order += 1
        call = MCall(call_id, campaign, priority.rank, m.order, max_retries, status)
        if status == S.SCHEDULED:
            assert due is not None
            m.schedule(call, due, approx=False)
        m.calls[call_id] = call
        m.enqueued += 1
        if campaign:
            if not cp.exists:
                cp.exists, cp.auto = True, True
            if cp.status == "completed":
                cp.status = "active"
            cp.enqueued += 1
        self.specs[call_id] = request

    # -- claim ----------------------------------------------------------------------------------
    @rule(want=st.integers(1, 3), accept=st.lists(st.booleans(), min_size=3, max_size=3))
    def claim(self, want: int, accept: list[bool]) -> None:
        """A worker claims calls, and (or not: its word may be lost) tells that the carrier
        accepted each dial request."""
        claimed = self.claim_calls(want)
        for claim, yes in zip(claimed, accept, strict=False):
            if yes:
                self.send(claim, "accepted", "completed")

    def claim_calls(self, want: int) -> list[Claim]:
        m = self.model
        now = m.now
        # 1. due calls are promoted first, whatever else stops the claim
        for call in m.calls.values():
            if call.status == S.SCHEDULED and call.due is not None and call.due <= now:
                if m.campaign(call).status == "cancelled":
                    m.finish(call, S.CANCELLED)
                else:
                    call.status, call.due, call.parked = S.QUEUED, None, False
        queued = [c for c in m.calls.values() if c.status == S.QUEUED]
        dialable = [c for c in queued if m.campaign(c).status == "active"]
        windowed = [c for c in dialable if c.campaign == "ca" and m.campaigns["ca"].window]
        closed = [c for c in windowed if next_open(m.campaigns["ca"].window, now) > now]
        eligible = [c for c in dialable if c not in closed]

        result = self.run(self.queue.claim(want, at_ms=now))
        got = [(c.call_id, c.attempt) for c in result.calls]
        free = CAP - m.counted_live()
        blocks: set[ClaimBlock] = set()
        if m.paused:
            blocks = {ClaimBlock.PAUSED}
        elif not dialable:
            blocks = {ClaimBlock.EMPTY, ClaimBlock.CONCURRENCY}  # (an index entry may linger)
        elif free <= 0:
            blocks = {ClaimBlock.CONCURRENCY}
        if blocks:
            assert got == [], (blocks, got)
            assert result.blocked in blocks, (result.blocked, blocks)
            return []

        # Each call handed out was dialable now, for the attempt after its last one, never
        # handed out before.
        by_id = {c.call_id: c for c in eligible}
        for call_id, attempt in got:
            assert call_id in by_id, f"claimed {call_id}, not dialable now: {m.calls[call_id]}"
            assert attempt == m.calls[call_id].attempts + 1, (call_id, attempt)
            assert (call_id, attempt) not in m.handed, f"attempt {attempt} of {call_id} twice"
        assert len(set(got)) == len(got)
        # As many as the limits allow, highest priority first, FIFO within one.
        room_ca = CA_CAP - m.counted_live("ca")
        n = min(want, free)
        ca_eligible = [c for c in eligible if c.campaign == "ca"]
        others = [c for c in eligible if c.campaign != "ca"]
        expected = min(n, len(others) + min(len(ca_eligible), max(0, room_ca)))
        assert len(got) == expected, (got, expected, [(c.call_id, c.campaign) for c in eligible])
        took_ca = sum(1 for cid, _ in got if by_id[cid].campaign == "ca")
        assert took_ca <= max(0, room_ca)
        passed_over = [
            c
            for c in eligible
            if c.call_id not in dict(got) and not (c.campaign == "ca" and took_ca >= room_ca)
        ]
        for cid, _ in got:
            taken = by_id[cid]
            for other in passed_over:
                ahead = other.rank < taken.rank or (
                    other.rank == taken.rank
                    and other.campaign == taken.campaign
                    and other.order < taken.order
                )
                assert not ahead, f"{other.call_id} passed over for {cid}"

        new: list[Claim] = []
        for claimed in result.calls:
            call = m.calls[claimed.call_id]
            call.status, call.attempts, call.phase = S.DIALING, claimed.attempt, 0
            call.token, call.claimed_offset = claimed.token, m.offset
            call.machine = False  # a machine answers one attempt, not the call
            new.append(Claim(claimed.call_id, claimed.attempt, claimed.token))
            m.claims.append(new[-1])
            m.handed.add((claimed.call_id, claimed.attempt))
            m.dialed += 1
            if call.campaign:
                m.campaign(call).dialed += 1
        # Calls looked at in a closed window were parked until it opens; the claim may look
        # at any number of them.
        states = self.run(self._states([c.call_id for c in closed]))
        opens = next_open(m.campaigns["ca"].window, now)
        for call in closed:
            status, due = states[call.call_id]
            if status == S.SCHEDULED:
                assert due == opens, (call.call_id, due, opens)
                m.schedule(call, opens, approx=False, parked=True)
            else:
                assert status == S.QUEUED, (call.call_id, status)
        return new

    async def _states(self, ids: list[str]) -> dict[str, tuple[CallStatus, int | None]]:
        out = {}
        for call_id in ids:
            status = await self.client.hget(self.queue.keys.call(call_id), "st")
            due = await self.client.zscore(self.queue.keys.scheduled, call_id)
            out[call_id] = (CallStatus(_text(status)), None if due is None else int(due))
        return out

    # -- carrier events ---------------------------------------------------------------------
    @precondition(lambda self: self.model.claims)
    @rule(data=st.data(), events=st.lists(EVENT, min_size=1, max_size=5), old=st.integers(0, 3))
    def carrier_events(self, data: st.DataObject, events: list[tuple[str, str]], old: int) -> None:
        """Events about one attempt handed out - mostly a live one, now and then any earlier
        one - in any order, any number of times; an event never sent is a lost one."""
        m = self.model
        live = [c for c in m.claims if m.calls[c.call_id].status in LIVE and not c.released]
        claim = data.draw(st.sampled_from(live if live and old else m.claims))
        for kind, outcome in events:
            self.send(claim, kind, outcome)

    def send(self, claim: Claim, kind: str, outcome: str) -> None:
        """Only the dialing worker sends ``accepted`` (with the attempt's token); the carrier
        never calls back about an attempt it refused."""
        m = self.model
        if claim.released and kind != "accepted":
            return
        end = EndFacts(Outcome(outcome)) if kind == "ended" else None
        token = claim.token if kind == "accepted" else ""
        result = self.run(
            self.queue.event(claim.call_id, claim.attempt, kind, token=token, end=end)
        )
        call = m.calls[claim.call_id]
        expected = self._event_code(call, claim, kind)
        assert result.code == expected, (claim, kind, outcome, result, call)
        if expected != "ok":
            return
        if kind == "accepted" or kind == "ringing":
            call.status, call.phase = S.RINGING, 1
        elif kind == "answered":
            call.status, call.phase = S.IN_PROGRESS, 2
        elif kind == "machine":
            call.machine = True
        else:
            m.settle(call, outcome, m.r0)
        assert result.status == call.status, (result, call)

    @staticmethod
    def _event_code(call: MCall, claim: Claim, kind: str) -> str:
        if claim.attempt != call.attempts:
            return "stale"
        if kind == "accepted":
            if call.phase >= 3:
                return "dup"
            if claim.token != call.token:
                return "token"
            return "dup" if call.phase >= 1 else "ok"
        if kind == "machine":
            return "dup" if call.phase >= 3 or call.status in TERMINAL else "ok"
        if call.phase >= PHASE[kind] or call.status in TERMINAL:
            return "dup"
        return "ok"

    @precondition(lambda self: self.model.claims)
    @rule(data=st.data(), old=st.integers(0, 3))
    def release(self, data: st.DataObject, old: int) -> None:
        """The dispatcher gives an attempt back: the carrier refused the dial request (mostly
        for an attempt being dialed; now and then a late or repeated one)."""
        m = self.model
        dialing = [c for c in m.claims if m.calls[c.call_id].status == S.DIALING]
        claim = data.draw(st.sampled_from(dialing if dialing and old else m.claims))
        request = self.specs[claim.call_id]
        claimed = ClaimedCall(claim.call_id, claim.attempt, claim.token, request, 0)
        result = self.run(self.queue.release(claimed, "test refusal"))
        call = m.calls[claim.call_id]
        if claim.token != call.token:
            assert result.code == "token", (claim, result, call)
            return
        if claim.attempt != call.attempts or call.phase != 0:
            assert result.code == "stale", (claim, result, call)
            return
        assert result.code == "ok", (claim, result, call)
        claim.released = True
        m.handed.discard((claim.call_id, claim.attempt))
        call.attempts -= 1
        call.token = ""
        # The attempt before is the current one again, and it is over.
        call.phase = 3 if call.attempts else 0
        m.released += 1
        if call.campaign:
            m.campaign(call).released += 1
        if call.cancel_requested or m.campaign(call).status == "cancelled":
            m.finish(call, S.CANCELLED)
        else:
            call.status = S.QUEUED
        assert result.status == call.status, (result, call)

    # -- reaper, cancel, control ----------------------------------------------------------------
    @rule(hours=st.sampled_from([0, 0, 1, 1, 2, 5, 24]))
    def time_passes(self, hours: int) -> None:
        """The clock jumps forward by whole hours (the claim's; see the module docstring),
        and the reaper runs."""
        m = self.model
        m.offset += hours * HOUR
        over = [c for c in m.live() if c.claimed_offset + LIFE_MS <= 0 and c.phase < 3]
        result = self.run(self.queue.reap())
        assert result.lost_attempts == len(over), (result, over)
        for call in sorted(over, key=lambda c: c.call_id):
            # Longest life passed with no word of the end: lost when nothing at all was heard,
            # else what was heard says (a person answered: completed; never: failed).
            m.settle(call, ("lost", "failed", "completed")[call.phase], m.r0)

    def cancel(self, call: MCall) -> None:
        m = self.model
        result = self.run(self.queue.cancel(call.call_id))
        if call.status in TERMINAL:
            assert result.code == "final", (result, call)
        elif call.status in LIVE:
            assert result.code == "hangup", (result, call)
            call.cancel_requested = True
        else:
            assert result.code == "cancelled", (result, call)
            m.finish(call, S.CANCELLED)

    @rule(
        what=st.sampled_from(["call", "queue", "window", "ca", "cb", "cc"]),
        op=st.sampled_from(["pause", "resume", "pause", "resume", "cancel"]),
        window=st.integers(-1, 4),
        data=st.data(),
    )
    def control(self, what: str, op: str, window: int, data: st.DataObject) -> None:
        """Cancel a call; pause or resume the queue; pause, resume or cancel a campaign;
        change campaign "ca"'s calling window (or take it away)."""
        if what == "call":
            m = self.model
            if m.calls:
                self.cancel(m.calls[data.draw(st.sampled_from(sorted(m.calls)))])
        elif what == "queue":
            self.run(self.queue.set_paused(op == "pause"))
            self.model.paused = op == "pause"
        elif what == "window":
            self.set_window(window)
        else:
            self.campaign_control(what, op)

    def campaign_control(self, campaign: str, op: str) -> None:
        m = self.model
        cp = m.campaigns[campaign]
        if not cp.exists:
            return
        if op == "cancel":
            self.run(self.engine.cancel(campaign))
            cp.status = "cancelled"
            for call in m.calls.values():
                if call.campaign == campaign and call.status in (S.QUEUED, S.SCHEDULED):
                    m.finish(call, S.CANCELLED)
            return
        change = self.engine.pause(campaign) if op == "pause" else self.engine.resume(campaign)
        if cp.status == "cancelled":
            with pytest.raises(CampaignStateConflict):
                self.run(change)
            return
        status = self.run(change)
        if op == "pause" and cp.status in ("active", "completed"):
            cp.status = "paused"
        elif op == "resume" and cp.status == "paused":
            cp.status = "active"
            self._adopt_parked()
        assert status == cp.status, (campaign, op, status, cp)
        if op == "resume" and cp.status == "active" and cp.auto and not m.open_calls(campaign):
            cp.status = "completed"  # after the answer: stats_flush completes it

    def set_window(self, choice: int) -> None:
        window = self.windows[choice] if choice >= 0 else None
        fields = {"win": window.encode() if window else ""}
        # The recheck of the calls the old window parked runs on the model's clock.
        self.run(self.engine.configure("ca", fields, recheck_budget_s=0))
        self.run(self.engine.recheck_parked("ca", at_ms=self.model.now))
        self.model.campaigns["ca"].window = window
        self._adopt_parked()

    def _adopt_parked(self) -> None:
        """Calls parked for "ca"'s window are looked at again: due now if the window is open
        (queued), else due later. (Which ones the engine looks at depends on the server clock
        too, which the model does not move: a call it leaves keeps its due time.)"""
        m = self.model
        window = m.campaigns["ca"].window
        parked = [c for c in m.calls.values() if c.parked and c.status == S.SCHEDULED]
        states = self.run(self._states([c.call_id for c in parked]))
        for call in parked:
            status, due = states[call.call_id]
            assert status in (S.SCHEDULED, S.QUEUED), (call, status)
            if status == S.QUEUED:
                assert next_open(window, m.now) == m.now, (call, "queued in a closed window")
                call.status, call.due, call.parked = S.QUEUED, None, False
            else:
                assert due is not None and (due == call.due or due > m.now), (call, due)
                call.due, call.approx = due, False

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def engine_agrees(self) -> None:
        assert time.monotonic() - self.started < 600, (
            "the model's clock margins need short examples"
        )
        self.run(self.check())

    async def check(self) -> None:
        m, k = self.model, self.queue.keys
        ids = sorted(m.calls)
        pipe = self.client.pipeline(transaction=False)
        for call_id in ids:
            pipe.hmget(k.call(call_id), "st", "a")
        pipe.zrange(k.scheduled, 0, -1, withscores=True)
        pipe.zrange(k.live, 0, -1, withscores=True)
        pipe.zrange(k.finished, 0, -1)
        pipe.zrange(k.dead, 0, -1)
        pipe.zrange(k.campaign_index, 0, -1)
        for cp in CAMPAIGNS:
            pipe.zrange(k.campaign_ready(cp), 0, -1)
            pipe.zrange(k.campaign_live(cp), 0, -1)
            pipe.hgetall(k.campaign_stats(cp))
            pipe.hget(k.campaign(cp), "st")
        pipe.hgetall(k.stats)
        replies = await pipe.execute()
        rows, rest = replies[: len(ids)], replies[len(ids) :]
        sched, live, finished, dead, index = rest[:5]
        per_campaign = {cp: rest[5 + 4 * i : 9 + 4 * i] for i, cp in enumerate(CAMPAIGNS)}
        stats = {_text(a): int(b) for a, b in rest[-1].items()}

        # Every call: its status and attempt number, and exactly the index of its state.
        for call_id, (status, attempts) in zip(ids, rows, strict=True):
            call = m.calls[call_id]
            assert status is not None, f"{call_id} lost: {call}"
            assert _text(status) == call.status, (call_id, _text(status), call)
            assert int(attempts or 0) == call.attempts, (call_id, attempts, call)
        sched_ids = {_text(i): int(s) for i, s in sched}
        assert set(sched_ids) == {c.call_id for c in m.calls.values() if c.status == S.SCHEDULED}
        slack = int((time.monotonic() - self.started) * 1000) + 3000
        for call_id, due in sched_ids.items():
            call = m.calls[call_id]
            if call.approx:  # from the server clock, a little after R0
                assert call.due is not None and call.due <= due <= call.due + slack, (due, call)
            else:
                assert due == call.due, (call_id, due, call)
        live_ids = {_text(i): int(s) for i, s in live}
        assert set(live_ids) == {c.call_id for c in m.live()}, (live_ids, m.live())
        for call_id, life_end in live_ids.items():
            assert life_end == m.r0 + m.calls[call_id].claimed_offset + LIFE_MS
        assert sum(1 for end in live_ids.values() if end > m.now) <= CAP
        counted_ca = [
            i for i, end in live_ids.items() if end > m.now and m.calls[i].campaign == "ca"
        ]
        assert len(counted_ca) <= CA_CAP, counted_ca
        assert {_text(i) for i in finished} == {
            c.call_id for c in m.calls.values() if c.status in TERMINAL
        }
        assert {_text(i) for i in dead} == {
            c.call_id for c in m.calls.values() if c.status == S.FAILED
        }
        indexed = {_text(i) for i in index}
        for cp, (ready, cp_live, cp_stats_raw, cp_status) in per_campaign.items():
            mc = m.campaigns[cp]
            queued = {
                c.call_id for c in m.calls.values() if c.campaign == cp and c.status == S.QUEUED
            }
            assert {_text(i) for i in ready} == queued, (cp, ready, queued)
            mine = {c.call_id for c in m.live() if c.campaign == cp}
            assert {_text(i) for i in cp_live} == mine, (cp, cp_live, mine)
            if cp and mc.exists:
                assert _text(cp_status) == mc.status, (cp, _text(cp_status), mc.status)
            # reachable: an active campaign with queued calls is in the claim's index
            if queued and mc.status == "active":
                assert cp in indexed, f"campaign {cp!r} has queued calls but is not indexed"
            if not cp:
                continue
            cp_stats = {_text(a): int(b) for a, b in cp_stats_raw.items()}
            assert cp_stats.get("enqueued", 0) == mc.enqueued, (cp, cp_stats, mc)
            assert cp_stats.get("open", 0) == m.open_calls(cp), (cp, cp_stats)
            assert cp_stats.get("dialed", 0) == mc.dialed, (cp, cp_stats, mc)
            assert cp_stats.get("released", 0) == mc.released, (cp, cp_stats, mc)
            for status in TERMINAL:
                assert cp_stats.get(f"final:{status}", 0) == mc.finals[status], (cp, cp_stats)
            for outcome in Outcome:
                assert cp_stats.get(f"o:{outcome}", 0) == mc.outcomes[outcome], (cp, cp_stats)
        assert stats.get("enqueued", 0) == m.enqueued, stats
        assert stats.get("dialed", 0) == m.dialed, stats
        assert stats.get("released", 0) == m.released, stats
        for status in TERMINAL:
            assert stats.get(f"final:{status}", 0) == m.finals[status], stats
        for outcome in Outcome:
            assert stats.get(f"o:{outcome}", 0) == m.outcomes[outcome], stats

        # The views: the queue's snapshot and each campaign's progress, against the model and
        # against each other.
        snap = await queue_snapshot(self.queue)
        counts = Counter(c.status for c in m.calls.values())
        assert snap.queued == counts[S.QUEUED] and snap.scheduled == counts[S.SCHEDULED]
        assert snap.paused == m.paused
        really_live = [c for c in m.live() if c.claimed_offset + LIFE_MS > 0]  # server clock
        assert snap.live_slots == len(really_live), (snap.live_slots, really_live)
        for status in TERMINAL:
            assert snap.final_by_status[status] == counts[status]
        assert snap.enqueued == sum(counts.values())
        named = [cp for cp in CAMPAIGNS if cp and m.campaigns[cp].exists]
        states = await campaign_states(self.queue, named)
        totals: Counter[str] = Counter()
        for cp, state in zip(named, states, strict=True):
            assert state is not None, cp
            mine = [c for c in m.calls.values() if c.campaign == cp]
            assert state.status == m.campaigns[cp].status
            assert state.queued == sum(1 for c in mine if c.status == S.QUEUED)
            assert state.open == sum(1 for c in mine if c.status not in TERMINAL)
            assert state.live == sum(1 for c in really_live if c.campaign == cp)
            for status in TERMINAL:
                totals[status] += state.counters.final_by_status[status]
        loose = Counter(c.status for c in m.calls.values() if not c.campaign)
        for status in TERMINAL:
            assert totals[status] + loose[status] == snap.final_by_status[status]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
def model_loop(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    """The machine runs synchronously; the engine is async: one loop and one client for the
    whole run."""
    loop = asyncio.new_event_loop()
    client = connect(redis_url)
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


#: pytest-timeout's limit: the long profile runs as long as it needs.
TIMEOUT_S = 0 if os.environ.get("ENGINE_MODEL_PROFILE") == "chaos" else 300


@pytest.mark.model
@pytest.mark.timeout(TIMEOUT_S)
def test_engine_follows_the_model(model_loop: tuple[asyncio.AbstractEventLoop, Any]) -> None:
    EngineModel.loop, EngineModel.client = model_loop
    run_state_machine_as_test(EngineModel, settings=profile())


# -- what the model found (each shrunk to its few steps) --------------------------------------


async def test_late_callback_of_the_attempt_before_a_release_changes_nothing(
    make_queue: MakeQueue,
) -> None:
    """Attempt 1 ends busy; attempt 2 is claimed and given back (the carrier refused it), so
    attempt 1 is the current one again. A repeated hangup callback of attempt 1 (carriers
    retry callbacks; the event writer replays) once found its phase reset by the claim and
    settled it a second time: the queued call was scheduled while still in its ready set, and
    the outcome was counted twice."""
    q = make_queue(retry=RetryPolicy(base_delay_s=0, jitter=0))
    await q.enqueue(spec("c1"))
    (await q.claim(1)).calls[0]
    assert (await q.ended("c1", 1, EndFacts(Outcome.BUSY))).status == S.SCHEDULED
    second = (await q.claim(1)).calls[0]
    assert second.attempt == 2
    assert (await q.release(second, "refused")).status == S.QUEUED

    late = await q.ended("c1", 1, EndFacts(Outcome.BUSY))
    assert (late.code, late.status) == ("dup", S.QUEUED)
    assert (await q.event("c1", 1, "ringing")).code == "dup"
    assert await q.client.zscore(q.keys.scheduled, "c1") is None
    assert await q.client.zscore(q.keys.campaign_ready("campaign-123"), "c1") is not None
    assert (await q.client.hget(q.keys.stats, "o:busy")) in (b"1", "1")
    assert [c.call_id for c in (await q.claim(1)).calls] == ["c1"]


@pytest.mark.parametrize("way", ["retry", "release"])
async def test_an_answering_machine_is_one_attempts_verdict(
    make_queue: MakeQueue, way: str
) -> None:
    """A machine detected on attempt 1, which then failed (or was given back), once made a
    person answering the next attempt count as a machine: the call failed."""
    q = make_queue(retry=RetryPolicy(base_delay_s=0, jitter=0))
    await q.enqueue(spec("c1"))
    first = (await q.claim(1)).calls[0]
    assert (await q.event("c1", 1, "machine")).code == "ok"
    if way == "retry":
        await q.ended("c1", 1, EndFacts(Outcome.FAILED))
    else:
        await q.release(first, "refused")
    nxt = (await q.claim(1)).calls[0]
    done = await q.ended("c1", nxt.attempt, EndFacts(Outcome.COMPLETED))
    assert done.status == S.COMPLETED
    record = await q.get("c1")
    assert record is not None and record.attempts[-1].outcome == Outcome.COMPLETED
