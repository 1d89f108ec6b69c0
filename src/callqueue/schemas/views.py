"""Response bodies about calls, built from the engine's plain records. Times are UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from callqueue.engine.reads import LiveCall, QueueSnapshot
from callqueue.models import Attempt, CallRecord, CallStatus, Outcome, Priority


def at(ms: int) -> datetime:
    """Epoch milliseconds (server clock) as a UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def at_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else at(ms)


class QueuedCall(BaseModel):
    call_id: str = Field(
        ..., description="The call's id: custom_call_id, or one made for it.",
        examples=["call-456"],
    )  # fmt: skip
    status: CallStatus = Field(
        ..., description="Its status now: queued, or scheduled when due later.",
        examples=["queued"],
    )  # fmt: skip
    priority: Priority = Field(..., description="As queued.", examples=["normal"])
    scheduled_at: datetime | None = Field(
        None, description="When the call is due; null: as soon as possible.",
        examples=["2025-01-15T14:30:00Z"],
    )  # fmt: skip
    phone_number: str = Field(
        ..., description="The number called, in E.164 form.", examples=["+919123456789"]
    )
    created: bool = Field(
        ..., description="False when the call was queued before by the same request: nothing "
        "was queued twice.",
    )  # fmt: skip


class AttemptView(BaseModel):
    number: int = Field(..., description="1 for the first attempt, 2 for the first retry, ...")
    outcome: Outcome | None = Field(
        None, description="How the attempt ended; null while it is under way."
    )
    carrier_call_id: str | None = Field(None, description="The carrier's id for this attempt.")
    started_at: datetime = Field(..., description="When the dial was granted.")
    answered_at: datetime | None = Field(None, description="When the callee answered.")
    ended_at: datetime | None = Field(None, description="When the attempt ended.")
    duration_seconds: float | None = Field(None, description="Talk time, per the carrier.")
    bill_duration_seconds: float | None = Field(None, description="Billed time, per the carrier.")
    hangup_cause: str | None = Field(
        None, description="The carrier's hang-up cause.", examples=["NORMAL_CLEARING"]
    )

    @classmethod
    def of(cls, a: Attempt) -> AttemptView:
        return cls(
            number=a.number,
            outcome=a.outcome,
            carrier_call_id=a.carrier_call_id or None,
            started_at=at(a.started_ms),
            answered_at=at_or_none(a.answered_ms),
            ended_at=at_or_none(a.ended_ms),
            duration_seconds=a.duration_s,
            bill_duration_seconds=a.bill_duration_s,
            hangup_cause=a.hangup_cause or None,
        )


class HistoryView(BaseModel):
    at: datetime = Field(..., description="When the status changed (or the note was made).")
    status: CallStatus = Field(..., description="The status from then on.")
    note: str = Field("", description="Why, when there is more to say.")


class CallView(BaseModel):
    call_id: str = Field(..., description="The call's id.", examples=["call-456"])
    status: CallStatus = Field(..., description="Its status now.", examples=["completed"])
    outcome: Outcome | None = Field(None, description="Outcome of the last finished attempt.")
    priority: Priority = Field(..., description="As queued.", examples=["normal"])
    phone_number: str = Field(..., description="E.164.", examples=["+919123456789"])
    campaign_id: str | None = Field(None, description="As queued.", examples=["campaign-123"])
    batch_id: str | None = Field(None, description="The bulk batch it came in, if any.")
    call_config: dict[str, Any] = Field(
        ..., description="As queued (normalised); the voice bot reads `variables` from here."
    )
    max_retries: int | None = Field(
        ..., description="Further attempts allowed after the first; null: the campaign's retry "
        "policy decides (3 when it sets none).",
    )  # fmt: skip
    time_zones: list[str] = Field(
        ..., description="The callee's time zones, for calling windows (empty: unknown).",
        examples=[["Asia/Kolkata"]],
    )  # fmt: skip
    scheduled_at: datetime | None = Field(None, description="As queued.")
    created_at: datetime = Field(..., description="When it was queued.")
    updated_at: datetime = Field(..., description="Last change.")
    next_attempt_at: datetime | None = Field(
        None, description="When the next attempt is due (scheduled calls and retries)."
    )
    cancel_requested: bool = Field(
        ..., description="A cancel arrived while the call was live: it is being hung up."
    )
    attempts: list[AttemptView] = Field(..., description="Every attempt, the first first.")
    history: list[HistoryView] = Field(..., description="Status changes, oldest first.")

    @classmethod
    def of(cls, record: CallRecord) -> CallView:
        spec = record.spec
        return cls(
            call_id=record.call_id,
            status=record.status,
            outcome=record.outcome,
            priority=spec.priority,
            phone_number=spec.phone_number,
            campaign_id=spec.campaign_id,
            batch_id=spec.batch_id,
            call_config=spec.config,
            max_retries=spec.max_retries,
            time_zones=list(spec.time_zones),
            scheduled_at=at_or_none(spec.scheduled_at_ms),
            created_at=at(record.created_ms),
            updated_at=at(record.updated_ms),
            next_attempt_at=at_or_none(record.next_attempt_ms),
            cancel_requested=record.cancel_requested,
            attempts=[AttemptView.of(a) for a in record.attempts],
            history=[HistoryView(at=at(h.at_ms), status=h.status, note=h.note)
                     for h in record.history],
        )  # fmt: skip


class CancelView(BaseModel):
    call_id: str = Field(..., description="The call's id.", examples=["call-456"])
    status: CallStatus = Field(
        ..., description="cancelled, or the live status while the hang-up is under way."
    )
    cancelled: bool = Field(..., description="True when the call is cancelled already.")
    hangup_requested: bool = Field(
        ..., description="True for a live call: the carrier is asked to hang up; the call "
        "then ends as cancelled and is never retried.",
    )  # fmt: skip


class ActiveCallView(BaseModel):
    call_id: str = Field(..., description="The call's id.")
    status: CallStatus = Field(..., description="dialing, ringing or in_progress.")
    attempt: int = Field(..., description="Attempt number.")
    phone_number: str = Field(..., description="E.164.")
    campaign_id: str | None = Field(None, description="As queued.")
    priority: Priority = Field(..., description="As queued.")
    carrier_call_id: str | None = Field(None, description="Once the carrier has given one.")
    started_at: datetime = Field(..., description="When the dial was granted.")
    answered_at: datetime | None = Field(None, description="When the callee answered.")
    seconds_live: float = Field(..., description="Seconds since the dial was granted.")
    cancel_requested: bool = Field(..., description="A hang-up has been asked for.")

    @classmethod
    def of(cls, now_ms: int, c: LiveCall) -> ActiveCallView:
        return cls(
            call_id=c.call_id,
            status=c.status,
            attempt=c.attempt,
            phone_number=c.phone_number,
            campaign_id=c.campaign_id,
            priority=c.priority,
            carrier_call_id=c.carrier_call_id,
            started_at=at(c.started_ms),
            answered_at=at_or_none(c.answered_ms),
            seconds_live=round(max(0, now_ms - c.started_ms) / 1000, 3),
            cancel_requested=c.cancel_requested,
        )


class ActiveCallsView(BaseModel):
    count: int = Field(..., description="Live calls listed.")
    max_concurrent_calls: int = Field(..., description="MAX_CONCURRENT_CALLS (0: no cap).")
    calls: list[ActiveCallView] = Field(..., description="Oldest attempt first.")


class LiveCallsView(BaseModel):
    current: int = Field(..., description="Calls holding a live-call slot now.")
    limit: int = Field(..., description="MAX_CONCURRENT_CALLS (0: no cap).")


class DialRateView(BaseModel):
    last_second: int = Field(..., description="Dials granted in the last second.")
    limit_per_second: float = Field(..., description="RATE_LIMIT_PER_SECOND (0: no limit).")
    last_minute: int = Field(..., description="Dials granted in the last minute.")
    peak_per_second: int = Field(..., description="Most dials in one second, last minute.")


class WorkersView(BaseModel):
    alive: int = Field(..., description="Dispatchers with a heartbeat in the last 10 s.")
    ids: list[str] = Field(..., description="Their ids (host:pid:random).")


class QueueStatusView(BaseModel):
    queue: str = Field(..., description="QUEUE_NAME.", examples=["default"])
    paused: bool = Field(..., description="Dispatch is paused: nothing new is dialed.")
    pending: int = Field(..., description="Calls waiting: queued + scheduled.")
    counts: dict[str, int] = Field(
        ..., description="Calls by status: queued, scheduled and live ones now; completed, "
        "failed and cancelled since the queue began.",
    )  # fmt: skip
    queued_by_priority: dict[str, int] = Field(..., description="Queued calls by priority.")
    scheduled: int = Field(..., description="Calls waiting for a time (scheduled_at, retry).")
    live_calls: LiveCallsView = Field(..., description="Live calls against the cap.")
    dial_rate: DialRateView = Field(..., description="Dials started against the limit.")
    enqueued_total: int = Field(..., description="Calls ever queued.")
    dialed_total: int = Field(..., description="Dials ever granted (attempts).")
    attempt_outcomes: dict[str, int] = Field(..., description="Finished attempts by outcome.")
    success_rate: float | None = Field(
        None, description="Completed calls over completed + failed ones; null before any."
    )
    failure_rate: float | None = Field(None, description="1 - success_rate.")
    average_call_duration_seconds: float | None = Field(
        None, description="Mean talk time of completed attempts."
    )
    workers: WorkersView = Field(..., description="Dispatchers alive.")
    dispatch_blocked: dict[str, str] = Field(
        default_factory=dict,
        description="What workers report stops them placing calls, by part (carrier: the "
        "carrier refused our credentials or cannot be reached; agent: the agent server is "
        "down), with the reason.",
    )
    server_time: datetime = Field(..., description="Redis server clock, for the figures.")

    @classmethod
    def of(
        cls,
        name: str,
        snap: QueueSnapshot,
        max_live: int,
        rate: float,
        blocked: dict[str, str] | None = None,
    ) -> QueueStatusView:
        return cls(
            queue=name,
            paused=snap.paused,
            pending=snap.queued + snap.scheduled,
            counts={s.value: n for s, n in snap.counts.items()},
            queued_by_priority={p.value: n for p, n in snap.queued_by_priority.items()},
            scheduled=snap.scheduled,
            live_calls=LiveCallsView(current=snap.live_slots, limit=max_live),
            dial_rate=DialRateView(
                last_second=snap.dials_last_second,
                limit_per_second=rate,
                last_minute=snap.dials_last_minute,
                peak_per_second=snap.peak_dials_per_second,
            ),
            enqueued_total=snap.enqueued,
            dialed_total=snap.dialed,
            attempt_outcomes={o.value: n for o, n in snap.outcomes.items()},
            success_rate=snap.success_rate,
            failure_rate=snap.failure_rate,
            average_call_duration_seconds=snap.average_duration_s,
            workers=WorkersView(alive=len(snap.workers), ids=snap.workers),
            dispatch_blocked=blocked or {},
            server_time=at(snap.now_ms),
        )
