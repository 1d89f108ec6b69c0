"""/api/calls: queue one call, read it, cancel it, list live calls."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response, status

from callqueue.api.bodies import json_body_doc, read_model
from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.api.errors import NO_WEBHOOK_SECRET, NOT_DURABLE_DOC, ApiError, error_doc
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import live_calls
from callqueue.models import CallStatus, EnqueueState
from callqueue.schemas.calls import SEED_CALL, QueueCallRequest
from callqueue.schemas.specs import single_spec
from callqueue.schemas.views import (
    ActiveCallsView,
    ActiveCallView,
    CallView,
    CancelView,
    QueuedCall,
    at_or_none,
)

router = APIRouter(prefix="/api/calls", tags=["calls"])

CallId = Annotated[str, Path(description="The call's id.", examples=["call-456"])]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: error_doc("No call has this id (or it expired by retention).")
}


@router.post(
    "/queue",
    status_code=status.HTTP_201_CREATED,
    summary="Queue a call",
    response_model=QueuedCall,
    openapi_extra=json_body_doc(QueueCallRequest, {"seed": {"value": SEED_CALL}}),
    responses={
        200: {
            "model": QueuedCall,
            "description": "Replay: this call id was queued before with "
            "the same body; nothing queued twice.",
        },
        409: error_doc("This custom_call_id is taken by a different request."),
        413: error_doc("Body over 64 KB."),
        503: NOT_DURABLE_DOC,
    },
)
async def queue_call(request: Request) -> Response:
    """Queues one outbound call. It is dialed by priority, within the global dial rate and
    live-call cap, at or after `scheduled_at`, with up to `max_retries` further attempts."""
    # The busiest route: it reads its body and writes its answer itself (see api/bodies.py);
    # the app usually answers it before routing even starts (api/hot.py).
    body = await read_model(request, QueueCallRequest)
    code, answer = await queue_one(request.app.state, body)
    return Response(answer, code, media_type="application/json")


async def queue_one(state: Any, body: QueueCallRequest) -> tuple[int, bytes]:
    """Queues a validated request: (status code, JSON answer), or an ApiError. ``state`` is
    the app's state (settings, runtime, campaign defaults)."""
    if body.webhook_url and not state.settings.webhook_secret:
        raise ApiError(422, NO_WEBHOOK_SECRET, ("body", "webhook_url"), "webhook_secret")
    queue: CallQueue = state.runtime.queue
    defaults = await state.campaign_defaults.get([body.campaign_id])
    spec = single_spec(body, defaults)
    result = await queue.enqueue(spec)
    if result.state == EnqueueState.CONFLICT:
        raise ApiError(
            409,
            f"call id {spec.call_id!r} is already used by a different request",
            ("body", "custom_call_id"),
            "conflict",
        )
    if result.state == EnqueueState.CAMPAIGN_CANCELLED:
        raise ApiError(
            409, "the campaign is cancelled", ("body", "campaign_id"), "campaign_cancelled"
        )
    if result.state == EnqueueState.DNC or result.status is None:
        raise ApiError(422, "is on the do-not-call list", ("body", "phone_number"), "do_not_call")
    scheduled = at_or_none(spec.scheduled_at_ms)
    answer = {
        "call_id": result.call_id,
        "status": result.status.value,
        "priority": spec.priority.value,
        "scheduled_at": scheduled.isoformat().replace("+00:00", "Z") if scheduled else None,
        "phone_number": spec.phone_number,
        "created": result.state == EnqueueState.CREATED,
    }
    code = status.HTTP_200_OK if result.state == EnqueueState.EXISTS else status.HTTP_201_CREATED
    return code, orjson.dumps(answer)


@router.get("/active", summary="Live calls")
async def active_calls(queue: QueueDep, settings: SettingsDep) -> ActiveCallsView:
    """Calls dialing, ringing or in progress now, oldest first, with how long each has been
    live."""
    now_ms, calls = await live_calls(queue)
    return ActiveCallsView(
        count=len(calls),
        max_concurrent_calls=settings.max_concurrent_calls,
        calls=[ActiveCallView.of(now_ms, c) for c in calls],
    )


async def _call(queue: CallQueue, call_id: str) -> CallView:
    record = await queue.get(call_id)
    if record is None:
        raise ApiError(404, f"no call with id {call_id!r}", ("path", "call_id"), "not_found")
    return CallView.of(record)


@router.get("/{call_id}/status", summary="Call status", responses=NOT_FOUND)
async def call_status(queue: QueueDep, call_id: CallId) -> CallView:
    """Status, attempts (outcome, carrier call id, times, durations, hangup cause), history and
    the next attempt's due time of one call."""
    return await _call(queue, call_id)


@router.get("/{call_id}", summary="Call details", responses=NOT_FOUND)
async def call_details(queue: QueueDep, call_id: CallId) -> CallView:
    """The same as `/status`; the voice bot reads `call_config.variables` from here."""
    return await _call(queue, call_id)


@router.delete(
    "/{call_id}",
    summary="Cancel a call",
    responses={
        202: {
            "model": CancelView,
            "description": "The call is live: the carrier is asked to "
            "hang up; it ends as cancelled and is never retried.",
        },
        409: error_doc("The call is already completed, failed or cancelled."),
        **NOT_FOUND,
    },
)
async def cancel_call(queue: QueueDep, call_id: CallId, response: Response) -> CancelView:
    """Cancels a scheduled or queued call at once (200); hangs up a live one (202)."""
    result = await queue.cancel(call_id)
    if result.code == "not_found":
        raise ApiError(404, f"no call with id {call_id!r}", ("path", "call_id"), "not_found")
    if result.code == "final":
        final = result.status.value if result.status else "final"
        raise ApiError(
            409, f"call {call_id!r} is already {final}", ("path", "call_id"), "already_final"
        )
    live = result.code == "hangup"
    if live:
        response.status_code = status.HTTP_202_ACCEPTED
    return CancelView(
        call_id=call_id,
        status=result.status or CallStatus.CANCELLED,
        cancelled=not live,
        hangup_requested=live,
    )
