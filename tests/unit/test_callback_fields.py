"""Signed Plivo and Twilio callbacks are checked field by field: a callback re-shaped without
breaking its signature (bytes moved between a value and the next name) is refused, or reads
exactly as the genuine one; genuine callbacks and the carriers' documented extras pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from callqueue.carriers import plivo_events, twilio_events
from callqueue.carriers.callback_fields import CallbackFieldError
from callqueue.carriers.plivo_signature import v3_string_to_sign
from callqueue.carriers.twilio_signature import string_to_sign

REQ = "3b1d7c7e-9d2a-4a8e-8a36-6f1c2e9b0a11"
CALL = "9f0c6a52-1b7e-4c1d-b2a4-0d5e8f3c7a22"
ACCOUNT = "AC" + "1" * 32
CALL_SID = "CA" + "0123456789abcdef" * 2
PLIVO_URL = "https://queue.example.com/api/webhooks/plivo/hangup?call_id=c1&attempt=1"
TWILIO_URL = "https://queue.example.com/api/webhooks/twilio/status?call_id=c1&attempt=1"

_PLIVO_COMMON = {
    "ALegRequestUUID": REQ, "ALegUUID": CALL, "CallUUID": CALL, "Direction": "outbound",
    "From": "14155550100", "RequestUUID": REQ, "STIRAttestation": "Not Applicable",
    "SessionStart": "2026-11-28 10:00:01.123456", "To": "919123456789",
}  # fmt: skip
PLIVO = {
    "ring": {**_PLIVO_COMMON, "CallStatus": "ringing", "Event": "Ring"},
    "machine": {
        **_PLIVO_COMMON, "CallStatus": "in-progress", "Event": "MachineDetection",
        "IfMachine": "continue", "Machine": "true",
    },
    "hangup": {
        **_PLIVO_COMMON, "AnswerTime": "2026-11-28 10:00:05", "BillDuration": "60",
        "BillRate": "0.00850", "CallStatus": "completed", "Duration": "42",
        "EndTime": "2026-11-28 10:00:47", "Event": "Hangup", "HangupCause": "NORMAL_CLEARING",
        "HangupCauseCode": "4000", "HangupCauseName": "Normal Hangup", "HangupSource": "Callee",
        "Machine": "true", "ParentAuthID": "MAXXXXXXXXXXXXXXXXXX",
        "STIRVerification": "Not Applicable", "StartTime": "2026-11-28 10:00:00",
        "TotalCost": "0.00850",
    },
}  # fmt: skip
_TWILIO_COMMON = {
    "AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": CALL_SID,
    "CallbackSource": "call-progress-events", "Called": "+919123456789",
    "CalledCountry": "IN", "Caller": "+14155550100", "CallerCity": "SAN FRANCISCO",
    "Direction": "outbound-api", "From": "+14155550100", "SequenceNumber": "3",
    "Timestamp": "Sat, 28 Nov 2026 10:00:47 +0000", "To": "+919123456789",
}  # fmt: skip
TWILIO = {
    "ringing": {**_TWILIO_COMMON, "CallStatus": "ringing", "SequenceNumber": "1"},
    "completed": {**_TWILIO_COMMON, "CallStatus": "completed", "CallDuration": "42"},
    "busy": {
        **_TWILIO_COMMON, "CallStatus": "failed", "CallDuration": "0", "ErrorCode": "13224",
        "SipResponseCode": "404",
    },
    "amd": {
        "AccountSid": ACCOUNT, "AnsweredBy": "machine_start", "CallSid": CALL_SID,
        "MachineDetectionDuration": "2300",
    },
}  # fmt: skip

Form = dict[str, str]


def plivo_read(kind: str) -> Callable[[Form], object]:
    """What the engine gets from a Plivo callback: its event, end facts and ids."""

    def read(form: Form) -> object:
        ids = (form.get("CallUUID"), form.get("RequestUUID"))
        return plivo_events.callback_event(kind, form), ids

    return read


def twilio_read(amd: bool) -> Callable[[Form], object]:
    def read(form: Form) -> object:
        return twilio_events.callback_events(form, amd=amd), form.get("CallSid")

    return read


def _renamed(form: Form, old: str, new: str, value: str) -> Form | None:
    if not new or (new != old and new in form):
        return None  # an empty name, or one the form already has: not one request
    out = {k: v for k, v in form.items() if k != old}
    out[new] = value
    return out


def reshapes(form: Form) -> Iterator[tuple[str, Form]]:
    """Every form whose signed text (fields sorted by name, ``name`` + ``value``) may equal
    ``form``'s with one boundary moved: between a name and its value, between a value and
    the next name, or a whole field run into the value before it."""
    names = sorted(form)
    for i, name in enumerate(names):
        value = form[name]
        for k in range(1, len(name)):
            shaped = _renamed(form, name, name[:-k], name[-k:] + value)
            if shaped is not None:
                yield f"{name}: name tail {k} into its value", shaped
        for k in range(1, len(value) + 1):
            shaped = _renamed(form, name, name + value[:k], value[k:])
            if shaped is not None:
                yield f"{name}: value head {k} into its name", shaped
        if i + 1 == len(names):
            continue
        after = names[i + 1]
        for k in range(1, len(value) + 1):
            shaped = _renamed({**form, name: value[:-k]}, after, value[-k:] + after, form[after])
            if shaped is not None:
                yield f"{name}: value tail {k} into the name {after}", shaped
        for k in range(1, len(after)):
            into = {**form, name: value + after[:k]}
            shaped = _renamed(into, after, after[k:], form[after])
            if shaped is not None:
                yield f"{after}: name head {k} into the value of {name}", shaped
        folded = {n: v for n, v in form.items() if n != after}
        yield (
            f"{after}: run into the value of {name}",
            {**folded, name: value + after + form[after]},
        )


def assert_reshapes_refused(
    form: Form,
    signed: Callable[[Form], str],
    check: Callable[[Form], Form],
    read: Callable[[Form], object],
) -> None:
    """Each re-shape that keeps the signature is refused, or reads as the genuine callback
    does; and some of them would read differently if they were not refused."""
    genuine = read(check(dict(form)))
    kept = changed = 0
    for how, shaped in reshapes(form):
        if signed(shaped) != signed(form):
            continue
        kept += 1
        try:
            fields = check(shaped)
        except CallbackFieldError:
            try:
                unchecked = read(shaped)
            except (KeyError, ValueError):
                unchecked = None
            changed += unchecked != genuine
            continue
        assert read(fields) == genuine, how  # accepted: then it says what the genuine one says
    assert kept > 50 and changed > 5, (kept, changed)


@pytest.mark.parametrize("kind", list(PLIVO))
def test_plivo_reshapes_are_refused_or_harmless(kind: str) -> None:
    assert_reshapes_refused(
        PLIVO[kind],
        lambda form: v3_string_to_sign(PLIVO_URL, "nonce", form),
        lambda form: plivo_events.checked_form(kind, form.items()),
        plivo_read(kind),
    )


@pytest.mark.parametrize("case", list(TWILIO))
def test_twilio_reshapes_are_refused_or_harmless(case: str) -> None:
    amd = case == "amd"
    assert_reshapes_refused(
        TWILIO[case],
        lambda form: string_to_sign(TWILIO_URL, form),
        lambda form: twilio_events.checked_form(form.items(), amd=amd, account_sid=ACCOUNT),
        twilio_read(amd),
    )


def test_the_reshapes_the_issue_saw_are_refused() -> None:
    hangup = {
        "BillDuration": "5", "CallStatus": "completed", "CallUUID": CALL, "Duration": "5",
        "HangupCause": "NORMAL_CLEARING", "RequestUUID": REQ,
    }  # fmt: skip
    assert plivo_events.checked_form("hangup", hangup.items()) == hangup
    reshaped = {k: v for k, v in hangup.items() if k != "CallStatus"}
    reshaped["BillDuration"] = "5CallStatuscompleted"
    assert v3_string_to_sign(PLIVO_URL, "n", reshaped) == v3_string_to_sign(PLIVO_URL, "n", hangup)
    with pytest.raises(CallbackFieldError, match="BillDuration") as refused:
        plivo_events.checked_form("hangup", reshaped.items())
    assert refused.value.field == "BillDuration"

    completed = TWILIO["completed"]
    no_sid = {k: v for k, v in completed.items() if k != "CallSid"}
    no_sid["CallDuration"] = "42CallSid" + CALL_SID
    assert string_to_sign(TWILIO_URL, no_sid) == string_to_sign(TWILIO_URL, completed)
    with pytest.raises(CallbackFieldError, match="CallDuration"):
        twilio_events.checked_form(no_sid.items())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"5CallStatus": "completed"}, "'5CallStatus'"),
        ({"callStatus": "completed"}, "'callStatus'"),
        ({"Call Status": "completed"}, "'Call Status'"),
        ({"X-PH-a_b": "1"}, "'X-PH-a_b'"),
        ({"A" * 65: "1"}, "'AAAA"),
        ({"CallUUID": "not-a-uuid"}, "CallUUID"),
        ({"CallUUID": CALL + "x"}, "CallUUID"),
        ({"Duration": "-1"}, "Duration"),
        ({"Duration": "1e3"}, "Duration"),
        ({"Duration": " 42"}, "Duration"),
        ({"Duration": "٤٢"}, "Duration"),  # digits, but not 0-9
        ({"Duration": str(8 * 86400)}, "Duration"),
        ({"HangupCause": "normal_clearing"}, "HangupCause"),
        ({"HangupCauseCode": "4000.0"}, "HangupCauseCode"),
        ({"Machine": "yes"}, "Machine"),
        ({"AnswerTime": "2026-02-30 10:00:00"}, "AnswerTime"),
        ({"EndTime": "2026-11-28T10:00:47"}, "EndTime"),
        ({"Direction": "sideways"}, "Direction"),
        ({"CallStatus": "answered"}, "CallStatus"),
        ({"CallStatus": "ringing"}, "CallStatus"),  # does not end a call
        ({"Event": "Hangup2"}, "Event"),
        ({"BillRate": "0.0085USD"}, "BillRate"),
        ({"HangupSource": "CalleeMachinetrue"}, "HangupSource"),  # Machine folded in
        ({"HangupCauseName": "Normal\nHangup"}, "HangupCauseName"),
        ({"X-PH-Campaign": "spring" + "Duration42"}, "X-PH-Campaign"),
        ({"SomeNewField": "x" * 5000}, "SomeNewField"),
    ],
)
def test_plivo_fields_that_are_not_what_plivo_sends_are_refused(change: Form, field: str) -> None:
    with pytest.raises(CallbackFieldError) as refused:
        plivo_events.checked_form("hangup", {**PLIVO["hangup"], **change}.items())
    assert refused.value.field.startswith(field), refused.value


@pytest.mark.parametrize(
    ("kind", "missing"),
    [
        ("ring", "CallUUID"), ("ring", "RequestUUID"), ("ring", "CallStatus"),
        ("hangup", "HangupCause"), ("hangup", "Duration"), ("hangup", "BillDuration"),
        ("machine", "Machine"), ("machine", "CallUUID"),
    ],
)  # fmt: skip
def test_plivo_required_fields_must_be_present(kind: str, missing: str) -> None:
    form = {k: v for k, v in PLIVO[kind].items() if k != missing}
    with pytest.raises(CallbackFieldError, match=f"^{missing}: missing"):
        plivo_events.checked_form(kind, form.items())


def test_plivo_documented_extras_and_new_fields_pass() -> None:
    form = {
        **PLIVO["hangup"],
        "stir_verification": "Verified",  # as the hangup_url table spells it
        "CallerName": "Acme",
        "X-PH-Campaign": "spring24",
        "HangupCauseName": "Machine Detected",  # the name of a field, followed by a space
        "SomeFieldPlivoAddsLater": "whatever it holds",
        "AnswerTime": "",  # not answered
    }
    assert plivo_events.checked_form("hangup", form.items()) == form
    assert plivo_events.carrier_ids(form) == (CALL, REQ)
    ring = {**PLIVO["ring"], "CallUUID": CALL.upper()}
    assert plivo_events.checked_form("ring", ring.items())["CallUUID"] == CALL.upper()
    with pytest.raises(CallbackFieldError, match="not the status of a ringing call"):
        plivo_events.checked_form("ring", {**ring, "CallStatus": "completed"}.items())


def test_a_field_sent_twice_is_refused() -> None:
    items = [*PLIVO["ring"].items(), ("CallStatus", "ringing")]
    with pytest.raises(CallbackFieldError, match=r"^CallStatus: sent more than once"):
        plivo_events.checked_form("ring", items)
    twice = [*TWILIO["amd"].items(), ("AnsweredBy", "human")]
    with pytest.raises(CallbackFieldError, match=r"^AnsweredBy: sent more than once"):
        twilio_events.checked_form(twice, amd=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"CallSid": "CA" + "0" * 31}, "CallSid"),
        ({"CallSid": "CX" + "0" * 32}, "CallSid"),
        ({"AccountSid": "AC" + "2" * 32}, "AccountSid"),  # another account
        ({"AccountSid": "AC" + "g" * 32}, "AccountSid"),
        ({"CallStatus": "answered"}, "CallStatus"),
        ({"CallDuration": "4 2"}, "CallDuration"),
        ({"SipResponseCode": "99"}, "SipResponseCode"),
        ({"ErrorCode": "x13224"}, "ErrorCode"),
        ({"AnsweredBy": "robot"}, "AnsweredBy"),
        ({"Timestamp": "Sat, 28 Nov 2026 10:00:47 +0000SequenceNumber3"}, "Timestamp"),
        ({"Timestamp": "Mon, 31 Feb 2026 10:00:47 +0000"}, "Timestamp"),
        ({"ApiVersion": "2010-04-01Called"}, "ApiVersion"),
        ({"Direction": "outbound"}, "Direction"),
        ({"CalledCountry": "INCallStatusbusy"}, "CalledCountry"),
        ({"AddOns": '{"status":"x"}AnsweredBymachine_start'}, "AddOns"),
        ({"&amd=1AccountSid": ACCOUNT}, "'&amd=1AccountSid'"),
        ({"sipHeader": "x"}, "'sipHeader'"),
    ],
)
def test_twilio_fields_that_are_not_what_twilio_sends_are_refused(change: Form, field: str) -> None:
    with pytest.raises(CallbackFieldError) as refused:
        twilio_events.checked_form({**TWILIO["completed"], **change}.items(), account_sid=ACCOUNT)
    assert refused.value.field.startswith(field), refused.value


def test_twilio_required_fields_and_extras() -> None:
    for missing in ("CallSid", "AccountSid", "CallStatus", "CallDuration"):
        form = {k: v for k, v in TWILIO["completed"].items() if k != missing}
        with pytest.raises(CallbackFieldError, match=f"^{missing}: missing"):
            twilio_events.checked_form(form.items())
    for missing in ("CallSid", "AccountSid", "AnsweredBy"):
        form = {k: v for k, v in TWILIO["amd"].items() if k != missing}
        with pytest.raises(CallbackFieldError, match=f"^{missing}: missing"):
            twilio_events.checked_form(form.items(), amd=True)
    # An unanswered end need not carry CallDuration; new and SIP extras pass.
    busy = {k: v for k, v in TWILIO["busy"].items() if k != "CallDuration"}
    extras = {
        "StirVerstat": "TN-Validation-Passed-A", "ParentCallSid": CALL_SID,
        "SipHeader_X-Campaign": "spring", "QueueTime": "12", "SomethingNew": "1",
    }  # fmt: skip
    assert twilio_events.checked_form({**busy, **extras}.items()) == {**busy, **extras}
    assert twilio_events.carrier_ids(busy) == (CALL_SID,)
