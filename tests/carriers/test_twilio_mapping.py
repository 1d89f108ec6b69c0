"""Twilio: the create-call request we send, how every answer and callback maps, hang-up and the
credentials check, the settings that select Twilio, and X-Twilio-Signature against the SDK."""

from __future__ import annotations

import base64
import string
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.api.app import create_app
from callqueue.carriers.base import DialKind, DialRequest
from callqueue.carriers.plivo import PlivoCarrier, PlivoConfig
from callqueue.carriers.twilio import TwilioCarrier, TwilioConfig, e164, status_callback_url
from callqueue.carriers.twilio_events import callback_event, callback_events, end_outcome
from callqueue.carriers.twilio_signature import sign, string_to_sign, verify
from callqueue.config import ConfigError, load_settings
from callqueue.engine.connection import connect
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, CallStatus, CarrierEvent, Outcome
from callqueue.runtime import Runtime, make_carrier, twilio_config
from callqueue.testing import FakeTwilio, TwilioScenario, serve_asgi

SID = "AC" + "1" * 32
CALL_SID = "CA" + "2" * 32
CONFIG = TwilioConfig(
    SID,
    "token",
    "+1 415 555 0100",
    "https://queue.example.com",
    api_url="https://twilio.test",
    agent_server_url="http://agent:8765",
)
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"
CALLER_ID = "+14155550100"


def request(**config: object) -> DialRequest:
    return DialRequest("c-1", 2, "+91 91234-56789", "campaign-123", dict(config), 45, 1800)


def response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def twilio_error(status: int, code: int, message: str = "x") -> httpx.Response:
    more = f"https://www.twilio.com/docs/errors/{code}"
    return response(status, {"code": code, "message": message, "more_info": more, "status": status})


# ----------------------------------------------------------------------------- the request


def test_request_carries_the_call_identity_limits_and_callbacks() -> None:
    body = TwilioCarrier(CONFIG).request_body(request(flow_name="wishfin-test"))
    assert body["To"] == "+919123456789" and body["From"] == "+14155550100"
    assert body["Url"] == (
        "http://agent:8765/outbound-answer?call_id=c-1&attempt=2"
        "&campaign_id=campaign-123&flow_name=wishfin-test"
    )
    assert body["Method"] == "POST" and body["StatusCallbackMethod"] == "POST"
    assert body["StatusCallback"] == (
        "https://queue.example.com/api/webhooks/twilio/status?call_id=c-1&attempt=2"
    )
    assert body["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert body["Timeout"] == "45" and body["TimeLimit"] == "1800"
    assert "MachineDetection" not in body and "AsyncAmd" not in body


def test_machine_detection_is_asynchronous_and_reports_to_the_same_webhook() -> None:
    for mode in ("true", "hangup"):
        body = TwilioCarrier(CONFIG).request_body(request(machine_detection=mode))
        assert body["MachineDetection"] == "Enable" and body["AsyncAmd"] == "true"
        amd = str(body["AsyncAmdStatusCallback"])
        assert amd == str(body["StatusCallback"]) + "&amd=1"
        assert body["AsyncAmdStatusCallbackMethod"] == "POST"


async def test_own_answer_url_keeps_its_query_and_the_form_encodes_repeated_events() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return response(201, {"sid": "CA1", "status": "queued"})

    transport = httpx.MockTransport(handler)
    client = httpx.AsyncClient(base_url=CONFIG.api_url, auth=(SID, "token"), transport=transport)
    carrier = TwilioCarrier(CONFIG, client)
    own = request(answer_url="https://bot.example/answer?x=1")
    assert carrier.request_body(own)["Url"] == (
        "https://bot.example/answer?x=1&call_id=c-1&attempt=2&campaign_id=campaign-123"
    )
    try:
        result = await carrier.dial(own)
    finally:
        await carrier.aclose()
    assert result.kind == DialKind.ACCEPTED and result.carrier_call_id == "CA1"
    (sent,) = seen
    assert sent.url.path == CALLS and sent.method == "POST"
    form = parse_qs(sent.content.decode())
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["authorization"] == basic(SID, "token")


def test_helpers() -> None:
    assert e164("+91 91234-56789") == "+919123456789" and e164("14155550100") == "+14155550100"
    url = status_callback_url("https://q.example/", "a b", 3, amd=True)
    assert urlsplit(url).path == "/api/webhooks/twilio/status"
    assert parse_qs(urlsplit(url).query) == {"call_id": ["a b"], "attempt": ["3"], "amd": ["1"]}


def test_plivo_answer_url_is_unchanged_by_the_move_to_a_shared_helper() -> None:
    plivo = PlivoCarrier(PlivoConfig("MA", "t", "1", "https://q", agent_server_url="http://a"))
    body = plivo.request_body(request(flow_name="f"))
    assert body["answer_url"] == (
        "http://a/outbound-answer?call_id=c-1&attempt=2&campaign_id=campaign-123&flow_name=f"
    )


# ------------------------------------------------------------------------- the answers


@pytest.mark.parametrize(
    ("answer", "kind", "throttle"),
    [
        (response(201, {"sid": "CA9", "status": "queued"}), DialKind.ACCEPTED, False),
        (twilio_error(400, 21211, "Invalid 'To' Phone Number"), DialKind.REJECTED, False),
        (twilio_error(400, 21214), DialKind.REJECTED, False),
        (twilio_error(400, 21217), DialKind.REJECTED, False),
        (twilio_error(400, 13224), DialKind.REJECTED, False),
        (twilio_error(400, 21205, "Url parameter is required"), DialKind.REJECTED, False),
        (twilio_error(401, 20003, "Authenticate"), DialKind.UNUSABLE, False),
        (twilio_error(403, 20003, "Authenticate"), DialKind.UNUSABLE, False),
        (twilio_error(404, 20404), DialKind.UNUSABLE, False),
        (twilio_error(400, 21212, "Invalid 'From' Phone Number"), DialKind.UNUSABLE, False),
        (twilio_error(400, 21210), DialKind.UNUSABLE, False),
        (twilio_error(429, 20429, "Too Many Requests"), DialKind.REFUSED, True),
        (twilio_error(500, 20500), DialKind.REFUSED, False),
        (twilio_error(503, 20503), DialKind.REFUSED, False),
        (httpx.Response(502, text="<html>bad gateway</html>"), DialKind.REFUSED, False),
    ],
)
def test_every_create_call_answer_maps(
    answer: httpx.Response, kind: DialKind, throttle: bool
) -> None:
    result = TwilioCarrier.map_response(answer)
    assert result.kind == kind and result.throttle == throttle
    if kind == DialKind.ACCEPTED:
        assert result.carrier_call_id == "CA9"
    else:
        assert str(answer.status_code) in result.reason and "Twilio" in result.reason
    if kind == DialKind.REFUSED:
        assert result.retry_after_s is not None and result.retry_after_s > 0


def test_retry_after_header_is_honoured() -> None:
    answer = twilio_error(429, 20429)
    answer.headers["Retry-After"] = "3"
    assert TwilioCarrier.map_response(answer).retry_after_s == 3.0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), DialKind.REFUSED),
        (httpx.ConnectTimeout("slow connect"), DialKind.REFUSED),
        (httpx.ReadTimeout("slow answer"), DialKind.AMBIGUOUS),
        (httpx.RemoteProtocolError("cut"), DialKind.AMBIGUOUS),
    ],
)
async def test_transport_failures_map(exc: Exception, kind: DialKind) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    client = httpx.AsyncClient(base_url=CONFIG.api_url, transport=httpx.MockTransport(handler))
    carrier = TwilioCarrier(CONFIG, client)
    try:
        assert (await carrier.dial(request())).kind == kind
    finally:
        await carrier.aclose()


# ------------------------------------------------------------------ hang-up and credentials


async def test_hangup_cancels_first_then_completes_an_answered_call() -> None:
    status = {"CA-ringing": "ringing", "CA-talking": "in-progress"}
    seen: list[tuple[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sid = req.url.path.rsplit("/", 1)[-1].removesuffix(".json")
        wanted = parse_qs(req.content.decode())["Status"][0]
        seen.append((sid, wanted))
        if sid not in status:
            return twilio_error(404, 20404)
        if status[sid] != "in-progress" or wanted == "completed":
            status[sid] = wanted
        return response(200, {"sid": sid, "status": status[sid]})

    client = httpx.AsyncClient(base_url=CONFIG.api_url, transport=httpx.MockTransport(handler))
    carrier = TwilioCarrier(CONFIG, client)
    try:
        assert await carrier.hangup("c", 1, "CA-ringing")
        assert await carrier.hangup("c", 1, "CA-talking")
        assert not await carrier.hangup("c", 1, "CA-unknown")
        assert not await carrier.hangup("c", 1, "")
    finally:
        await carrier.aclose()
    assert seen == [
        ("CA-ringing", "canceled"),
        ("CA-talking", "canceled"),
        ("CA-talking", "completed"),
        ("CA-unknown", "canceled"),
    ]
    assert status == {"CA-ringing": "canceled", "CA-talking": "completed"}


async def test_check_credentials() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == f"/2010-04-01/Accounts/{SID}.json"
        if req.headers["authorization"] == basic(SID, "token"):
            return response(200, {"sid": SID, "status": "active"})
        return twilio_error(401, 20003, "Authenticate")

    for token, ok in (("token", True), ("wrong", False)):
        config = TwilioConfig(SID, token, "+1", "https://q", api_url="https://twilio.test")
        client = httpx.AsyncClient(
            base_url=config.api_url,
            auth=(SID, token),
            transport=httpx.MockTransport(handler),
        )
        carrier = TwilioCarrier(config, client)
        try:
            good, reason = await carrier.check_credentials()
        finally:
            await carrier.aclose()
        assert good is ok
        assert ok or ("401" in reason and "20003" in reason)


# ------------------------------------------------------------------------ the callbacks


@pytest.mark.parametrize(
    ("form", "events"),
    [
        ({"CallStatus": "queued"}, []),
        ({"CallStatus": "initiated"}, []),
        ({"CallStatus": "something-new"}, []),
        ({"CallStatus": "ringing"}, [CarrierEvent.RINGING]),
        ({"CallStatus": "in-progress"}, [CarrierEvent.ANSWERED]),
        ({"CallStatus": "in-progress", "AnsweredBy": "human"}, [CarrierEvent.ANSWERED]),
        (
            {"CallStatus": "in-progress", "AnsweredBy": "machine_start"},
            [CarrierEvent.ANSWERED, CarrierEvent.MACHINE],
        ),
        ({"CallStatus": "completed", "CallDuration": "12"}, [CarrierEvent.ENDED]),
    ],
)
def test_progress_callbacks_map_to_events(form: dict[str, str], events: list[CarrierEvent]) -> None:
    assert [event for event, _ in callback_events(form)] == events


@pytest.mark.parametrize(
    ("answered_by", "machine"),
    [
        ("human", False),
        ("unknown", False),
        ("machine_start", True),
        ("machine_end_beep", True),
        ("machine_end_silence", True),
        ("machine_end_other", True),
        ("fax", True),
    ],
)
def test_machine_detection_verdicts(answered_by: str, machine: bool) -> None:
    form = {"CallSid": "CA1", "AccountSid": SID, "AnsweredBy": answered_by}
    events = [event for event, _ in callback_events(form, amd=True)]
    expected = [CarrierEvent.ANSWERED] + ([CarrierEvent.MACHINE] if machine else [])
    assert events == expected
    last = callback_event(form, amd=True)
    assert last is not None and last[0] == expected[-1]


@pytest.mark.parametrize(
    ("form", "outcome"),
    [
        ({"CallStatus": "completed", "CallDuration": "42"}, Outcome.COMPLETED),
        ({"CallStatus": "completed", "AnsweredBy": "machine_end_beep"}, Outcome.MACHINE),
        ({"CallStatus": "completed", "AnsweredBy": "human"}, Outcome.COMPLETED),
        ({"CallStatus": "busy", "SipResponseCode": "486"}, Outcome.BUSY),
        ({"CallStatus": "no-answer", "SipResponseCode": "487"}, Outcome.NO_ANSWER),
        ({"CallStatus": "canceled", "SipResponseCode": "487"}, Outcome.CANCELLED),
        ({"CallStatus": "failed", "SipResponseCode": "503"}, Outcome.FAILED),
        ({"CallStatus": "failed"}, Outcome.FAILED),
        ({"CallStatus": "failed", "SipResponseCode": "404"}, Outcome.REJECTED),
        ({"CallStatus": "failed", "SipResponseCode": "484"}, Outcome.REJECTED),
        ({"CallStatus": "failed", "SipResponseCode": "604"}, Outcome.REJECTED),
        ({"CallStatus": "failed", "ErrorCode": "13224"}, Outcome.REJECTED),
        ({"CallStatus": "failed", "ErrorCode": "21211"}, Outcome.REJECTED),
        ({"CallStatus": "failed", "ErrorCode": "31005"}, Outcome.FAILED),
    ],
)
def test_final_callbacks_map_to_outcomes(form: dict[str, str], outcome: Outcome) -> None:
    assert end_outcome(form) == outcome


def test_final_callback_carries_facts() -> None:
    event = callback_event(
        {
            "CallSid": "CA77",
            "CallStatus": "completed",
            "CallDuration": "42",
            "Timestamp": "Sat, 28 Nov 2026 10:00:47 +0000",
            "SequenceNumber": "3",
        }
    )
    assert event is not None
    kind, facts = event
    assert kind == CarrierEvent.ENDED and facts is not None
    assert facts.outcome == Outcome.COMPLETED and facts.carrier_call_id == "CA77"
    assert facts.duration_s == 42.0 and facts.hangup_cause == "completed"
    assert facts.ended_ms is not None and facts.answered_ms is not None
    assert facts.ended_ms - facts.answered_ms == 42_000
    assert facts.ended_ms % 1000 == 0
    busy = callback_event({"CallStatus": "busy", "SipResponseCode": "486", "ErrorCode": "1"})
    assert busy is not None and busy[1] is not None
    assert busy[1].hangup_cause == "busy (SIP 486, error 1)" and busy[1].answered_ms is None
    bad_time = callback_event({"CallStatus": "no-answer", "Timestamp": "yesterday"})
    assert bad_time is not None and bad_time[1] is not None and bad_time[1].ended_ms is None
    assert callback_event({"CallStatus": "initiated"}) is None


# ---------------------------------------------------------------------------- settings


def test_carrier_selection_and_missing_variables() -> None:
    base = {"_env_file": None, "redis_url": "redis://x"}
    assert load_settings(**base).carrier_name == "simulator"
    assert load_settings(**base, twilio_account_sid=SID).carrier_name == "twilio"
    both = load_settings(**base, twilio_account_sid=SID, plivo_auth_id="MA")
    assert both.carrier_name == "plivo"
    assert load_settings(**base, carrier="twilio").carrier_name == "twilio"
    with pytest.raises(ConfigError) as err:
        twilio_config(load_settings(**base, carrier="twilio", twilio_account_sid=SID))
    message = str(err.value)
    assert "TWILIO_AUTH_TOKEN" in message and "TWILIO_NUMBER" in message
    assert "PUBLIC_URL" in message and "TWILIO_ACCOUNT_SID" not in message
    full = load_settings(
        **base,
        carrier="twilio",
        twilio_account_sid=SID,
        twilio_auth_token="t",
        twilio_number="+14155550100",
        public_url="https://q.example",
        twilio_api_url="http://127.0.0.1:9",
        dial_lease_seconds=5,
    )
    config = twilio_config(full)
    assert config.api_url == "http://127.0.0.1:9" and config.timeout_s == 4.0
    assert load_settings(**base).twilio_api_url == "https://api.twilio.com"

    class Reporter:
        async def report(self, *args: object, **kwargs: object) -> None: ...

    carrier = make_carrier(full, Reporter())
    assert isinstance(carrier, TwilioCarrier) and carrier.name == "twilio"


# ---------------------------------------------------------------------------- signature


@pytest.fixture(scope="module")
def twilio_sdk() -> Any:
    """The official SDK's request_validator module (the cross-check is skipped without it)."""
    return pytest.importorskip("twilio.request_validator")


URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_signature_matches_the_sdk_on_twilios_documented_example(twilio_sdk: Any) -> None:
    validator = twilio_sdk.RequestValidator("12345")
    expected = validator.compute_signature(URL, PARAMS)
    assert sign("12345", URL, PARAMS) == expected
    assert string_to_sign(URL, PARAMS).startswith(URL + "CallSidCA1234567890ABCDECaller")
    assert verify("12345", URL, PARAMS, expected)
    assert not verify("12345", URL, {**PARAMS, "Digits": "0"}, expected)
    assert not verify("other", URL, PARAMS, expected)
    assert not verify("12345", URL, PARAMS, "")


def test_signature_accepts_the_url_with_or_without_its_default_port() -> None:
    signed_without = sign("t", "https://q.example/hook?a=1", PARAMS)
    assert verify("t", "https://q.example:443/hook?a=1", PARAMS, signed_without)
    signed_with = sign("t", "https://q.example:443/hook?a=1", PARAMS)
    assert verify("t", "https://q.example/hook?a=1", PARAMS, signed_with)
    # Another port is another URL.
    assert not verify("t", "https://q.example:8443/hook?a=1", PARAMS, signed_without)


class MultiDict(dict[str, list[str]]):
    """The multi-valued form shape the SDK reads through ``getall`` (Flask's MultiDict)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def test_repeated_parameters_sign_like_the_sdk(twilio_sdk: Any) -> None:
    form = {"b": ["2", "1", "2"], "a": ["x"]}
    expected = twilio_sdk.RequestValidator("t").compute_signature(URL, MultiDict(form))
    assert sign("t", URL, form) == expected


text = st.text(alphabet=string.ascii_letters + string.digits + " +-_.:/?&=%é", max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    token=st.text(min_size=1, max_size=40),
    path=st.text(alphabet=string.ascii_letters + "/-_", max_size=20),
    query=st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=5), text, max_size=3),
    params=st.dictionaries(st.text(min_size=1, max_size=12), text, max_size=8),
)
def test_signature_agrees_with_the_sdk_on_random_requests(
    twilio_sdk: Any, token: str, path: str, query: dict[str, str], params: dict[str, str]
) -> None:
    url = f"https://queue.example.com/{path}" + (f"?{urlencode(query)}" if query else "")
    validator = twilio_sdk.RequestValidator(token)
    ours = sign(token, url, params)
    assert ours == validator.compute_signature(url, params)
    assert validator.validate(url, params, ours)
    assert verify(token, url, params, ours)


# ---------------------------------------------------------------------- the webhook route


async def test_webhook_route_needs_twilio_configured_and_signs_the_public_url(
    redis_url: str, unique_name: str
) -> None:
    public = "https://queue.example.com"
    path = "/api/webhooks/twilio/status?call_id=c1&attempt=1"
    base = {"_env_file": None, "redis_url": redis_url, "queue_name": unique_name}
    client = connect(redis_url)
    queue = CallQueue(client, unique_name)
    try:
        for settings, expected in (
            (load_settings(**base), 503),
            (load_settings(**base, twilio_auth_token="t"), 503),  # no PUBLIC_URL
        ):
            app = create_app(runtime=Runtime(settings, client, queue, redis_url))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as http:
                reply = await http.post(path, data={"CallStatus": "ringing"})
                assert reply.status_code == expected, reply.text

        settings = load_settings(**base, twilio_auth_token="t", public_url=public)
        app = create_app(runtime=Runtime(settings, client, queue, redis_url))
        await queue.enqueue(CallSpec("c1", "+919123456789"))
        (call,) = (await queue.claim(1)).calls
        await queue.accepted(call, CALL_SID)

        who = {"CallSid": CALL_SID, "AccountSid": SID}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:

            async def post(url: str, form: dict[str, str], signed_url: str = "") -> httpx.Response:
                signature = sign("t", signed_url or public + url, form)
                return await http.post(url, data=form, headers={"X-Twilio-Signature": signature})

            missing = await post("/api/webhooks/twilio/status?call_id=c1", {"CallStatus": "x"})
            assert missing.status_code == 422
            initiated = await post(path, {**who, "CallStatus": "initiated"})
            assert initiated.json() == {"applied": False, "code": "ignored"}
            # Signed by Twilio for the URL with its default port: the same URL.
            ringing = {**who, "CallStatus": "ringing"}
            port443 = await post(path, ringing, "https://queue.example.com:443" + path)
            assert port443.json() == {"applied": False, "code": "dup"}  # accepted = ringing
            # The app's own host is not what Twilio called: refused.
            local = await post(path, ringing, "http://test" + path)
            assert local.status_code == 403
            human = await post(f"{path}&amd=1", {**who, "AnsweredBy": "human"})
            assert human.json() == {"applied": True, "code": "ok"}
            record = await queue.get("c1")
            assert record is not None and record.status == CallStatus.IN_PROGRESS
            end = {**who, "CallStatus": "completed", "CallDuration": "7"}
            for _ in range(2):
                done = await post(path, end)
            assert done.json() == {"applied": False, "code": "dup"}
            record = await queue.get("c1")
            assert record is not None and record.status == CallStatus.COMPLETED
            assert record.attempts[0].duration_s == 7.0
            assert record.attempts[0].carrier_call_id == CALL_SID
    finally:
        await client.aclose()


# ---------------------------------------------------------------- the carrier and the fake


class Receiver:
    """Stands in for our app: records the fake's callbacks and checks their signatures."""

    def __init__(self) -> None:
        self.url = ""
        self.hits: list[tuple[str, dict[str, str], bool]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        genuine = verify(TOKEN, str(request.url), form, request.headers["X-Twilio-Signature"])
        kind = request.path_params["path"].rsplit("/", 1)[-1]  # status, outbound-answer, ...
        self.hits.append((kind, form, genuine))
        return Response("<Response/>", media_type="text/xml")

    def of(self, kind: str) -> list[dict[str, str]]:
        return [form for k, form, _ in self.hits if k == kind]


TOKEN = "fake-token"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve_asgi(rec.app) as url:
        rec.url = url
        yield rec


async def test_carrier_against_the_fake_callbacks_are_realistic_and_signed(
    receiver: Receiver,
) -> None:
    async with FakeTwilio(SID, TOKEN, TwilioScenario(ring_s=0.02, talk_s=0.05)) as twilio:
        config = TwilioConfig(
            SID, TOKEN, CALLER_ID, receiver.url, api_url=twilio.url, agent_server_url=receiver.url
        )
        carrier = TwilioCarrier(config)
        try:
            assert await carrier.check_credentials() == (True, "credentials accepted")
            result = await carrier.dial(request())
            assert result.kind == DialKind.ACCEPTED and result.carrier_call_id.startswith("CA")
            await twilio.settled(timeout=5)
        finally:
            await carrier.aclose()
    assert receiver.hits and all(genuine for _, _, genuine in receiver.hits)
    statuses = receiver.of("status")
    assert [f["CallStatus"] for f in statuses] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [f["SequenceNumber"] for f in statuses] == ["0", "1", "2", "3"]
    for form in statuses:
        assert form["CallSid"] == result.carrier_call_id and form["AccountSid"] == SID
        assert form["Direction"] == "outbound-api" and form["To"] == "+919123456789"
        assert form["CallbackSource"] == "call-progress-events"
        assert parsedate_to_datetime(form["Timestamp"]).tzinfo is not None
    assert statuses[-1]["CallDuration"] == "1" and "SipResponseCode" not in statuses[-1]
    (answer,) = receiver.of("outbound-answer")
    assert answer["CallStatus"] == "in-progress" and answer["From"] == "+14155550100"


async def test_the_fake_refuses_like_twilio_and_hangs_up_by_state(receiver: Receiver) -> None:
    scenario = TwilioScenario(ring_s=0.05, talk_s=30)
    async with FakeTwilio(SID, TOKEN, scenario) as twilio:
        wrong = TwilioCarrier(TwilioConfig(SID, "nope", CALLER_ID, "https://q", api_url=twilio.url))
        config = TwilioConfig(
            SID, TOKEN, CALLER_ID, receiver.url, api_url=twilio.url, agent_server_url=receiver.url
        )
        carrier = TwilioCarrier(config)
        try:
            refused = await wrong.dial(request())
            assert refused.kind == DialKind.UNUSABLE and "20003" in refused.reason
            ok, reason = await wrong.check_credentials()
            assert not ok and "401" in reason
            async with httpx.AsyncClient(base_url=twilio.url, auth=(SID, TOKEN)) as api:
                bad = await api.post(
                    f"/2010-04-01/Accounts/{SID}/Calls.json",
                    data={"To": "919123456789", "From": CALLER_ID, "Url": receiver.url},
                )
                assert bad.status_code == 400 and bad.json()["code"] == 21211
                assert TwilioCarrier.map_response(bad).kind == DialKind.REJECTED

                sid = (await carrier.dial(request())).carrier_call_id
                await twilio.wait_until(lambda: twilio.call(sid).state == "in-progress", 5)
                calls = f"/2010-04-01/Accounts/{SID}/Calls/{sid}.json"
                kept = await api.post(calls, data={"Status": "canceled"})
                assert kept.json()["status"] == "in-progress"  # canceled spares an answered call
                assert (await api.get(calls)).json()["status"] == "in-progress"
            assert await carrier.hangup("c-1", 2, sid)
            await twilio.settled(timeout=5)
            assert twilio.call(sid).status == "completed"
            assert not await carrier.hangup("c-1", 2, "CA" + "0" * 32)  # unknown: 404
        finally:
            await carrier.aclose()
            await wrong.aclose()
    final = receiver.of("status")[-1]
    assert final["CallStatus"] == "completed" and int(final["CallDuration"]) < 5


async def test_the_fake_plays_synchronous_machine_detection(receiver: Receiver) -> None:
    scenario = TwilioScenario(outcome="machine", ring_s=0.02, talk_s=0.05)
    async with (
        FakeTwilio(SID, TOKEN, scenario) as twilio,
        httpx.AsyncClient(base_url=twilio.url, auth=(SID, TOKEN)) as api,
    ):
        created = await api.post(
            f"/2010-04-01/Accounts/{SID}/Calls.json",
            data={
                "To": "+15550001111",
                "From": CALLER_ID,
                "Url": f"{receiver.url}/answer",
                "StatusCallback": f"{receiver.url}/status",
                "StatusCallbackEvent": ["answered", "completed"],
                "MachineDetection": "DetectMessageEnd",
            },
        )
        assert created.status_code == 201 and created.json()["status"] == "queued"
        await twilio.settled(timeout=5)
    (answer,) = receiver.of("answer")
    assert answer["AnsweredBy"] == "machine_end_beep"
    statuses = receiver.of("status")
    assert [f["CallStatus"] for f in statuses] == ["in-progress", "completed"]
    assert all(f["AnsweredBy"] == "machine_end_beep" for f in statuses)
    assert end_outcome(statuses[-1]) == Outcome.MACHINE
