"""/api/queue: queue-wide status and the pause switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.engine.reads import queue_snapshot
from callqueue.schemas.views import CallView, QueueStatusView

router = APIRouter(prefix="/api/queue", tags=["queue"])


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
