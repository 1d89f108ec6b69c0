"""Turns Plivo's callback forms into engine events. Pure functions: the webhook route verifies
the signature, then hands the form here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from callqueue.engine.queue import EndFacts
from callqueue.models import CarrierEvent, Outcome

# Hangup cause codes that mean the number itself is wrong: retrying cannot help.
INVALID_DESTINATION_CODES = frozenset({"2000"})
CONCURRENCY_BREACH_CODES = frozenset({"5030", "1020"})


def _ms(value: str | None) -> int | None:
    """Plivo writes times as 'YYYY-MM-DD HH:MM:SS' (UTC); empty when it did not happen."""
    if not value:
        return None
    try:
        stamp = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(stamp.timestamp() * 1000)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def hangup_outcome(form: Mapping[str, str]) -> Outcome:
    status = (form.get("CallStatus") or "").lower()
    cause = (form.get("HangupCause") or "").upper()
    code = form.get("HangupCauseCode") or ""
    if code in CONCURRENCY_BREACH_CODES or "CONCURRENCY" in cause:
        return Outcome.THROTTLED
    if (form.get("Machine") or "").lower() == "true":
        return Outcome.MACHINE
    answered = bool(form.get("AnswerTime")) or (_float(form.get("Duration")) or 0) > 0
    if status == "completed":
        return Outcome.COMPLETED if answered else Outcome.NO_ANSWER
    if status == "busy":
        return Outcome.BUSY
    if status in ("no-answer", "timeout"):
        return Outcome.NO_ANSWER
    if status == "cancel":
        return Outcome.CANCELLED
    if code in INVALID_DESTINATION_CODES or "INVALID" in cause or "UNALLOCATED" in cause:
        return Outcome.REJECTED
    return Outcome.FAILED


def hangup_facts(form: Mapping[str, str]) -> EndFacts:
    cause = form.get("HangupCause") or ""
    code = form.get("HangupCauseCode") or ""
    return EndFacts(
        outcome=hangup_outcome(form),
        carrier_call_id=form.get("CallUUID") or "",
        hangup_cause=f"{cause} ({code})" if cause and code else cause or code,
        duration_s=_float(form.get("Duration")),
        bill_duration_s=_float(form.get("BillDuration")),
        answered_ms=_ms(form.get("AnswerTime")),
        ended_ms=_ms(form.get("EndTime")),
    )


def callback_event(kind: str, form: Mapping[str, str]) -> tuple[CarrierEvent, EndFacts | None]:
    """(event, end facts) for a callback of ``kind``: ring, hangup or machine."""
    if kind == "hangup":
        return CarrierEvent.ENDED, hangup_facts(form)
    if kind == "machine":
        if (form.get("Machine") or "").lower() == "true":
            return CarrierEvent.MACHINE, None
        return CarrierEvent.ANSWERED, None  # a person: the call is answered
    status = (form.get("CallStatus") or "").lower()
    if status in ("in-progress", "answered"):
        return CarrierEvent.ANSWERED, None
    return CarrierEvent.RINGING, None
