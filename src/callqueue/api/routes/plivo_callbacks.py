"""Carrier callbacks: ``POST /api/webhooks/plivo/{ring|hangup|machine}?call_id=..&attempt=..``.

Public (no API key) but signed: every request's Plivo Signature V3 is checked against the URL
Plivo called, rebuilt from PUBLIC_URL (a proxy in front may rewrite the host), with the auth
token; a missing or wrong signature answers 403 and changes nothing. The event then goes
through the engine's one event transition, which is idempotent and order-proof: Plivo retries
callbacks, and a repeated or late one changes nothing.

A signed callback is then checked field by field (``carriers.plivo_events.checked_form``):
Signature V3 signs the fields run together, so a captured callback can be re-shaped without
breaking it. A form that is not what Plivo sends, or that names another call than the
attempt's known carrier id, answers 400 naming the field and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request

from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.api.errors import ApiError, error_doc
from callqueue.carriers.callback_fields import CallbackFieldError
from callqueue.carriers.plivo_events import callback_event, carrier_ids, checked_form
from callqueue.carriers.plivo_signature import verify_v3
from callqueue.models import EventResult

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

#: The field a mismatch names, per carrier.
_ID_FIELD = {"Plivo": "CallUUID", "Twilio": "CallSid"}


def refused_callback(
    carrier: str, call_id: str, attempt: int, error: CallbackFieldError
) -> ApiError:
    """The 400 for a signed callback whose fields are not what the carrier sends (no value
    echoed back). Logged as a warning: it is either a re-shaped replay or a carrier change
    this code must learn."""
    log.warning("%s callback for %s attempt %d refused: %s", carrier, call_id, attempt, error)
    return ApiError(400, error.problem, ("body", error.field), "invalid_callback")


def mismatch(carrier: str, call_id: str, attempt: int, result: EventResult) -> ApiError | None:
    """The 400 for a callback the engine left alone because it names another call than the
    attempt's known carrier id, else None."""
    if result.code != "mismatch":
        return None
    error = CallbackFieldError(_ID_FIELD[carrier], "not the carrier id of this attempt")
    return refused_callback(carrier, call_id, attempt, error)


def public_url_of(request: Request, public_url: str) -> str:
    """The URL the carrier called: PUBLIC_URL + this path + the query as received."""
    query = request.url.query
    return f"{public_url.rstrip('/')}{request.url.path}" + (f"?{query}" if query else "")


@router.post(
    "/plivo/{kind}",
    summary="Plivo call callback (ring, hangup, machine detection)",
    responses={
        400: error_doc(
            "Signed, but a field is not what Plivo sends (a re-shaped callback), or the "
            "callback names another call than the attempt's; `loc` names the field."
        ),
        403: error_doc("Missing or wrong X-Plivo-Signature-V3."),
        422: error_doc("call_id or attempt missing from the URL."),
        503: error_doc("Plivo is not configured here, or Redis is unavailable."),
    },
)
async def plivo_callback(
    kind: Annotated[
        Literal["ring", "hangup", "machine"],
        Path(description="Which callback: ring_url, hangup_url or machine_detection_url."),
    ],
    request: Request,
    queue: QueueDep,
    settings: SettingsDep,
    call_id: Annotated[str, Query(description="The call, as put in the URL at dial time.")],
    attempt: Annotated[int, Query(ge=1, description="The attempt the callback is about.")],
) -> dict[str, Any]:
    """Where Plivo reports a call placed with CARRIER=plivo. The form fields are Plivo's
    (CallUUID, CallStatus, HangupCause, HangupCauseCode, Duration, BillDuration, AnswerTime,
    Machine, ...); the signature headers X-Plivo-Signature-V3 and -V3-Nonce are required.
    Answers 200 for anything signed and well formed (an unknown or stale call included, so
    Plivo stops retrying), 400 for a signed form that is not what Plivo sends or that names
    another call, 403 for a missing or wrong signature."""
    token = settings.plivo_auth_token
    if not token or not settings.public_url:
        raise HTTPException(503, "Plivo callbacks need PLIVO_AUTH_TOKEN and PUBLIC_URL")
    items = [(name, str(value)) for name, value in (await request.form()).multi_items()]
    signed = dict(items)
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
    signature = request.headers.get("X-Plivo-Signature-V3", "")
    url = public_url_of(request, settings.public_url)
    if not nonce or not signature or not verify_v3(token, url, nonce, signature, signed):
        raise HTTPException(403, "invalid or missing Plivo signature")
    try:
        form = checked_form(kind, items)
    except CallbackFieldError as exc:
        raise refused_callback("Plivo", call_id, attempt, exc) from None
    event, facts = callback_event(kind, form)
    result = await queue.event(
        call_id,
        attempt,
        event,
        carrier_call_id=form["CallUUID"],
        end=facts,
        carrier_ids=carrier_ids(form),
    )
    refused = mismatch("Plivo", call_id, attempt, result)
    if refused is not None:
        raise refused
    # 200 even for an unknown or stale call: Plivo would only retry a callback nothing needs.
    return {"applied": result.applied, "code": result.code}
