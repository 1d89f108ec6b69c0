"""The fake Plivo really behaves as documented: auth, validation, the call flows and their
callbacks (checked by a tiny receiver app that verifies every signature), injected failures,
hangups through the API, the ledger, and Signature V3 against the official SDK."""

from __future__ import annotations

import asyncio
import re
import socket
import string
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.testing import (
    CONCURRENCY_LIMIT_BREACHED,
    FakePlivo,
    Scenario,
    by_callee_suffix,
    serve_asgi,
    sign_v3,
    v3_string_to_sign,
    verify_v3,
)

AUTH_ID = "MAFAKE0000000000TEST"
TOKEN = "s3cr3t-token"
CALLS = f"/v1/Account/{AUTH_ID}/Call/"
FAST = Scenario(ring_s=0.1, talk_s=0.1)
ANSWER_XML = "<Response><Speak>Hello</Speak></Response>"
PLIVO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


# ------------------------------------------------------------------------- the callback receiver


@dataclass(frozen=True)
class Hit:
    kind: str  # the last path segment: ring, answer, hangup, machine, ...
    method: str
    url: str
    params: dict[str, str]
    signed: bool
    headers: dict[str, str]


class Receiver:
    """The app under test, reduced to recording callbacks and checking their signatures."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.hits: list[Hit] = []
        self.fail: dict[str, int] = {}  # kind -> HTTP status to answer with
        self._change = asyncio.Event()
        self.app = Starlette(routes=[Route("/{kind}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        params = (
            None
            if request.method == "GET"
            else {k: str(v) for k, v in (await request.form()).items()}
        )
        url = str(request.url)
        signed = verify_v3(
            self.token,
            url,
            request.headers.get("x-plivo-signature-v3-nonce", ""),
            request.headers.get("x-plivo-signature-v3", ""),
            params,
            request.method,
        )
        shown = params if params is not None else dict(request.query_params)
        self.hits.append(Hit(kind, request.method, url, shown, signed, dict(request.headers)))
        self._change.set()
        self._change = asyncio.Event()
        status = self.fail.get(kind, 200)
        if kind == "answer" and status == 200:
            return Response(ANSWER_XML, media_type="application/xml")
        return Response(status_code=status)

    def of(self, kind: str) -> list[Hit]:
        return [h for h in self.hits if h.kind == kind]

    @property
    def kinds(self) -> list[str]:
        return [h.kind for h in self.hits]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._change.wait()

    def body(self, to: str = "919100000001", **extra: Any) -> dict[str, Any]:
        """A Make-a-Call body whose callbacks come here, with query parameters as ours carry."""
        q = "?call_id=c-1&attempt=2"
        body: dict[str, Any] = {
            "from": "14155550100",
            "to": to,
            "answer_url": f"{self.url}/answer{q}",
            "ring_url": f"{self.url}/ring{q}",
            "hangup_url": f"{self.url}/hangup{q}",
        }
        body.update(extra)
        return body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(TOKEN)
    async with serve_asgi(rec.app) as url:
        rec.url = url
        yield rec


@asynccontextmanager
async def api(
    plivo: FakePlivo, token: str = TOKEN, **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=plivo.url, auth=(AUTH_ID, token), trust_env=False, verify=False, **kwargs
    ) as client:
        yield client


async def dial(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post(CALLS, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["request_uuid"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------------------------ signatures


def test_signature_string_is_the_documented_one() -> None:
    # The worked example of docs.plivo.com/docs/voice/concepts/signature-validation.
    params = {
        "CallUuid": "4vbcpem8-0u46-x1ha-9af1-438vc92bf374",
        "Digits": "1234",
        "From": "+15551111111",
        "To": "+15555555555",
    }
    assert v3_string_to_sign("https://example.com/abcd?foo=bar", "kjsdhfsd87sd7yisud2", params) == (
        "https://example.com/abcd?foo=bar.CallUuid4vbcpem8-0u46-x1ha-9af1-438vc92bf374"
        "Digits1234From+15551111111To+15555555555.kjsdhfsd87sd7yisud2"
    )
    assert v3_string_to_sign("https://h/p?b=2&a=3&a=1", "n", None) == "https://h/p?a=1&a=3&b=2.n"
    assert v3_string_to_sign("https://h/p", "n", {"B": "1", "A": "2"}) == "https://h/p?A2B1.n"
    assert v3_string_to_sign("https://h/p#rc=3", "n", None) == "https://h/p.n"
    assert v3_string_to_sign("https://h/p?x=1", "n", {"y": "2"}, "GET") == "https://h/p?x=1&y=2.n"


def test_verify_accepts_any_of_several_signatures_and_nothing_else() -> None:
    url, params = "https://q.example/hook?call_id=1", {"CallStatus": "completed"}
    good = sign_v3(TOKEN, url, "nonce", params)
    assert verify_v3(TOKEN, url, "nonce", good, params)
    assert verify_v3(TOKEN, url, "nonce", f"{sign_v3('old', url, 'nonce', params)},{good}", params)
    assert not verify_v3(TOKEN, url, "other-nonce", good, params)
    assert not verify_v3(TOKEN, url + "&x=1", "nonce", good, params)
    assert not verify_v3(TOKEN, url, "nonce", good, {"CallStatus": "busy"})
    assert not verify_v3("wrong", url, "nonce", good, params)
    assert not verify_v3(TOKEN, url, "nonce", "", params)
    assert not verify_v3(TOKEN, url, "nonce", "é,ü", params)


@pytest.fixture(scope="module")
def sdk() -> types.ModuleType:
    module: types.ModuleType = pytest.importorskip("plivo.utils.signature_v3")
    return module


_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
_NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=8)
# Escapes that decode to non-ASCII (e.g. %FF) crash the SDK's own URL handling, so the
# cross-check covers what callbacks carry: ASCII once decoded.
_RAW_QUERY = st.text(
    alphabet=string.ascii_letters + string.digits + "=&%+-._~", max_size=24
).filter(lambda q: unquote_plus(q).isascii())


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.sampled_from(["127.0.0.1", "queue.example.com", "localhost"]))
    port = draw(st.sampled_from(["", ":8080", ":443"]))
    path = "/" + "/".join(draw(st.lists(_NAME, max_size=3)))
    pairs = draw(st.lists(st.tuples(_NAME, _PRINTABLE), max_size=4))
    query = draw(st.one_of(st.just(urlencode(pairs)), _RAW_QUERY))
    fragment = draw(st.sampled_from(["", "#rc=3&rp=all"]))
    return f"{scheme}://{host}{port}{path}" + (f"?{query}" if query else "") + fragment


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    url=_urls(),
    params=st.dictionaries(_PRINTABLE.filter(bool), _PRINTABLE, max_size=6),
    nonce=_PRINTABLE,
    token=_PRINTABLE,
    method=st.sampled_from(["POST", "GET"]),
)
def test_signature_matches_the_official_sdk(
    sdk: types.ModuleType, url: str, params: dict[str, str], nonce: str, token: str, method: str
) -> None:
    ours = sign_v3(token, url, nonce, params, method)
    assert sdk.validate_v3_signature(method, url, nonce, token, ours, params=dict(params))
    assert not sdk.validate_v3_signature(method, url, nonce + "x", token, ours, params=dict(params))
    built = (
        sdk.construct_get_url(url, dict(params))
        if method == "GET"
        else sdk.construct_post_url(url, dict(params))
    )
    theirs = sdk.get_signature_v3(token.encode(), built, nonce.encode()).decode()
    assert theirs == ours
    assert verify_v3(token, url, nonce, theirs, params, method)


# ----------------------------------------------------------------------------------- the API


async def test_wrong_credentials_or_account_are_refused(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, FAST) as plivo:
        async with api(plivo, token="wrong") as client:
            refused = await client.post(CALLS, json=receiver.body())
        assert refused.status_code == 401
        assert refused.json()["error"] and refused.json()["api_id"]
        async with api(plivo) as client:
            other = await client.post("/v1/Account/MAOTHER/Call/", json=receiver.body())
            account = await client.get(f"/v1/Account/{AUTH_ID}/")
        async with httpx.AsyncClient(base_url=plivo.url, trust_env=False) as anonymous:
            bare = await anonymous.get(f"/v1/Account/{AUTH_ID}/")
        assert other.status_code == 401 and bare.status_code == 401
        assert account.status_code == 200 and account.json()["auth_id"] == AUTH_ID
        assert plivo.calls == {} and [r.status for r in plivo.api_requests] == [401, 401, 200, 401]
    assert receiver.hits == []


@pytest.mark.parametrize(
    "change",
    [
        {"to": None},
        {"from": ""},
        {"answer_url": None},
        {"to": "+919100000001"},
        {"to": "91 9100 000001"},
        {"from": "ACME"},
        {"answer_url": "ftp://example.com/answer"},
    ],
)
async def test_a_bad_body_is_a_400(receiver: Receiver, change: dict[str, Any]) -> None:
    body = {k: v for k, v in {**receiver.body(), **change}.items() if v is not None}
    async with FakePlivo(AUTH_ID, TOKEN, FAST) as plivo, api(plivo) as client:
        response = await client.post(CALLS, json=body)
        not_json = await client.post(
            CALLS, content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["error"]
        assert not_json.status_code == 400
        assert plivo.calls == {} and plivo.live == 0
    assert receiver.hits == []


async def test_an_answered_call_rings_answers_and_hangs_up_in_order(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, FAST) as plivo, api(plivo) as client:
        response = await client.post(CALLS, json=receiver.body())
        assert response.status_code == 201
        reply = response.json()
        assert reply["message"] == "call fired"
        uuid.UUID(reply["api_id"])
        request_uuid = reply["request_uuid"]
        uuid.UUID(request_uuid)
        await plivo.settled(5)

        assert receiver.kinds == ["ring", "answer", "hangup"]
        assert all(h.signed for h in receiver.hits)
        assert all(h.url.endswith("?call_id=c-1&attempt=2") for h in receiver.hits)
        assert all(h.headers["x-plivo-signature-ma-v3"] for h in receiver.hits)
        ring, answer, hangup = (h.params for h in receiver.hits)
        for params in (ring, answer, hangup):
            assert params["RequestUUID"] == request_uuid
            assert params["CallUUID"] == ring["CallUUID"] and params["ALegUUID"] == ring["CallUUID"]
            assert params["From"] == "14155550100" and params["To"] == "919100000001"
            assert params["Direction"] == "outbound"
        assert ring["CallStatus"] == "ringing"
        assert answer["CallStatus"] == "in-progress" and answer["Event"] == "StartApp"
        assert hangup["CallStatus"] == "completed" and hangup["Event"] == "Hangup"
        assert hangup["HangupCause"] == "NORMAL_CLEARING"
        assert hangup["HangupCauseCode"] == "4000" and hangup["HangupCauseName"] == "Normal Hangup"
        assert hangup["HangupSource"] == "Callee"
        assert hangup["Duration"] == "1" and hangup["BillDuration"] == "60"
        for moment in ("StartTime", "AnswerTime", "EndTime"):
            assert PLIVO_TIME.match(hangup[moment]), hangup
        assert "Machine" not in hangup

        call = plivo.call(request_uuid)
        assert call.call_status == "completed" and call.state == "ended"
        assert call.answer_status == 200 and call.answer_body == ANSWER_XML
        assert call.hangup_params == hangup and call.body == receiver.body()
        (made,) = plivo.call_requests
        assert made.status == 201 and made.request_uuid == request_uuid
        assert made.to == "919100000001" and made.body == receiver.body()
        assert [c.kind for c in plivo.callbacks] == ["ring", "answer", "hangup"]
        assert all(c.ok and c.attempts == 1 and c.done for c in plivo.callbacks)
        assert plivo.max_live == 1 and plivo.live == 0
        assert [n for _, n in plivo.live_history] == [1, 0]


@pytest.mark.parametrize(
    ("outcome", "kinds", "status", "cause", "code"),
    [
        ("busy", ["hangup"], "busy", "USER_BUSY", "3010"),
        ("no_answer", ["ring", "hangup"], "no-answer", "NO_ANSWER", "6010"),
        ("failed", ["hangup"], "failed", "DESTINATION_OUT_OF_ORDER", "2010"),
        ("timeout", ["hangup"], "timeout", "RECOVERY_ON_TIMER_EXPIRE", "3070"),
    ],
)
async def test_unanswered_outcomes(
    receiver: Receiver, outcome: Any, kinds: list[str], status: str, cause: str, code: str
) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(outcome=outcome, ring_s=0.05)) as plivo:
        async with api(plivo) as client:
            await dial(client, receiver.body())
        await plivo.settled(5)
    assert receiver.kinds == kinds and all(h.signed for h in receiver.hits)
    hangup = receiver.of("hangup")[0].params
    assert hangup["CallStatus"] == status
    assert hangup["HangupCause"] == cause and hangup["HangupCauseCode"] == code
    assert hangup["AnswerTime"] == "" and hangup["Duration"] == "0"
    assert hangup["BillDuration"] == "0"
    assert receiver.of("answer") == []


async def test_ring_timeout_of_the_request_wins_over_a_long_ring(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=30)) as plivo, api(plivo) as client:
        await dial(client, receiver.body(ring_timeout=0.1))
        await plivo.settled(5)
    assert receiver.kinds == ["ring", "hangup"]
    assert receiver.of("hangup")[0].params["CallStatus"] == "no-answer"


@pytest.mark.parametrize(
    ("outcome", "detection", "machine", "code"),
    [
        ("machine", "true", "true", "4000"),
        ("machine", "hangup", "true", "9100"),
        ("answered", "true", "false", "4000"),
    ],
)
async def test_machine_detection(
    receiver: Receiver, outcome: Any, detection: str, machine: str, code: str
) -> None:
    body = receiver.body(
        machine_detection=detection, machine_detection_url=f"{receiver.url}/machine?call_id=c-1"
    )
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(outcome=outcome, ring_s=0.02)) as plivo:
        async with api(plivo) as client:
            await dial(client, body)
        await plivo.settled(5)
    assert sorted(receiver.kinds) == ["answer", "hangup", "machine", "ring"]
    assert all(h.signed for h in receiver.hits)
    detected = receiver.of("machine")[0].params
    assert detected["Event"] == "MachineDetection" and detected["Machine"] == machine
    assert detected["CallStatus"] == "in-progress"
    assert detected["IfMachine"] == ("hangup" if detection == "hangup" else "continue")
    hangup = receiver.of("hangup")[0].params
    assert hangup["Machine"] == machine and hangup["HangupCauseCode"] == code
    assert hangup["CallStatus"] == "completed"


async def test_a_machine_without_detection_looks_like_a_person(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(outcome="machine", ring_s=0.02)) as plivo:
        async with api(plivo) as client:
            await dial(client, receiver.body())
        await plivo.settled(5)
    assert receiver.kinds == ["ring", "answer", "hangup"]
    assert "Machine" not in receiver.of("hangup")[0].params


@pytest.mark.parametrize(
    ("scenario", "status", "error_code"),
    [
        (Scenario(api_status=429, retry_after_s=2), 429, None),
        (Scenario(api_status=500), 500, None),
        (Scenario(api_status=400), 400, None),
        (Scenario(api_status=401), 401, None),
        (Scenario(api_error_code=5030), 403, 5030),
        (Scenario(api_error_code=5030, api_status=429), 429, 5030),
    ],
)
async def test_injected_api_errors_place_no_call(
    receiver: Receiver, scenario: Scenario, status: int, error_code: int | None
) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, scenario) as plivo, api(plivo) as client:
        response = await client.post(CALLS, json=receiver.body())
        assert response.status_code == status
        reply = response.json()
        assert reply["error"] and reply["api_id"]
        assert reply.get("error_code") == error_code
        if error_code == 5030:
            assert "5030" in response.text and "Concurrency Limit Breached" in response.text
        if scenario.retry_after_s is not None:
            assert response.headers["retry-after"] == "2"
        assert plivo.calls == {} and plivo.max_live == 0
        assert [r.status for r in plivo.call_requests] == [status]
        await plivo.settled(1)
    assert receiver.hits == []


async def test_a_slow_answer_still_places_the_call(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(api_delay_s=0.5, ring_s=0.02)) as plivo:
        async with api(plivo, timeout=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(CALLS, json=receiver.body())
        await plivo.settled(5)
        assert len(plivo.calls) == 1 and [r.status for r in plivo.call_requests] == [201]
    assert receiver.kinds == ["ring", "answer", "hangup"]


async def test_duplicate_callbacks(receiver: Receiver) -> None:
    scenario = Scenario(ring_s=0.1, talk_s=0.05, duplicate_callbacks=True)
    async with FakePlivo(AUTH_ID, TOKEN, scenario) as plivo, api(plivo) as client:
        await dial(client, receiver.body())
        await plivo.settled(5)
        assert [(c.kind, c.copy) for c in plivo.callbacks] == [
            ("ring", 1),
            ("ring", 2),
            ("answer", 1),
            ("hangup", 1),
            ("hangup", 2),
        ]
    assert receiver.kinds == ["ring", "ring", "answer", "hangup", "hangup"]
    first, second = receiver.of("hangup")
    assert first.params == second.params and first.signed and second.signed
    assert (
        first.headers["x-plivo-signature-v3-nonce"] != second.headers["x-plivo-signature-v3-nonce"]
    )


@pytest.mark.parametrize(
    ("outcome", "kinds"),
    [("no_answer", ["hangup", "ring"]), ("answered", ["answer", "hangup", "ring"])],
)
async def test_hangup_before_ring(receiver: Receiver, outcome: Any, kinds: list[str]) -> None:
    scenario = Scenario(outcome=outcome, ring_s=0.02, talk_s=0.02, hangup_before_ring=True)
    async with FakePlivo(AUTH_ID, TOKEN, scenario) as plivo, api(plivo) as client:
        await dial(client, receiver.body())
        await plivo.settled(5)
    assert receiver.kinds == kinds


async def test_delayed_callbacks_can_arrive_after_the_answer(receiver: Receiver) -> None:
    scenario = Scenario(ring_s=0.02, talk_s=0.15, callback_delay_s=0.3)
    async with FakePlivo(AUTH_ID, TOKEN, scenario) as plivo, api(plivo) as client:
        await dial(client, receiver.body())
        await plivo.settled(5)
    assert receiver.kinds == ["answer", "ring", "hangup"]


async def test_get_callbacks_are_signed_over_the_url(receiver: Receiver) -> None:
    body = receiver.body(ring_method="GET", hangup_method="GET")
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.1, talk_s=0.02)) as plivo:
        async with api(plivo) as client:
            await dial(client, body)
        await plivo.settled(5)
    ring, hangup = receiver.of("ring")[0], receiver.of("hangup")[0]
    assert ring.method == hangup.method == "GET"
    assert ring.signed and hangup.signed
    assert ring.params["call_id"] == "c-1" and ring.params["CallStatus"] == "ringing"


async def test_several_auth_tokens_give_several_signatures(receiver: Receiver) -> None:
    async with FakePlivo(
        AUTH_ID, TOKEN, Scenario(ring_s=0.02, talk_s=0.02), extra_signing_tokens=("previous",)
    ) as plivo:
        async with api(plivo) as client:
            await dial(client, receiver.body())
        await plivo.settled(5)
    hangup = receiver.of("hangup")[0]
    assert hangup.signed and hangup.headers["x-plivo-signature-v3"].count(",") == 1
    assert verify_v3(
        "previous",
        hangup.url,
        hangup.headers["x-plivo-signature-v3-nonce"],
        hangup.headers["x-plivo-signature-v3"],
        hangup.params,
    )


# ------------------------------------------------------------------------- hanging up by the API


async def test_hanging_up_an_answered_call(receiver: Receiver) -> None:
    scenario = Scenario(ring_s=0.02, talk_s=30)
    async with FakePlivo(AUTH_ID, TOKEN, scenario) as plivo, api(plivo) as client:
        request_uuid = await dial(client, receiver.body())
        await receiver.wait_for(lambda: bool(receiver.of("answer")))
        call_uuid = receiver.of("answer")[0].params["CallUUID"]
        assert (
            await client.delete(f"/v1/Account/{AUTH_ID}/Request/{request_uuid}/")
        ).status_code == 404
        hung = await client.delete(f"{CALLS}{call_uuid}/")
        assert hung.status_code == 204 and hung.content == b""
        await plivo.settled(5)
        again = await client.delete(f"{CALLS}{call_uuid}/")
        assert again.status_code == 404 and again.json()["error"]
    hangup = receiver.of("hangup")[0].params
    assert hangup["CallStatus"] == "completed" and hangup["HangupSource"] == "API Request"
    assert hangup["HangupCauseCode"] == "4000" and hangup["AnswerTime"] != ""


@pytest.mark.parametrize(
    "path", ["Request/{request_uuid}/", "Call/{request_uuid}/", "Call/{call_uuid}/"]
)
async def test_cancelling_a_ringing_call(receiver: Receiver, path: str) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=30)) as plivo, api(plivo) as client:
        request_uuid = await dial(client, receiver.body())
        await receiver.wait_for(lambda: bool(receiver.of("ring")))
        call_uuid = receiver.of("ring")[0].params["CallUUID"]
        target = path.format(request_uuid=request_uuid, call_uuid=call_uuid)
        cancelled = await client.delete(f"/v1/Account/{AUTH_ID}/{target}")
        assert cancelled.status_code == 204
        await plivo.settled(5)
    assert receiver.kinds == ["ring", "hangup"]
    hangup = receiver.of("hangup")[0].params
    assert hangup["CallStatus"] == "cancel" and hangup["HangupCause"] == "ORIGINATOR_CANCEL"
    assert hangup["HangupCauseCode"] == "1000" and hangup["HangupSource"] == "API Request"
    assert hangup["AnswerTime"] == ""


async def test_hanging_up_unknown_calls_is_a_404(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, FAST) as plivo, api(plivo) as client:
        unknown = str(uuid.uuid4())
        assert (await client.delete(f"{CALLS}{unknown}/")).status_code == 404
        assert (await client.delete(f"/v1/Account/{AUTH_ID}/Request/{unknown}/")).status_code == 404


# -------------------------------------------------------------------------------- the ledger


async def test_max_live_and_request_rate(receiver: Receiver) -> None:
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.05, talk_s=0.3)) as plivo:
        async with api(plivo) as client:
            numbers = [f"9191000000{i:02d}" for i in range(5)]
            await asyncio.gather(*(dial(client, receiver.body(to=to)) for to in numbers))
            await plivo.settled(5)
            assert plivo.max_requests_in_any_second() == 5
            await dial(client, receiver.body())
            await plivo.settled(5)
        assert plivo.max_live == 5 and plivo.live == 0
        assert max(n for _, n in plivo.live_history) == 5 and plivo.live_history[-1][1] == 0
        assert plivo.max_requests_in_any_second(window_s=60) == 6
        assert plivo.max_requests_in_any_second(window_s=1e-9) == 1
        assert len(plivo.calls) == 6 and plivo.pending_tasks == 0
    assert len(receiver.of("hangup")) == 6


@pytest.mark.parametrize("mode", ["hangup", "api"])
async def test_concurrency_limit_breach(receiver: Receiver, mode: Any) -> None:
    async with FakePlivo(
        AUTH_ID,
        TOKEN,
        Scenario(ring_s=0.02, talk_s=30),
        concurrency_limit=2,
        concurrency_breach=mode,
    ) as plivo:
        async with api(plivo) as client:
            first = await dial(client, receiver.body())
            second = await dial(client, receiver.body())
            third = await client.post(CALLS, json=receiver.body(to="919100000003"))
            if mode == "api":
                assert third.status_code == 403 and third.json()["error_code"] == 5030
            else:
                assert third.status_code == 201
                breached = plivo.call(third.json()["request_uuid"])
                await plivo.wait_until(lambda: breached.hangup_delivered.is_set())
                assert breached.call_status == "failed"
                assert breached.hangup_cause == CONCURRENCY_LIMIT_BREACHED
                hangups = [h.params for h in receiver.of("hangup")]
                assert [h["HangupCauseCode"] for h in hangups] == ["5030"]
                assert hangups[0]["HangupCauseName"] == "Concurrency Limit Breached"
            assert first != second and plivo.live == 2
            for call in list(plivo.calls.values()):
                if not call.ended:
                    assert (await client.delete(f"{CALLS}{call.call_uuid}/")).status_code == 204
            await plivo.settled(5)
        assert plivo.max_live == 2
    assert not any(h.params["To"] == "919100000003" for h in receiver.of("ring"))


async def test_scenarios_by_callee_suffix(receiver: Receiver) -> None:
    choose = by_callee_suffix(
        {
            "0": Scenario(outcome="busy", ring_s=0.01),
            "99": Scenario(outcome="no_answer", ring_s=0.02),
        },
        default=Scenario(ring_s=0.02, talk_s=0.02),
    )
    async with FakePlivo(AUTH_ID, TOKEN, choose) as plivo, api(plivo) as client:
        uuids = {to: await dial(client, receiver.body(to=to)) for to in ("9110", "9199", "9191")}
        await plivo.settled(5)
        statuses = {to: plivo.call(u).call_status for to, u in uuids.items()}
    assert statuses == {"9110": "busy", "9199": "no-answer", "9191": "completed"}


async def test_api_rate_limit(receiver: Receiver) -> None:
    async with (
        FakePlivo(AUTH_ID, TOKEN, FAST, api_rate_limit=(3, 5.0)) as plivo,
        api(plivo) as client,
    ):
        codes = [(await client.get(f"/v1/Account/{AUTH_ID}/")).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


# ---------------------------------------------------------------------- delivery and shutdown


async def test_callbacks_to_a_dead_app_are_retried_then_recorded_failed(receiver: Receiver) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/hangup?call_id=c-1"
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.02, talk_s=0.02)) as plivo:
        async with api(plivo) as client:
            await dial(client, receiver.body(hangup_url=dead))
        await plivo.settled(5)
        (hangup,) = [c for c in plivo.callbacks if c.kind == "hangup"]
        assert not hangup.ok and hangup.status is None and hangup.error
        assert hangup.attempts == 2  # Plivo's default: one retry, on connection errors
        assert hangup.url == dead


async def test_retry_policy_and_count_come_from_the_url_fragment(receiver: Receiver) -> None:
    receiver.fail["hangup"] = 500
    receiver.fail["ring"] = 500
    body = receiver.body(hangup_url=f"{receiver.url}/hangup?call_id=c-1#rc=2&rp=5xx")
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.1, talk_s=0.02)) as plivo:
        async with api(plivo) as client:
            await dial(client, body)
        await plivo.settled(5)
        ring = plivo.callbacks_for(next(iter(plivo.calls)), "ring")[0]
        hangup = plivo.callbacks_for(next(iter(plivo.calls)), "hangup")[0]
    assert ring.attempts == 1 and ring.status == 500  # the default policy does not retry 5xx
    assert hangup.attempts == 3 and hangup.status == 500 and not hangup.ok
    assert len(receiver.of("hangup")) == 3 and all(h.signed for h in receiver.of("hangup"))


async def test_an_unreachable_answer_url_ends_the_call_with_7011(receiver: Receiver) -> None:
    receiver.fail["answer"] = 500
    async with FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.02)) as plivo, api(plivo) as client:
        await dial(client, receiver.body())
        await plivo.settled(5)
    hangup = receiver.of("hangup")[0].params
    assert hangup["CallStatus"] == "completed" and hangup["HangupCauseCode"] == "7011"
    assert hangup["HangupSource"] == "Error"


async def test_exit_cancels_calls_and_callbacks_under_way(receiver: Receiver) -> None:
    plivo = FakePlivo(AUTH_ID, TOKEN, Scenario(ring_s=0.02, talk_s=60, callback_delay_s=60))
    async with plivo, api(plivo) as client:
        await dial(client, receiver.body())
        await plivo.wait_until(lambda: any(c.answer_status for c in plivo.calls.values()))
        assert plivo.live == 1 and plivo.pending_tasks >= 2
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert plivo.pending_tasks == 0
    with pytest.raises(RuntimeError):
        _ = plivo.url
    assert receiver.kinds == ["answer"]
