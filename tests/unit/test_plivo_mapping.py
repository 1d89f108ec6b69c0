"""Plivo: the Make-a-Call request we send and how every answer and callback maps."""

from __future__ import annotations

import httpx
import pytest

from callqueue.carriers.base import DialKind, DialRequest
from callqueue.carriers.plivo import PlivoCarrier, PlivoConfig, plivo_digits
from callqueue.carriers.plivo_events import callback_event, hangup_outcome
from callqueue.models import CarrierEvent, Outcome
from callqueue.testing import FakePlivo, Scenario

CONFIG = PlivoConfig(
    "MAID",
    "token",
    "+14155550100",
    "https://queue.example.com",
    api_url="https://plivo.test",
    agent_server_url="http://agent:8765",
)


def response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_request_carries_the_call_identity_and_limits() -> None:
    carrier = PlivoCarrier(CONFIG)
    request = DialRequest(
        "c-1",
        2,
        "+919123456789",
        "campaign-123",
        {"flow_name": "wishfin-test", "machine_detection": "hangup", "caller_name": "Acme"},
        ring_timeout_s=45,
        max_duration_s=1800,
    )
    body = carrier.request_body(request)
    assert body["from"] == "14155550100" and body["to"] == "919123456789"
    assert body["answer_url"] == (
        "http://agent:8765/outbound-answer?call_id=c-1&attempt=2"
        "&campaign_id=campaign-123&flow_name=wishfin-test"
    )
    assert body["hangup_url"] == (
        "https://queue.example.com/api/webhooks/plivo/hangup?call_id=c-1&attempt=2"
    )
    assert body["ring_url"].endswith("/api/webhooks/plivo/ring?call_id=c-1&attempt=2")
    assert body["time_limit"] == 1800 and body["ring_timeout"] == 45
    assert body["machine_detection"] == "hangup" and body["caller_name"] == "Acme"
    own = carrier.request_body(
        DialRequest(
            "c-2", 1, "+15550001111", None, {"answer_url": "https://bot.example/answer?x=1"}
        )
    )
    assert own["answer_url"] == "https://bot.example/answer?x=1&call_id=c-2&attempt=1"
    assert "machine_detection" not in own
    assert plivo_digits("+91 91234-56789") == "919123456789"


@pytest.mark.parametrize(
    ("status", "body", "kind", "throttle"),
    [
        (
            201,
            {"api_id": "a", "message": "call fired", "request_uuid": "r-1"},
            DialKind.ACCEPTED,
            False,
        ),
        (400, {"error": "invalid destination number"}, DialKind.REJECTED, False),
        (422, {"error": "unprocessable"}, DialKind.REJECTED, False),
        (401, {"error": "authentication failed"}, DialKind.UNUSABLE, False),
        (403, {"error": "forbidden"}, DialKind.UNUSABLE, False),
        (429, {"error": "too many requests"}, DialKind.REFUSED, True),
        (400, {"error": "5030 concurrency limit breached"}, DialKind.REFUSED, True),
        (500, {"error": "internal"}, DialKind.REFUSED, False),
        (503, {"error": "unavailable"}, DialKind.REFUSED, False),
    ],
)
def test_every_make_a_call_answer_maps(
    status: int, body: object, kind: DialKind, throttle: bool
) -> None:
    result = PlivoCarrier.map_response(response(status, body))
    assert result.kind == kind and result.throttle == throttle
    if kind == DialKind.ACCEPTED:
        assert result.carrier_call_id == "r-1"
    else:
        assert str(status) in result.reason


def test_retry_after_header_is_honoured() -> None:
    result = PlivoCarrier.map_response(response(429, {"error": "x"}, {"Retry-After": "3"}))
    assert result.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("form", "outcome"),
    [
        (
            {"CallStatus": "completed", "AnswerTime": "2026-11-28 10:00:05", "Duration": "42"},
            Outcome.COMPLETED,
        ),
        ({"CallStatus": "completed", "AnswerTime": "", "Duration": "0"}, Outcome.NO_ANSWER),
        ({"CallStatus": "busy", "HangupCause": "USER_BUSY"}, Outcome.BUSY),
        ({"CallStatus": "no-answer", "HangupCause": "NO_ANSWER"}, Outcome.NO_ANSWER),
        ({"CallStatus": "timeout"}, Outcome.NO_ANSWER),
        ({"CallStatus": "cancel", "HangupCause": "ORIGINATOR_CANCEL"}, Outcome.CANCELLED),
        (
            {
                "CallStatus": "failed",
                "HangupCause": "INVALID_NUMBER_FORMAT",
                "HangupCauseCode": "2000",
            },
            Outcome.REJECTED,
        ),
        ({"CallStatus": "failed", "HangupCause": "NETWORK_OUT_OF_ORDER"}, Outcome.FAILED),
        ({"CallStatus": "failed", "HangupCauseCode": "5030"}, Outcome.THROTTLED),
        ({"CallStatus": "completed", "Machine": "true", "Duration": "9"}, Outcome.MACHINE),
    ],
)
def test_hangup_callbacks_map_to_outcomes(form: dict[str, str], outcome: Outcome) -> None:
    assert hangup_outcome(form) == outcome


def test_callback_events_carry_facts() -> None:
    event, facts = callback_event(
        "hangup",
        {
            "CallStatus": "completed",
            "CallUUID": "cu-1",
            "HangupCause": "NORMAL_CLEARING",
            "HangupCauseCode": "4000",
            "Duration": "42",
            "BillDuration": "60",
            "AnswerTime": "2026-11-28 10:00:05",
            "EndTime": "2026-11-28 10:00:47",
        },
    )
    assert event == CarrierEvent.ENDED and facts is not None
    assert facts.carrier_call_id == "cu-1" and facts.duration_s == 42.0
    assert facts.bill_duration_s == 60.0 and facts.hangup_cause == "NORMAL_CLEARING (4000)"
    assert facts.ended_ms is not None and facts.answered_ms is not None
    assert facts.ended_ms - facts.answered_ms == 42_000
    assert callback_event("ring", {"CallStatus": "ringing"})[0] == CarrierEvent.RINGING
    assert callback_event("machine", {"Machine": "true"})[0] == CarrierEvent.MACHINE
    assert callback_event("machine", {"Machine": "false"})[0] == CarrierEvent.ANSWERED


async def test_a_slow_answer_is_ambiguous_and_an_unreachable_api_refused() -> None:
    request = DialRequest("c-1", 1, "+919123456789", None)
    async with FakePlivo("MAID", "token", scenario=Scenario(api_delay_s=1.0)) as plivo:
        slow = PlivoCarrier(
            PlivoConfig(
                "MAID",
                "token",
                "+14155550100",
                "https://q.example",
                api_url=plivo.url,
                timeout_s=0.2,
            )
        )
        result = await slow.dial(request)
        await slow.aclose()
    assert result.kind == DialKind.AMBIGUOUS  # it may have reached Plivo: the slot stays held
    closed = PlivoCarrier(
        PlivoConfig(
            "MAID",
            "token",
            "+14155550100",
            "https://q.example",
            api_url="http://127.0.0.1:9",
            timeout_s=1.0,
        )
    )
    refused = await closed.dial(request)
    await closed.aclose()
    assert refused.kind == DialKind.REFUSED  # the request never left: no attempt used
