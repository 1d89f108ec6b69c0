"""The vocabulary shared by every layer: statuses, priorities, outcomes, and plain records.

Pydantic lives at the HTTP edge (``callqueue.api``); inside, records are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is served first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _PRIORITY_BY_RANK[rank]


_PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_PRIORITY_BY_RANK = {rank: p for p, rank in _PRIORITY_RANK.items()}


class CallStatus(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DIALING = "dialing"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_live(self) -> bool:
        return self in LIVE_STATUSES


TERMINAL_STATUSES = frozenset({CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED})
LIVE_STATUSES = frozenset({CallStatus.DIALING, CallStatus.RINGING, CallStatus.IN_PROGRESS})

# The one table of allowed transitions. The Lua scripts receive it verbatim (see
# engine/scripts.py) and refuse any other move, so Python and Redis cannot disagree.
S = CallStatus
TRANSITIONS: dict[CallStatus, frozenset[CallStatus]] = {
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    # queued -> scheduled: outside its calling window when its turn came, it waits for the
    # window to open.
    S.QUEUED: frozenset({S.DIALING, S.SCHEDULED, S.CANCELLED}),
    # dialing -> queued/scheduled: the carrier refused the request, no attempt used.
    S.DIALING: frozenset(
        {S.RINGING, S.IN_PROGRESS, S.QUEUED, S.SCHEDULED, S.COMPLETED, S.FAILED, S.CANCELLED}
    ),
    S.RINGING: frozenset({S.IN_PROGRESS, S.SCHEDULED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.SCHEDULED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
del S


class Outcome(StrEnum):
    """How one attempt ended."""

    COMPLETED = "completed"  # answered by a person and hung up normally
    BUSY = "busy"
    NO_ANSWER = "no_answer"  # includes ring timeout
    FAILED = "failed"  # carrier or network failure after the carrier accepted the call
    MACHINE = "machine"  # answering machine detected
    REJECTED = "rejected"  # the carrier refused the number itself: never retried
    CANCELLED = "cancelled"  # hung up because the call was cancelled
    LOST = "lost"  # no word from the carrier within the attempt's longest possible life
    # The carrier refused the call after taking the request (its concurrency limit): nobody was
    # called, so the attempt is given back unused and the dial rate backs off.
    THROTTLED = "throttled"


class CarrierEvent(StrEnum):
    """Events that move an attempt forward. Order matters: a lower one never follows a higher."""

    ACCEPTED = "accepted"  # the carrier took the dial request (from the dialing worker)
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"
    MACHINE = "machine"  # answering machine detected; the attempt will end as `machine`


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which outcomes earn another attempt, and how long to wait before it."""

    retry_on: frozenset[Outcome] = frozenset(
        {Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED, Outcome.LOST}
    )
    base_delay_s: float = 30.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.1  # +/- this fraction of the delay, spreads retries of a batch
    # An answering machine: retried when MACHINE is in retry_on; else, with this set, the call
    # counts as done (completed, the attempt's outcome says machine), otherwise it failed.
    machine_is_done: bool = False

    def delay_s(self, attempt: int, rand: float) -> float:
        """Delay before attempt ``attempt + 1``; ``rand`` is uniform in [0, 1)."""
        raw = min(self.max_delay_s, self.base_delay_s * self.factor ** max(0, attempt - 1))
        return max(0.0, raw * (1.0 + self.jitter * (2.0 * rand - 1.0)))


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What the caller asked for; never changes once queued."""

    call_id: str
    phone_number: str  # E.164, e.g. +919123456789
    campaign_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    # Further attempts allowed; None: the campaign's retry policy says (else DEFAULT_RETRIES).
    max_retries: int | None = None
    scheduled_at_ms: int | None = None  # epoch ms; None or past: dial as soon as possible
    batch_id: str | None = None
    body_hash: str = ""  # fingerprint of the request, to tell a replay from a conflict
    # IANA time zones of the callee (a number may span several): a campaign's calling window is
    # checked in each. Empty: unknown (the window's own time zone is used).
    time_zones: tuple[str, ...] = ()
    # Where to POST this call's final status (else its campaign's webhook, if any).
    webhook_url: str | None = None

    @property
    def max_duration_s(self) -> int | None:
        value = self.config.get("max_duration")
        return int(value) if value is not None else None


#: Retries of a call that sets no max_retries, in a campaign whose policy sets none (the seed's
#: default). Mirrored by DEFAULT_RETRIES in engine/lua/_lib.lua.
DEFAULT_RETRIES = 3


class EnqueueState(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # same id, same request: nothing queued twice
    CONFLICT = "conflict"  # same id, different request
    DNC = "dnc"  # the number is on the do-not-call list: nothing queued
    CAMPAIGN_CANCELLED = "campaign_cancelled"  # its campaign was cancelled: nothing queued


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    call_id: str
    state: EnqueueState
    status: CallStatus | None  # None when nothing was queued (dnc)


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    """A call a worker now holds for one dial attempt."""

    call_id: str
    attempt: int
    token: str
    spec: CallSpec
    granted_at_ms: int  # server clock


class ClaimBlock(StrEnum):
    """Why a claim returned fewer calls than asked for."""

    NONE = ""
    EMPTY = "empty"
    PAUSED = "paused"
    RATE = "rate"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class ClaimResult:
    calls: list[ClaimedCall]
    blocked: ClaimBlock
    wait_ms: int | None  # when a limit frees up, if known; None: wait for a wake-up
    next_due_ms: int | None  # server-clock time of the next scheduled call, if any
    server_now_ms: int


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_ms: int
    carrier_call_id: str | None = None
    outcome: Outcome | None = None
    hangup_cause: str | None = None
    answered_ms: int | None = None
    ended_ms: int | None = None
    duration_s: float | None = None
    bill_duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at_ms: int
    status: CallStatus
    note: str = ""


@dataclass(frozen=True, slots=True)
class CallRecord:
    spec: CallSpec
    status: CallStatus
    attempts: list[Attempt]
    history: list[HistoryEntry]
    created_ms: int
    updated_ms: int
    next_attempt_ms: int | None
    outcome: Outcome | None
    cancel_requested: bool

    @property
    def call_id(self) -> str:
        return self.spec.call_id


@dataclass(frozen=True, slots=True)
class EndFacts:
    """What the carrier says about an attempt that ended."""

    outcome: Outcome
    carrier_call_id: str = ""
    hangup_cause: str = ""
    duration_s: float | None = None
    bill_duration_s: float | None = None
    answered_ms: int | None = None
    ended_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EventResult:
    """What an event did. ``applied`` is False for duplicates and stale attempts."""

    applied: bool
    code: str
    status: CallStatus | None = None
    cancel_requested: bool = False
    error: str = ""  # code "error": the script refused the move (a bug, never carrier input)
