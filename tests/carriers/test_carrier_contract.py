"""One contract, every real carrier: Plivo (against FakePlivo) and Twilio (against FakeTwilio)
behave the same for the queue.

Each test runs the real engine on the session's server, a Dispatcher with the carrier under
test, and the app (its signed webhook routes) served over HTTP as the carrier's callbacks'
target; the fake carrier plays every call and keeps the ledger the assertions read: what was
dialed, hung up, refused, how many calls were live at once and how fast calls were placed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callqueue.api.app import create_app
from callqueue.carriers.base import Carrier
from callqueue.carriers.plivo import PlivoCarrier, PlivoConfig
from callqueue.carriers.plivo_signature import sign_v3
from callqueue.carriers.twilio import TwilioCarrier, TwilioConfig
from callqueue.carriers.twilio_signature import sign as twilio_sign
from callqueue.config import Settings, load_settings
from callqueue.dispatcher import Dispatcher
from callqueue.engine.connection import connect
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallRecord, CallSpec, CallStatus, Outcome, RetryPolicy
from callqueue.runtime import Runtime
from callqueue.testing import (
    INVALID_DESTINATION,
    FakePlivo,
    FakeTwilio,
    Scenario,
    TwilioScenario,
    serve_asgi,
)
from waiting import until

MAX_LIVE, RATE = 3, 10
TOKEN = "the-right-token"
PLIVO_ID = "MAFAKEACCOUNT0000001"
TWILIO_SID = "AC" + "f" * 32
CALLER = "+14155550100"

# ------------------------------------------------------------------- one neutral scenario


@dataclass(frozen=True)
class Play:
    """What the callee's side does, in words both fakes understand."""

    outcome: Literal["answered", "busy", "no_answer", "machine", "invalid"] = "answered"
    ring_s: float = 0.05
    talk_s: float = 0.2
    refuse_with: int | None = None  # the API answers this HTTP status: no call placed
    duplicate: bool = False  # every callback twice
    out_of_order: bool = False  # progress callbacks only after the final one


Rules = dict[str, tuple[Play, bool]]  # callee suffix -> (play, only the first dial of a number)


class Harness(Protocol):
    name: str
    public_url: str  # where the app under test is served (its PUBLIC_URL)

    def settings(self) -> dict[str, Any]: ...

    def carrier(self, public_url: str, agent_url: str, token: str) -> Carrier: ...

    def fake(self, rules: Rules) -> Any: ...

    def dialed(self) -> Counter[tuple[str, str]]: ...

    async def settled(self) -> None:
        """Every call over at the carrier and every callback delivered."""
        ...

    def refused(self, status: int) -> int: ...

    def max_live(self) -> int: ...

    def max_rate(self) -> int: ...

    def carrier_ids(self) -> set[str]: ...

    def ringing(self, call_id: str) -> bool: ...

    def hung_up(self, call_id: str) -> bool: ...

    def ended_as_cancelled(self, call_id: str) -> bool: ...

    def talk_seconds(self, call_id: str) -> float | None: ...

    def duplicated(self, call_id: str) -> bool: ...

    def late_progress(self, call_id: str) -> bool: ...

    def webhook_answers(self) -> Counter[int | None]:
        """HTTP status -> callbacks to our webhooks (not the bot's answer URL) answered so."""
        ...

    def forgeries(self, call_id: str, other_call_id: str) -> list[tuple[str, dict[str, str]]]:
        """(URL path + query, headers) of callbacks that must be refused, with their form."""
        ...

    def forged_form(self) -> dict[str, str]: ...


def _suffix_source(rules: Rules, convert: Callable[[Play], Any], key: str) -> Callable[..., Any]:
    seen: Counter[str] = Counter()

    def choose(body: dict[str, Any]) -> Any:
        callee = str(body.get(key, ""))
        seen[callee] += 1
        for suffix, (play, first_only) in sorted(rules.items(), key=lambda r: -len(r[0])):
            if callee.endswith(suffix) and (not first_only or seen[callee] == 1):
                return convert(play)
        return convert(Play())

    return choose


def _identity(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["call_id"][0], query["attempt"][0]


class PlivoHarness:
    name = "plivo"
    public_url = ""

    def __init__(self) -> None:
        self.plivo: FakePlivo | None = None

    @property
    def api(self) -> FakePlivo:
        assert self.plivo is not None
        return self.plivo

    def settings(self) -> dict[str, Any]:
        return {
            "plivo_auth_id": PLIVO_ID,
            "plivo_auth_token": TOKEN,
            "plivo_number": CALLER,
            "plivo_api_url": self.api.url,
        }

    def carrier(self, public_url: str, agent_url: str, token: str) -> Carrier:
        config = PlivoConfig(
            PLIVO_ID, token, CALLER, public_url, api_url=self.api.url, agent_server_url=agent_url
        )
        return PlivoCarrier(config)

    @staticmethod
    def scenario(play: Play) -> Scenario:
        timing = {"ring_s": play.ring_s, "talk_s": play.talk_s}
        faults = {"duplicate_callbacks": play.duplicate, "hangup_before_ring": play.out_of_order}
        if play.refuse_with is not None:
            return Scenario(api_status=play.refuse_with, retry_after_s=0.2)
        if play.outcome == "invalid":
            return Scenario(outcome="failed", hangup_cause=INVALID_DESTINATION, **timing, **faults)
        return Scenario(outcome=play.outcome, **timing, **faults)

    def fake(self, rules: Rules) -> FakePlivo:
        self.plivo = FakePlivo(PLIVO_ID, TOKEN, _suffix_source(rules, self.scenario, "to"))
        return self.plivo

    def _calls(self, call_id: str) -> list[Any]:
        return [
            c for c in self.api.calls.values() if _identity(str(c.body["answer_url"]))[0] == call_id
        ]

    async def settled(self) -> None:
        await self.api.settled(timeout=10)

    def dialed(self) -> Counter[tuple[str, str]]:
        return Counter(
            _identity(str(r.body["answer_url"]))
            for r in self.api.api_requests
            if r.is_make_call and r.status == 201
        )

    def refused(self, status: int) -> int:
        return sum(1 for r in self.api.api_requests if r.is_make_call and r.status == status)

    def max_live(self) -> int:
        return self.api.max_live

    def max_rate(self) -> int:
        return self.api.max_requests_in_any_second()

    def carrier_ids(self) -> set[str]:
        return {c.call_uuid for c in self.api.calls.values()}

    def ringing(self, call_id: str) -> bool:
        return any(c.state == "ringing" for c in self._calls(call_id))

    def hung_up(self, call_id: str) -> bool:
        ids = {i for c in self._calls(call_id) for i in (c.call_uuid, c.request_uuid)}
        return any(
            r.method == "DELETE" and r.status == 204 and any(i in r.path for i in ids)
            for r in self.api.api_requests
        )

    def ended_as_cancelled(self, call_id: str) -> bool:
        return any(c.call_status == "cancel" for c in self._calls(call_id))

    def talk_seconds(self, call_id: str) -> float | None:
        (call,) = self._calls(call_id)
        if call.answered_at is None or call.ended_at is None:
            return None
        return float(call.ended_at - call.answered_at)

    def duplicated(self, call_id: str) -> bool:
        uuids = {c.request_uuid for c in self._calls(call_id)}
        return any(cb.copy == 2 and cb.request_uuid in uuids for cb in self.api.callbacks)

    def webhook_answers(self) -> Counter[int | None]:
        ours = ("ring", "machine_detection", "hangup")
        return Counter(cb.status for cb in self.api.callbacks if cb.kind in ours)

    def late_progress(self, call_id: str) -> bool:
        uuids = {c.request_uuid for c in self._calls(call_id)}
        mine = [cb for cb in self.api.callbacks if cb.request_uuid in uuids]
        end = min(cb.at for cb in mine if cb.kind == "hangup")
        return any(cb.kind == "ring" and cb.at > end for cb in mine)

    def forgeries(self, call_id: str, other_call_id: str) -> list[tuple[str, dict[str, str]]]:
        path = f"/api/webhooks/plivo/hangup?call_id={call_id}&attempt=1"
        other = f"/api/webhooks/plivo/hangup?call_id={other_call_id}&attempt=1"
        form, nonce = self.forged_form(), "12345678901234567890"

        def signed(url: str, token: str) -> dict[str, str]:
            return {
                "X-Plivo-Signature-V3": sign_v3(token, url, nonce, form),
                "X-Plivo-Signature-V3-Nonce": nonce,
            }

        base = self.public_url
        return [
            (path, {}),  # unsigned
            (path, {"X-Plivo-Signature-V3": "bm9wZQ==", "X-Plivo-Signature-V3-Nonce": "1"}),
            (path, signed(base + path, "a-wrong-token")),
            (path, signed(base + other, TOKEN)),  # genuine, but for another call
        ]

    def forged_form(self) -> dict[str, str]:
        return {"CallStatus": "busy", "CallUUID": "forged", "HangupCause": "USER_BUSY"}


class TwilioHarness:
    name = "twilio"
    public_url = ""

    def __init__(self) -> None:
        self.twilio: FakeTwilio | None = None

    @property
    def api(self) -> FakeTwilio:
        assert self.twilio is not None
        return self.twilio

    def settings(self) -> dict[str, Any]:
        return {
            "twilio_account_sid": TWILIO_SID,
            "twilio_auth_token": TOKEN,
            "twilio_number": CALLER,
            "twilio_api_url": self.api.url,
        }

    def carrier(self, public_url: str, agent_url: str, token: str) -> Carrier:
        config = TwilioConfig(
            TWILIO_SID, token, CALLER, public_url, api_url=self.api.url, agent_server_url=agent_url
        )
        return TwilioCarrier(config)

    @staticmethod
    def scenario(play: Play) -> TwilioScenario:
        timing = {"ring_s": play.ring_s, "talk_s": play.talk_s}
        faults = {
            "duplicate_callbacks": play.duplicate,
            "completed_before_ringing": play.out_of_order,
        }
        if play.refuse_with is not None:
            return TwilioScenario(api_status=play.refuse_with, retry_after_s=0.2)
        if play.outcome == "invalid":
            return TwilioScenario(outcome="failed", sip_response_code=404, **timing, **faults)
        return TwilioScenario(outcome=play.outcome, **timing, **faults)

    def fake(self, rules: Rules) -> FakeTwilio:
        source = _suffix_source(rules, self.scenario, "To")
        self.twilio = FakeTwilio(TWILIO_SID, TOKEN, source)
        return self.twilio

    def _calls(self, call_id: str) -> list[Any]:
        return [c for c in self.api.calls.values() if _identity(c.param("Url") or "")[0] == call_id]

    async def settled(self) -> None:
        await self.api.settled(timeout=10)

    def dialed(self) -> Counter[tuple[str, str]]:
        return Counter(
            _identity(r.get("Url") or "") for r in self.api.create_requests if r.status == 201
        )

    def refused(self, status: int) -> int:
        return sum(1 for r in self.api.create_requests if r.status == status)

    def max_live(self) -> int:
        return self.api.max_live

    def max_rate(self) -> int:
        return self.api.max_requests_in_any_second()

    def carrier_ids(self) -> set[str]:
        return set(self.api.calls)

    def ringing(self, call_id: str) -> bool:
        return any(c.state == "ringing" for c in self._calls(call_id))

    def hung_up(self, call_id: str) -> bool:
        sids = {c.sid for c in self._calls(call_id)}
        return any(r.call_sid in sids and r.status == 200 for r in self.api.update_requests)

    def ended_as_cancelled(self, call_id: str) -> bool:
        return any(c.ended and c.status == "canceled" for c in self._calls(call_id))

    def talk_seconds(self, call_id: str) -> float | None:
        (call,) = self._calls(call_id)
        if call.answered_at is None or call.ended_at is None:
            return None
        return float(call.ended_at - call.answered_at)

    def duplicated(self, call_id: str) -> bool:
        sids = {c.sid for c in self._calls(call_id)}
        return any(cb.copy == 2 and cb.call_sid in sids for cb in self.api.callbacks)

    def webhook_answers(self) -> Counter[int | None]:
        return Counter(cb.status for cb in self.api.callbacks if cb.kind in ("status", "amd"))

    def late_progress(self, call_id: str) -> bool:
        sids = {c.sid for c in self._calls(call_id)}
        mine = [cb for cb in self.api.callbacks if cb.call_sid in sids and cb.kind == "status"]
        final = {"completed", "busy", "no-answer", "failed", "canceled"}
        end = min(cb.at for cb in mine if cb.params["CallStatus"] in final)
        return any(cb.params["CallStatus"] == "ringing" and cb.at > end for cb in mine)

    def forgeries(self, call_id: str, other_call_id: str) -> list[tuple[str, dict[str, str]]]:
        path = f"/api/webhooks/twilio/status?{urlencode({'call_id': call_id, 'attempt': 1})}"
        other = f"/api/webhooks/twilio/status?{urlencode({'call_id': other_call_id, 'attempt': 1})}"
        form, base = self.forged_form(), self.public_url
        return [
            (path, {}),  # unsigned
            (path, {"X-Twilio-Signature": "bm9wZQ=="}),
            (path, {"X-Twilio-Signature": twilio_sign("a-wrong-token", base + path, form)}),
            (path, {"X-Twilio-Signature": twilio_sign(TOKEN, base + other, form)}),
        ]

    def forged_form(self) -> dict[str, str]:
        return {"CallStatus": "busy", "CallSid": "CAforged", "SipResponseCode": "486"}


HARNESSES: dict[str, Callable[[], Harness]] = {"plivo": PlivoHarness, "twilio": TwilioHarness}


# -------------------------------------------------------------------------- the stack


def agent_app() -> Starlette:
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def answer(_: Request) -> Response:
        return Response("<Response><Say>hello</Say></Response>", media_type="text/xml")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/outbound-answer", answer, methods=["POST", "GET"]),
        ]
    )


@dataclass
class Stack:
    harness: Harness
    queue: CallQueue
    http: httpx.AsyncClient
    dispatcher: Dispatcher

    async def record(self, call_id: str) -> CallRecord:
        record = await self.queue.get(call_id)
        assert record is not None, call_id
        return record


@asynccontextmanager
async def stack(
    kind: str,
    redis_url: str,
    queue_name: str,
    rules: Rules,
    *,
    carrier_token: str = TOKEN,
) -> AsyncIterator[Stack]:
    harness = HARNESSES[kind]()
    options = QueueOptions(
        max_live_calls=MAX_LIVE,
        rate_per_second=RATE,
        ring_timeout_s=5,
        default_max_duration_s=5,
        grace_s=2,
        dial_lease_s=5,
        rate_backoff_s=1,
        retry=RetryPolicy(base_delay_s=0.05, max_delay_s=0.1),
    )
    client = connect(redis_url)
    queue = CallQueue(client, queue_name, options)
    async with AsyncExitStack() as exits:
        agent_url = await exits.enter_async_context(serve_asgi(agent_app()))
        await exits.enter_async_context(harness.fake(rules))
        settings: Settings = load_settings(
            _env_file=None,
            redis_url=redis_url,
            queue_name=queue_name,
            api_keys="",
            carrier=kind,
            agent_server_url=agent_url,
            **harness.settings(),
        )
        runtime = Runtime(settings, client, queue, redis_url)
        exits.push_async_callback(runtime.aclose)
        app = create_app(runtime=runtime)
        public_url = await exits.enter_async_context(serve_asgi(app))
        # The carrier calls back this app: PUBLIC_URL is where it is served.
        app.state.settings = settings.model_copy(update={"public_url": public_url})
        harness.public_url = public_url
        carrier = harness.carrier(public_url, agent_url, carrier_token)
        exits.push_async_callback(carrier.aclose)
        writer = EventWriter(queue)
        dispatcher = Dispatcher(queue, carrier, writer, concurrency=4)
        await dispatcher.start()
        exits.push_async_callback(dispatcher.stop, 5.0)
        http = await exits.enter_async_context(httpx.AsyncClient(base_url=public_url, timeout=5))
        yield Stack(harness, queue, http, dispatcher)


def number(i: int, suffix: str) -> str:
    return f"+9191234{i:02d}7{suffix}"


carriers = pytest.mark.parametrize("kind", list(HARNESSES))


# ------------------------------------------------------------------------------ the contract

RULES: Rules = {
    "01": (Play(), False),
    "02": (Play(outcome="busy"), False),
    "03": (Play(outcome="no_answer"), False),
    "04": (Play(refuse_with=400), False),  # the carrier refuses the number at dial time
    "05": (Play(refuse_with=429), True),  # pushed back once, then fine
    "06": (Play(duplicate=True), False),
    "07": (Play(out_of_order=True), False),
    "08": (Play(outcome="invalid"), False),  # accepted, then the number turns out invalid
    "09": (Play(outcome="machine", talk_s=30), False),
}
EXPECTED: dict[str, tuple[CallStatus, list[Outcome]]] = {
    "01": (CallStatus.COMPLETED, [Outcome.COMPLETED]),
    "02": (CallStatus.FAILED, [Outcome.BUSY, Outcome.BUSY]),
    "03": (CallStatus.FAILED, [Outcome.NO_ANSWER, Outcome.NO_ANSWER]),
    "04": (CallStatus.FAILED, [Outcome.REJECTED]),
    "05": (CallStatus.COMPLETED, [Outcome.COMPLETED]),
    "06": (CallStatus.COMPLETED, [Outcome.COMPLETED]),
    "07": (CallStatus.COMPLETED, [Outcome.COMPLETED]),
    "08": (CallStatus.FAILED, [Outcome.REJECTED]),
    "09": (CallStatus.FAILED, [Outcome.MACHINE]),
}


@carriers
async def test_outcomes_retries_faults_and_limits(
    kind: str, redis_url: str, unique_name: str
) -> None:
    async with stack(kind, redis_url, unique_name, RULES) as s:
        ids = {f"c{i}-{suffix}": number(i, suffix) for i in range(2) for suffix in RULES}
        for call_id, phone in ids.items():
            config = {"machine_detection": "hangup"} if call_id.endswith("09") else {}
            await s.queue.enqueue(CallSpec(call_id, phone, "campaign-1", config, max_retries=1))

        async def all_final() -> bool:
            return all([(await s.record(c)).status.is_terminal for c in ids])

        await until(all_final, 30, "every call to end")
        h = s.harness
        await h.settled()  # the late (out of order) callbacks too
        for call_id in ids:
            suffix = call_id[-2:]
            record = await s.record(call_id)
            status, outcomes = EXPECTED[suffix]
            assert record.status == status, (call_id, record)
            assert [a.outcome for a in record.attempts] == outcomes, (call_id, record.attempts)
            first = record.attempts[0]
            if suffix in ("01", "05", "06", "07"):
                assert first.duration_s is not None and first.duration_s > 0, first
                assert first.carrier_call_id in h.carrier_ids(), first
                assert first.answered_ms is not None and first.ended_ms is not None
            if suffix == "06":
                assert h.duplicated(call_id)
            if suffix == "07":
                assert h.late_progress(call_id)
            if suffix == "09":  # hung up on the machine, long before its 30 s of talk
                talk = h.talk_seconds(call_id)
                assert talk is not None and talk < 3, talk

        dialed = h.dialed()
        assert all(n == 1 for n in dialed.values()), "an attempt was placed twice"
        assert {c for c, _ in dialed} == {c for c in ids if not c.endswith("04")}
        assert h.refused(429) == 2 and h.refused(400) == 2  # 429: once per number; 400: no retry
        assert h.max_live() <= MAX_LIVE
        assert h.max_rate() <= RATE
        # Every callback the carrier sent (duplicates, late ones, machine detection) passed
        # the strict field checks of our webhooks.
        answers = h.webhook_answers()
        assert set(answers) == {200} and answers[200] > len(ids), answers


@carriers
async def test_refused_credentials_pause_dispatch_and_use_no_attempt(
    kind: str, redis_url: str, unique_name: str
) -> None:
    async with stack(kind, redis_url, unique_name, {}, carrier_token="a-wrong-token") as s:
        await s.queue.enqueue(CallSpec("waits", number(0, "01")))

        async def blocked() -> dict[str, Any] | None:
            body: dict[str, Any] = (await s.http.get("/api/health")).json()
            return body if "carrier" in body.get("dispatch_blocked", {}) else None

        health = await until(blocked, 10, "/api/health to report the carrier")
        assert kind in health["dispatch_blocked"]["carrier"].lower()
        assert health["status"] == "unavailable" and kind in health["reason"].lower()
        record = await s.record("waits")
        assert record.status == CallStatus.QUEUED and record.attempts == []
        assert s.harness.refused(401) >= 1 and not s.harness.dialed()


@carriers
async def test_forged_callbacks_change_nothing_and_cancel_hangs_up(
    kind: str, redis_url: str, unique_name: str
) -> None:
    rules: Rules = {"01": (Play(ring_s=30), False)}
    async with stack(kind, redis_url, unique_name, rules) as s:
        await s.queue.enqueue(CallSpec("ringing", number(0, "01"), max_retries=2))
        await s.queue.enqueue(CallSpec("other", number(1, "01"), max_retries=2))
        h = s.harness

        async def rings() -> bool:
            record = await s.record("ringing")
            return record.status == CallStatus.RINGING and h.ringing("ringing")

        await until(rings, 10, "the call to ring")
        before = await s.record("ringing")
        for path, headers in h.forgeries("ringing", "other"):
            reply = await s.http.post(path, data=h.forged_form(), headers=headers)
            assert reply.status_code == 403, (path, headers, reply.text)
        after = await s.record("ringing")
        assert (after.status, after.attempts) == (before.status, before.attempts)

        reply = await s.http.delete("/api/calls/ringing")
        assert reply.status_code == 202, reply.text

        async def cancelled() -> bool:
            return (await s.record("ringing")).status == CallStatus.CANCELLED

        await until(cancelled, 10, "the hang-up to end the call")
        assert h.hung_up("ringing") and h.ended_as_cancelled("ringing")
        record = await s.record("ringing")
        assert [a.outcome for a in record.attempts] == [Outcome.CANCELLED]
        assert record.attempts[0].carrier_call_id in h.carrier_ids()
        assert not h.hung_up("other")
        assert h.dialed()[("ringing", "1")] == 1 and ("ringing", "2") not in h.dialed()
