"""Turns Plivo's callback forms into engine events. Pure functions: the webhook route verifies
the signature, checks the form with :func:`checked_form`, then hands it here.

What :func:`checked_form` accepts (the general rule is in ``callback_fields``), from Plivo's
documentation of the parameters sent to ``ring_url``, ``hangup_url`` and
``machine_detection_url`` (Make a Call; Asynchronous machine detection; Call status; Hangup
causes):

* ``CallUUID``, ``RequestUUID``, ``ALegUUID``, ``ALegRequestUUID``: UUIDs;
* ``CallStatus``: ``ringing``, ``in-progress``, ``completed``, ``busy``, ``failed``,
  ``timeout``, ``no-answer`` or ``cancel``; a ring callback says ``ringing`` (or
  ``in-progress``), a hangup one an ended status;
* ``Duration``, ``BillDuration``: whole seconds, at most a week; ``HangupCauseCode``: a whole
  number; ``BillRate``, ``TotalCost``: amounts; ``HangupCause``: a telephony cause name
  (``NORMAL_CLEARING``: upper-case letters, digits, ``_``);
* ``StartTime``, ``AnswerTime``, ``EndTime``: ``YYYY-MM-DD HH:MM:SS`` or empty (not
  answered); ``SessionStart`` the same with a fraction of a second;
* ``Machine``: ``true`` or ``false``; ``IfMachine``: ``continue`` or ``hangup``;
  ``Direction``: ``outbound`` or ``inbound``; ``Event``: ``Ring``, ``StartApp``, ``Hangup``
  or ``MachineDetection``;
* free text: ``From``, ``To``, ``CallerName``, ``ForwardedFrom``, ``HangupCauseName``,
  ``HangupSource``, ``STIRAttestation``, ``STIRVerification``, ``stir_verification``,
  ``ParentAuthID``; extras: PascalCase names and custom SIP headers ``X-PH-<letters, digits>``.

Required: ``CallUUID``, ``RequestUUID`` and ``CallStatus`` in every callback; ``HangupCause``,
``Duration`` and ``BillDuration`` at hangup; ``Machine`` in the machine-detection callback.
The callback's ``CallUUID`` or ``RequestUUID`` must also be the attempt's carrier id once the
engine knows it (:func:`carrier_ids`; the engine checks it in the same step that applies the
event).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from callqueue.carriers.callback_fields import (
    CallbackFieldError,
    Check,
    FormRules,
    check_form,
    decimal,
    integer,
    one_of,
    pattern,
    timestamp,
)
from callqueue.models import CarrierEvent, EndFacts, Outcome

STATUSES = (
    "ringing", "in-progress", "completed", "busy", "failed", "timeout", "no-answer", "cancel",
)  # fmt: skip
#: What a hangup callback may say: the call is over.
ENDED_STATUSES = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel"})
RING_STATUSES = frozenset({"ringing", "in-progress"})

_UUID = pattern(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SECONDS = integer(0, 7 * 86400)
_TIME = timestamp(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "%Y-%m-%d %H:%M:%S", empty=True)
_FIELDS: dict[str, Check | None] = {
    "ALegRequestUUID": _UUID,
    "ALegUUID": _UUID,
    "AnswerTime": _TIME,
    "BillDuration": _SECONDS,
    "BillRate": decimal,
    "CallStatus": one_of(*STATUSES),
    "CallUUID": _UUID,
    "Direction": one_of("outbound", "inbound"),
    "Duration": _SECONDS,
    "EndTime": _TIME,
    "Event": one_of("Ring", "StartApp", "Hangup", "MachineDetection"),
    "HangupCause": pattern(r"[A-Z][A-Z0-9_]{0,63}"),
    "HangupCauseCode": integer(0, 99999),
    "IfMachine": one_of("continue", "hangup"),
    "Machine": one_of("true", "false", "True", "False"),
    "RequestUUID": _UUID,
    "SessionStart": pattern(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})?)?"),
    "StartTime": _TIME,
    "TotalCost": decimal,
    **dict.fromkeys(
        (
            "From", "To", "CallerName", "ForwardedFrom", "HangupCauseName", "HangupSource",
            "STIRAttestation", "STIRVerification", "stir_verification", "ParentAuthID",
        ),
        None,
    ),
}  # fmt: skip
#: The fields the engine reads (see :func:`callback_event`).
ENGINE_FIELDS = (
    "CallUUID", "RequestUUID", "CallStatus", "HangupCause", "HangupCauseCode", "Duration",
    "BillDuration", "AnswerTime", "EndTime", "Machine",
)  # fmt: skip
RULES = FormRules(
    carrier="Plivo",
    fields=_FIELDS,
    extra_names=re.compile(r"[A-Z][A-Za-z0-9]{0,63}|X-PH-[A-Za-z0-9]{1,64}", re.ASCII),
    engine=ENGINE_FIELDS,
)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ring": ("CallUUID", "RequestUUID", "CallStatus"),
    "hangup": (
        "CallUUID", "RequestUUID", "CallStatus", "HangupCause", "Duration", "BillDuration",
    ),
    "machine": ("CallUUID", "RequestUUID", "CallStatus", "Machine"),
}  # fmt: skip


def checked_form(kind: str, items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The form of a ``kind`` callback (ring, hangup, machine) once every field is what Plivo
    sends, else :class:`CallbackFieldError` naming the first field that is not."""
    form = check_form(RULES, items, _REQUIRED[kind])
    status = form["CallStatus"]
    if kind == "hangup" and status not in ENDED_STATUSES:
        raise CallbackFieldError("CallStatus", "not a status that ends a call")
    if kind == "ring" and status not in RING_STATUSES:
        raise CallbackFieldError("CallStatus", "not the status of a ringing call")
    return form


def carrier_ids(form: Mapping[str, str]) -> tuple[str, str]:
    """The ids a callback names its call by: the attempt's known carrier id must be one of
    them (the dial answer's request uuid until a callback names the call uuid)."""
    return form["CallUUID"], form["RequestUUID"]


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
    if (form.get("CallStatus") or "").lower() == "in-progress":
        return CarrierEvent.ANSWERED, None
    return CarrierEvent.RINGING, None
