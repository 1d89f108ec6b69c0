"""Twilio callbacks: ``POST /api/webhooks/twilio/status?call_id=..&attempt=..[&amd=1]``.

Public (no API key) but signed: every request's ``X-Twilio-Signature`` is checked against the
URL Twilio called, rebuilt from PUBLIC_URL (a proxy in front may rewrite the host), with the
auth token; a missing or wrong signature answers 403 and changes nothing. The events then go
through the engine's one event transition, which is idempotent and order-proof: a repeated or
late callback changes nothing.

A signed callback is then checked field by field (``carriers.twilio_events.checked_form``):
Twilio signs the fields run together, so a captured callback can be re-shaped without breaking
the signature. A form that is not what Twilio sends, or that names another call than the
attempt's known CallSid, answers 400 naming the field and changes nothing; the events of one
callback are applied in one engine step.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request
from pydantic import BaseModel, Field

from callqueue.api.deps import QueueDep, SettingsDep
from callqueue.api.errors import error_doc
from callqueue.api.routes.plivo_callbacks import mismatch, public_url_of, refused_callback
from callqueue.carriers.callback_fields import CallbackFieldError
from callqueue.carriers.twilio import TwilioCarrier, TwilioConfig
from callqueue.carriers.twilio_events import callback_events, carrier_ids, checked_form
from callqueue.carriers.twilio_signature import verify
from callqueue.config import Settings
from callqueue.engine.queue import CallQueue
from callqueue.engine.scripts import ScriptError
from callqueue.models import CarrierEvent

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class TwilioCallbackResult(BaseModel):
    applied: bool = Field(
        ..., description="Whether the callback changed the call (false: repeated, late, "
        "about another attempt, or nothing to record such as `initiated`)."
    )  # fmt: skip
    code: str = Field(
        ..., description="ok, dup (already known), stale (another attempt), not_found, or "
        "ignored (a status with nothing to record).", examples=["ok"],
    )  # fmt: skip


async def hang_up_machine(settings: Settings, call_id: str, attempt: int, call_sid: str) -> None:
    """machine_detection=hangup: Twilio only reports the machine, so we end the call."""
    if not settings.twilio_account_sid or not settings.twilio_auth_token:
        return
    carrier = TwilioCarrier(
        TwilioConfig(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            number=settings.twilio_number or "",
            public_url=settings.public_url or "",
            api_url=settings.twilio_api_url,
        )
    )
    try:
        if not await carrier.hangup(call_id, attempt, call_sid):
            log.warning("Twilio did not hang up %s (answering machine)", call_id)
    finally:
        await carrier.aclose()


async def _hangs_up_on_machine(queue: CallQueue, call_id: str) -> bool:
    record = await queue.get(call_id)
    return record is not None and record.spec.config.get("machine_detection") == "hangup"


@router.post(
    "/twilio/status",
    summary="Twilio call status callback (progress and machine detection)",
    response_model=TwilioCallbackResult,
    responses={
        200: {"description": "Signed: handled (whether or not it changed the call)."},
        400: error_doc(
            "Signed, but a field is not what Twilio sends (a re-shaped callback), or the "
            "callback names another call than the attempt's; `loc` names the field."
        ),
        403: error_doc("Missing or wrong X-Twilio-Signature."),
        422: error_doc("call_id or attempt missing from the URL."),
        503: error_doc("Twilio is not configured here, or Redis is unavailable."),
    },
)
async def twilio_status(
    request: Request,
    queue: QueueDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    call_id: Annotated[str, Query(description="The call, as put in the URL at dial time.")],
    attempt: Annotated[int, Query(ge=1, description="The attempt the callback is about.")],
    amd: Annotated[
        bool,
        Query(
            description="Set (1) on the AsyncAmdStatusCallback URL: the form carries "
            "Twilio's answering-machine verdict (AnsweredBy) rather than a CallStatus."
        ),
    ] = False,
) -> TwilioCallbackResult:
    """Where Twilio reports a call placed with CARRIER=twilio: the StatusCallback (events
    initiated, ringing, answered, completed) and, with machine detection, the
    AsyncAmdStatusCallback. The form fields are Twilio's (CallSid, AccountSid, CallStatus,
    CallDuration, Timestamp, SequenceNumber, SipResponseCode, AnsweredBy, ...); the
    X-Twilio-Signature header is required. Answers 200 for anything signed and well formed (an
    unknown or stale call included), 400 for a signed form that is not what Twilio sends or
    that names another call, 403 for a missing or wrong signature."""
    token = settings.twilio_auth_token
    if not token or not settings.public_url:
        raise HTTPException(503, "Twilio callbacks need TWILIO_AUTH_TOKEN and PUBLIC_URL")
    items = [(name, str(value)) for name, value in (await request.form()).multi_items()]
    params: dict[str, list[str]] = {}
    for name, value in items:
        params.setdefault(name, []).append(value)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not verify(token, public_url_of(request, settings.public_url), params, signature):
        raise HTTPException(403, "invalid or missing Twilio signature")
    try:
        form = checked_form(items, amd=amd, account_sid=settings.twilio_account_sid)
    except CallbackFieldError as exc:
        raise refused_callback("Twilio", call_id, attempt, exc) from None
    call_sid = form["CallSid"]
    events = callback_events(form, amd=amd)
    outcomes = await queue.events(
        queue.event_call(
            call_id, attempt, event, carrier_call_id=call_sid, end=facts,
            carrier_ids=carrier_ids(form),
        )
        for event, facts in events
    )  # fmt: skip
    result = TwilioCallbackResult(applied=False, code="ignored")
    for (event, _), outcome in zip(events, outcomes, strict=True):
        if outcome.error:
            raise ScriptError(outcome.error)
        refused = mismatch("Twilio", call_id, attempt, outcome)
        if refused is not None:
            raise refused
        result = TwilioCallbackResult(applied=outcome.applied, code=outcome.code)
        if (
            event == CarrierEvent.MACHINE
            and outcome.applied
            and await _hangs_up_on_machine(queue, call_id)
        ):
            background.add_task(hang_up_machine, settings, call_id, attempt, call_sid)
    # 200 even for an unknown or stale call: Twilio would only retry a callback nothing needs.
    return result
