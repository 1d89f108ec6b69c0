"""Carrier callbacks: ``POST /api/webhooks/plivo/{ring|hangup|machine}?call_id=..&attempt=..``.

Public (no API key) but signed: every request's Plivo Signature V3 is checked against the URL
Plivo called, rebuilt from PUBLIC_URL (a proxy in front may rewrite the host), with the auth
token; a missing or wrong signature answers 403 and changes nothing. The event then goes
through the engine's one event transition, which is idempotent and order-proof: Plivo retries
callbacks, and a repeated or late one changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request

from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.api.errors import error_doc
from callqueue.carriers.plivo_events import callback_event
from callqueue.carriers.plivo_signature import verify_v3

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


def public_url_of(request: Request, public_url: str) -> str:
    """The URL the carrier called: PUBLIC_URL + this path + the query as received."""
    query = request.url.query
    return f"{public_url.rstrip('/')}{request.url.path}" + (f"?{query}" if query else "")


@router.post(
    "/plivo/{kind}",
    summary="Plivo call callback (ring, hangup, machine detection)",
    responses={
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
    Answers 200 for anything signed (an unknown or stale call included, so Plivo stops
    retrying), 403 for a missing or wrong signature."""
    token = settings.plivo_auth_token
    if not token or not settings.public_url:
        raise HTTPException(503, "Plivo callbacks need PLIVO_AUTH_TOKEN and PUBLIC_URL")
    form = {k: str(v) for k, v in (await request.form()).items()}
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
    signature = request.headers.get("X-Plivo-Signature-V3", "")
    url = public_url_of(request, settings.public_url)
    if not nonce or not signature or not verify_v3(token, url, nonce, signature, form):
        raise HTTPException(403, "invalid or missing Plivo signature")
    event, facts = callback_event(kind, form)
    result = await queue.event(
        call_id, attempt, event, carrier_call_id=form.get("CallUUID", ""), end=facts
    )
    # 200 even for an unknown or stale call: Plivo would only retry a callback nothing needs.
    return {"applied": result.applied, "code": result.code}
