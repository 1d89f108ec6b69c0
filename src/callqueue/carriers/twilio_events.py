"""Turns Twilio's status-callback forms into engine events. Pure functions: the webhook route
verifies the signature, checks the form with :func:`checked_form`, then hands it here.

Two kinds of callback reach ``/api/webhooks/twilio/status``:

* call progress (``StatusCallbackEvent`` initiated, ringing, answered, completed): ``CallStatus``
  is ``queued``/``initiated`` (nothing to record), ``ringing``, ``in-progress`` (answered), or
  at the end ``completed`` (answered, then hung up), ``busy``, ``no-answer``, ``failed`` or
  ``canceled``; the end carries ``CallDuration`` (seconds) and ``Timestamp`` (RFC 2822), a
  failure may carry ``SipResponseCode`` / ``ErrorCode``;
* asynchronous answering-machine detection (``amd=1`` in our URL): ``AnsweredBy`` is
  ``human``, ``unknown``, ``fax``, ``machine_start`` or (with DetectMessageEnd)
  ``machine_end_beep`` / ``machine_end_silence`` / ``machine_end_other``.

The carrier's id of the call is ``CallSid`` in both.

What :func:`checked_form` accepts (the general rule is in ``callback_fields``), from Twilio's
documentation of its voice request parameters, status callbacks and AMD callbacks:

* ``CallSid``, ``ParentCallSid``: ``CA`` + 32 hex; ``AccountSid``: ``AC`` + 32 hex, and this
  service's own account when TWILIO_ACCOUNT_SID is set; ``RecordingSid``: ``RE`` + 32 hex;
* ``CallStatus``: one of :data:`STATUSES`; ``AnsweredBy``: one of :data:`ANSWERED_BY`;
  ``Direction``: ``inbound``, ``outbound-api``, ``outbound-dial``,
  ``trunking-terminating`` or ``trunking-originating``;
* ``CallDuration`` (seconds), ``Duration`` (minutes), ``SequenceNumber``,
  ``MachineDetectionDuration`` (ms), ``ErrorCode``: whole numbers within bounds;
  ``SipResponseCode``: 100-699;
* ``Timestamp``: RFC 2822 (``Mon, 16 Aug 2010 03:45:01 +0000``); ``ApiVersion``:
  ``YYYY-MM-DD``; ``CallbackSource``: a lower-case token (``call-progress-events``);
* free text: ``From``, ``To``, ``Called``, ``Caller`` and their ``City``/``State``/``Zip``/
  ``Country``, ``CallerName``, ``ForwardedFrom``, ``CallToken``, ``ErrorMessage``,
  ``RecordingUrl``, ``RecordingDuration``, ``QueueTime``, ``StirVerstat``,
  ``StirPassportToken``; extras: PascalCase names and ``SipHeader_<name>``.

Required: ``CallSid`` and ``AccountSid`` in both kinds; ``CallStatus`` in call progress (and
``CallDuration`` once ``completed``); ``AnsweredBy`` in the machine-detection callback. The
callback's ``CallSid`` must also be the attempt's carrier id once the engine knows it (the
engine checks it in the same step that applies the events).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

from callqueue.carriers.callback_fields import (
    CallbackFieldError,
    Check,
    FormRules,
    check_form,
    integer,
    one_of,
    pattern,
)
from callqueue.models import CarrierEvent, EndFacts, Outcome

STATUSES = (
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer",
    "failed", "canceled",
)  # fmt: skip
ANSWERED_BY = (
    "human", "unknown", "fax", "machine_start", "machine_end_beep", "machine_end_silence",
    "machine_end_other",
)  # fmt: skip
_CALL_SID = pattern(r"CA[0-9a-fA-F]{32}")
_RFC2822 = pattern(
    r"((Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}"
)


def _timestamp(value: str) -> bool:
    if not _RFC2822(value):
        return False
    try:
        parsedate_to_datetime(value)  # the calendar: no 31 February
    except (TypeError, ValueError, IndexError):
        return False
    return True


_PLACES = [f"{who}{what}" for who in ("From", "To", "Called", "Caller") for what in (
    "", "City", "State", "Zip", "Country")]  # fmt: skip
_FIELDS: dict[str, Check | None] = {
    "AccountSid": pattern(r"AC[0-9a-fA-F]{32}"),
    "AnsweredBy": one_of(*ANSWERED_BY),
    "ApiVersion": pattern(r"\d{4}-\d{2}-\d{2}"),
    "CallDuration": integer(0, 7 * 86400),
    "CallSid": _CALL_SID,
    "CallStatus": one_of(*STATUSES),
    "CallbackSource": pattern(r"[a-z][a-z0-9-]{0,63}"),
    "Direction": one_of(
        "inbound", "outbound-api", "outbound-dial", "trunking-terminating",
        "trunking-originating",
    ),
    "Duration": integer(0, 7 * 24 * 60),
    "ErrorCode": integer(0, 99999),
    "MachineDetectionDuration": integer(0, 3_600_000),
    "ParentCallSid": _CALL_SID,
    "RecordingSid": pattern(r"RE[0-9a-fA-F]{32}"),
    "SequenceNumber": integer(0, 1_000_000),
    "SipResponseCode": integer(100, 699),
    "Timestamp": _timestamp,
    **dict.fromkeys(
        (
            *_PLACES, "CallerName", "ForwardedFrom", "CallToken", "ErrorMessage",
            "RecordingUrl", "RecordingDuration", "QueueTime", "StirVerstat", "StirPassportToken",
        ),
        None,
    ),
}  # fmt: skip
#: The fields the engine reads (see :func:`callback_events`).
ENGINE_FIELDS = (
    "CallSid", "CallStatus", "AnsweredBy", "CallDuration", "Duration", "Timestamp",
    "ErrorCode", "SipResponseCode",
)  # fmt: skip
RULES = FormRules(
    carrier="Twilio",
    fields=_FIELDS,
    extra_names=re.compile(r"[A-Z][A-Za-z0-9]{0,63}|SipHeader_[A-Za-z0-9-]{1,64}", re.ASCII),
    engine=ENGINE_FIELDS,
)


def checked_form(
    items: Iterable[tuple[str, str]], *, amd: bool = False, account_sid: str | None = None
) -> dict[str, str]:
    """The form of a status (or, ``amd``, machine-detection) callback once every field is
    what Twilio sends, and the account is ``account_sid`` when given; else
    :class:`CallbackFieldError` naming the first field that is not."""
    required = ("CallSid", "AccountSid", "AnsweredBy" if amd else "CallStatus")
    form = check_form(RULES, items, required)
    if account_sid and form["AccountSid"] != account_sid:
        raise CallbackFieldError("AccountSid", "not this service's Twilio account")
    if form.get("CallStatus") == "completed" and "CallDuration" not in form:
        raise CallbackFieldError("CallDuration", "missing from a completed call")
    return form


def carrier_ids(form: Mapping[str, str]) -> tuple[str]:
    """The id a callback names its call by: the attempt's known carrier id must be it."""
    return (form["CallSid"],)


Event = tuple[CarrierEvent, EndFacts | None]

#: Statuses that say nothing the engine needs (the dial answer already said "accepted").
NOT_YET = frozenset({"queued", "initiated"})
#: ErrorCode values of a failed call that mean the number itself is wrong.
INVALID_NUMBER_ERRORS = frozenset({"13223", "13224", "21211", "21214", "21217"})
#: SIP answers that mean the number does not exist: not found, address incomplete, does not
#: exist anywhere.
INVALID_NUMBER_SIP = frozenset({"404", "484", "604"})

_ENDED: dict[str, Outcome] = {
    "completed": Outcome.COMPLETED,
    "busy": Outcome.BUSY,
    "no-answer": Outcome.NO_ANSWER,
    "failed": Outcome.FAILED,
    "canceled": Outcome.CANCELLED,
}


def is_machine(answered_by: str | None) -> bool:
    """``machine_start``, ``machine_end_*`` and ``fax`` are machines; ``human`` and ``unknown``
    are not (an unknown verdict is treated as the person it most likely is)."""
    value = (answered_by or "").strip().lower()
    return value.startswith("machine") or value == "fax"


def _ms(value: str | None) -> int | None:
    """Twilio writes times as RFC 2822 (``Mon, 16 Aug 2010 03:45:01 +0000``)."""
    if not value:
        return None
    try:
        stamp = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if stamp.tzinfo is None:  # "-0000": UTC, origin unknown
        return None
    return int(stamp.timestamp() * 1000)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def end_outcome(form: Mapping[str, str]) -> Outcome:
    status = (form.get("CallStatus") or "").lower()
    outcome = _ENDED.get(status, Outcome.FAILED)
    if outcome == Outcome.COMPLETED and is_machine(form.get("AnsweredBy")):
        return Outcome.MACHINE
    if outcome == Outcome.FAILED and (
        (form.get("ErrorCode") or "") in INVALID_NUMBER_ERRORS
        or (form.get("SipResponseCode") or "") in INVALID_NUMBER_SIP
    ):
        return Outcome.REJECTED
    return outcome


def end_facts(form: Mapping[str, str]) -> EndFacts:
    status = (form.get("CallStatus") or "").lower()
    details = []
    if form.get("SipResponseCode"):
        details.append(f"SIP {form['SipResponseCode']}")
    if form.get("ErrorCode"):
        details.append(f"error {form['ErrorCode']}")
    cause = f"{status} ({', '.join(details)})" if details else status
    duration = _float(form.get("CallDuration"))
    ended = _ms(form.get("Timestamp"))
    answered = None
    if status == "completed" and ended is not None and duration is not None:
        answered = ended - int(duration * 1000)
    minutes = _float(form.get("Duration"))  # billed minutes, when Twilio sends them
    return EndFacts(
        outcome=end_outcome(form),
        carrier_call_id=form.get("CallSid") or "",
        hangup_cause=cause,
        duration_s=duration,
        bill_duration_s=minutes * 60 if minutes is not None else None,
        answered_ms=answered,
        ended_ms=ended,
    )


def amd_events(form: Mapping[str, str]) -> list[Event]:
    """The machine-detection verdict: the call was answered, and maybe by a machine."""
    if is_machine(form.get("AnsweredBy")):
        return [(CarrierEvent.ANSWERED, None), (CarrierEvent.MACHINE, None)]
    return [(CarrierEvent.ANSWERED, None)]


def status_events(form: Mapping[str, str]) -> list[Event]:
    """The engine events of one call-progress callback, in order (none for queued/initiated
    or a status we do not know)."""
    status = (form.get("CallStatus") or "").lower()
    if status in NOT_YET:
        return []
    if status == "ringing":
        return [(CarrierEvent.RINGING, None)]
    if status == "in-progress":
        if is_machine(form.get("AnsweredBy")):  # synchronous detection reports it here
            return [(CarrierEvent.ANSWERED, None), (CarrierEvent.MACHINE, None)]
        return [(CarrierEvent.ANSWERED, None)]
    if status in _ENDED:
        return [(CarrierEvent.ENDED, end_facts(form))]
    return []  # a status this code does not know: record nothing rather than guess


def callback_events(form: Mapping[str, str], *, amd: bool = False) -> list[Event]:
    """The engine events of a callback to our status webhook (``amd``: the AMD one)."""
    return amd_events(form) if amd else status_events(form)


def callback_event(form: Mapping[str, str], *, amd: bool = False) -> Event | None:
    """The one event that matters most in a callback (its last), or None when it says
    nothing the engine needs."""
    events = callback_events(form, amd=amd)
    return events[-1] if events else None
