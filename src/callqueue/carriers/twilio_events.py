"""Turns Twilio's status-callback forms into engine events. Pure functions: the webhook route
verifies the signature, then hands the form here.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from callqueue.engine.queue import EndFacts
from callqueue.models import CarrierEvent, Outcome

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
    if status in ("in-progress", "answered"):
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
