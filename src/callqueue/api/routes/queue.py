"""/api/queue: queue-wide status and the pause switch."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.api.views import CallView, at
from callqueue.engine.reads import QueueSnapshot, queue_snapshot

router = APIRouter(prefix="/api/queue", tags=["queue"])


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


class PauseView(BaseModel):
    paused: bool = Field(..., description="True: no new dials start (live calls go on).")


@router.get("/status", summary="Queue status")
async def queue_status(queue: QueueDep, settings: SettingsDep) -> QueueStatusView:
    """Calls by status and by priority, scheduled calls, live calls against
    MAX_CONCURRENT_CALLS, dial rate against RATE_LIMIT_PER_SECOND, success and failure rates,
    average call duration, live workers, whether dispatch is paused, and what stops workers
    from dialing (a dead agent server, a carrier that refuses our credentials or cannot be
    reached)."""
    snap = await queue_snapshot(queue)
    max_live, rate = settings.max_concurrent_calls, settings.rate_limit_per_second
    return QueueStatusView.of(queue.name, snap, max_live, rate, await queue.problems())


class DeadLetterView(BaseModel):
    count: int = Field(..., description="Failed calls listed (most recent first).")
    calls: list[CallView] = Field(..., description="The failed calls, with their attempts.")


@router.get("/dead-letter", summary="Failed calls (dead-letter view)")
async def dead_letter(
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> DeadLetterView:
    """Calls that failed for good (retries exhausted, or an outcome that is not retried),
    most recent first, with every attempt's outcome and hangup cause. Kept for
    RETENTION_SECONDS."""
    records = await queue.records(await queue.dead_letter(limit))
    return DeadLetterView(count=len(records), calls=[CallView.of(r) for r in records])


@router.post("/pause", summary="Pause dispatch")
async def pause(queue: QueueDep) -> PauseView:
    """Every worker stops starting new dials; calls already live go on. Queuing still works."""
    await queue.set_paused(True)
    return PauseView(paused=True)


@router.post("/resume", summary="Resume dispatch")
async def resume(queue: QueueDep) -> PauseView:
    """Workers start dialing again."""
    await queue.set_paused(False)
    return PauseView(paused=False)
