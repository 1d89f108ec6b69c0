"""`callqueue up` with CARRIER=twilio against the local Twilio-compatible server and a fake agent
server: outcomes, carrier faults, limits counted by the carrier, every callback signed and
accepted, forged callbacks refused. Everything is asserted from the fake carrier's own ledger."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from e2e_support import (
    CallbackCatcher,
    Captured,
    Replays,
    assert_person_and_machine_settled,
    call_views,
    clean_env,
    fold,
    free_port,
    queue_person_and_machine,
    running,
    until,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callqueue.carriers.twilio_events import ENGINE_FIELDS
from callqueue.carriers.twilio_signature import sign, string_to_sign
from callqueue.testing import FakeTwilio, TwilioScenario, serve_asgi

ACCOUNT_SID, TOKEN = "AC" + "e" * 32, "fake-twilio-token"
CALLER = "+14155550100"
TERMINAL = {"completed", "failed", "cancelled"}
MAX_LIVE, RATE = 3, 5


def agent_app(hits: list[dict[str, str]]) -> Starlette:
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def answer(request: Request) -> Response:
        hits.append(
            {**request.query_params, **{k: str(v) for k, v in (await request.form()).items()}}
        )
        return Response("<Response><Say>hello</Say></Response>", media_type="text/xml")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/outbound-answer", answer, methods=["POST", "GET"]),
        ]
    )


class Scenarios:
    """Callee number -> behaviour; a 429 push-back happens once per number."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def __call__(self, params: dict[str, str]) -> TwilioScenario:
        to = params["To"]
        self.seen[to] += 1
        quick = {"ring_s": 0.05, "talk_s": 0.2}
        if to.endswith("02"):
            return TwilioScenario(outcome="busy", **quick)
        if to.endswith("03"):
            return TwilioScenario(api_status=400, api_error_code=21211)
        if to.endswith("04") and self.seen[to] == 1:
            return TwilioScenario(api_status=429, retry_after_s=0.2)
        if to.endswith("05"):
            return TwilioScenario(outcome="machine", ring_s=0.05, talk_s=30)
        if to.endswith("07"):
            return TwilioScenario(outcome="machine", **quick)
        return TwilioScenario(outcome="answered", duplicate_callbacks=to.endswith("06"), **quick)


@asynccontextmanager
async def service(
    tmp_path: Path,
    redis_url: str,
    queue: str,
    twilio: FakeTwilio,
    agent_port: int,
    public_url: str = "",
    **overrides: str,
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """``callqueue up`` on a free port; Twilio calls back ``public_url`` (default: the app)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        REDIS_URL=redis_url, QUEUE_NAME=queue, PORT=str(port), CARRIER="twilio",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=TOKEN, TWILIO_NUMBER=CALLER,
        TWILIO_API_URL=twilio.url, PUBLIC_URL=public_url or base,
        AGENT_SERVER_URL=f"http://127.0.0.1:{agent_port}", AGENT_CHECK_INTERVAL="0.2",
        MAX_CONCURRENT_CALLS=str(MAX_LIVE), RATE_LIMIT_PER_SECOND=str(RATE), RING_TIMEOUT="5",
        DEFAULT_MAX_DURATION="5", CALL_GRACE_SECONDS="2", RETRY_BASE_DELAY="0.1",
        RETRY_MAX_DELAY="0.2", RATE_BACKOFF_SECONDS="1", LOG_LEVEL="WARNING",
    )  # fmt: skip
    env.update(overrides)
    with running(["up"], env, tmp_path, "up") as proc:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def healthy() -> bool:
                assert proc.popen.poll() is None, proc.output
                try:
                    return (await http.get("/api/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(healthy, 30, "callqueue up to be healthy")
            yield base, http
            code, _ = proc.stop()
            assert code == 0, proc.output


def identity(url: str | None) -> tuple[str, str]:
    query = parse_qs(urlsplit(url or "").query)
    return query["call_id"][0], query["attempt"][0]


async def status_of(http: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/calls/{call_id}/status")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_calls_through_twilio_end_to_end(
    tmp_path: Path, redis_url: str, unique_name: str
) -> None:
    agent_port, answers = free_port(), []
    async with (
        serve_asgi(agent_app(answers), port=agent_port),
        FakeTwilio(ACCOUNT_SID, TOKEN, scenario=Scenarios()) as twilio,
        service(tmp_path, redis_url, unique_name, twilio, agent_port) as (base, http),
    ):
        numbers = {
            f"c{i}-{kind}": f"+9191234{i:02d}7{kind}"
            for i in range(2)
            for kind in ("01", "02", "03", "04", "05", "06")
        }
        for call_id, phone in numbers.items():
            config: dict[str, Any] = {"flow_name": "wishfin-test", "variables": {"name": "J"}}
            if call_id.endswith("05"):
                config["machine_detection"] = "hangup"
            reply = await http.post(
                "/api/calls/queue",
                json={
                    "phone_number": phone,
                    "campaign_id": "campaign-123",
                    "custom_call_id": call_id,
                    "max_retries": 1,
                    "call_config": config,
                },
            )
            assert reply.status_code == 201, reply.text

        async def all_final() -> bool:
            states = [(await status_of(http, c))["status"] for c in numbers]
            return all(s in TERMINAL for s in states)

        await until(all_final, 40, "every call to end")
        await twilio.settled(timeout=10)
        expected = {
            "01": ("completed", ["completed"]),
            "02": ("failed", ["busy", "busy"]),
            "03": ("failed", ["rejected"]),
            "04": ("completed", ["completed"]),  # the 429 used no attempt
            "05": ("failed", ["machine"]),
            "06": ("completed", ["completed"]),
        }
        for call_id in numbers:
            body = await status_of(http, call_id)
            status, outcomes = expected[call_id[-2:]]
            assert body["status"] == status, body
            assert [a["outcome"] for a in body["attempts"]] == outcomes, body
            if status == "completed":
                attempt = body["attempts"][0]
                assert attempt["duration_seconds"] > 0, attempt
                assert attempt["carrier_call_id"] in twilio.calls, attempt

        # What Twilio was asked, from its own ledger.
        created = [r for r in twilio.create_requests if r.status == 201]
        dialed = Counter(identity(r.get("Url")) for r in created)
        assert all(n == 1 for n in dialed.values()), "an attempt was placed twice"
        for request in created:
            assert request.get("From") == CALLER and request.get("Method") == "POST"
            assert request.params["StatusCallbackEvent"] == [
                "initiated", "ringing", "answered", "completed"
            ]  # fmt: skip
            call_id, attempt = identity(request.get("Url"))
            assert request.get("StatusCallback") == (
                f"{base}/api/webhooks/twilio/status?"
                + urlencode({"call_id": call_id, "attempt": attempt})
            )
            assert request.get("Timeout") == "5" and request.get("TimeLimit") == "5"
            amd = call_id.endswith("05")
            assert (request.get("MachineDetection") == "Enable") is amd
        assert {(a["call_id"], a["campaign_id"], a["flow_name"]) for a in answers} == {
            (c, "campaign-123", "wishfin-test") for c in numbers if not c.endswith(("02", "03"))
        }
        assert twilio.max_live <= MAX_LIVE
        assert twilio.max_requests_in_any_second() <= RATE
        assert sum(1 for r in twilio.create_requests if r.status == 429) == 2
        # The machine was hung up through the API, long before its 30 s of talk.
        machines = [c for c in twilio.calls.values() if identity(c.param("Url"))[0][-2:] == "05"]
        assert len(machines) == 2
        for call in machines:
            assert call.status == "completed" and call.answered_by == "machine_start"
            assert call.ended_at is not None and call.answered_at is not None
            assert call.ended_at - call.answered_at < 3
        hung_up = {r.call_sid for r in twilio.update_requests if r.get("Status") == "completed"}
        assert hung_up == {c.sid for c in machines}
        # Every callback (duplicates and `initiated` included) was signed and accepted.
        assert twilio.callbacks and all(cb.status == 200 for cb in twilio.callbacks)
        assert sum(1 for cb in twilio.callbacks if cb.copy == 2) >= 8

        # A forged callback is refused and changes nothing.
        before = await status_of(http, "c0-01")
        path = "/api/webhooks/twilio/status?call_id=c0-01&attempt=1"
        form = {"CallStatus": "busy", "CallSid": "CAforged"}
        for headers in (
            {},
            {"X-Twilio-Signature": sign("not-the-token", base + path, form)},
            {"X-Twilio-Signature": sign(TOKEN, base + path, {**form, "CallStatus": "failed"})},
        ):
            forged = await http.post(path, data=form, headers=headers)
            assert forged.status_code == 403, forged.text
        assert await status_of(http, "c0-01") == before


async def test_reshaped_callbacks_are_refused_and_change_nothing(
    tmp_path: Path, redis_url: str, unique_name: str
) -> None:
    """Twilio signs the fields run together, so a genuine callback can be re-shaped (a field
    run into the value before it, CallSid removed that way included) and keep its signature.
    Every such re-shape of what the engine reads is refused with 400 and changes nothing; so
    is a well-formed callback naming another CallSid; the genuine callbacks then apply."""
    agent_port = free_port()
    catcher = CallbackCatcher()
    async with (
        serve_asgi(agent_app([]), port=agent_port),
        serve_asgi(catcher.app()) as public,  # Twilio calls this, not the app
        FakeTwilio(ACCOUNT_SID, TOKEN, scenario=Scenarios()) as twilio,
        service(
            tmp_path, redis_url, unique_name, twilio, agent_port, public,
            RING_TIMEOUT="60", DEFAULT_MAX_DURATION="60",
        ) as (_, http),
    ):  # fmt: skip
        await queue_person_and_machine(http, "+919123499701", "+919123499707")
        calls = ("person", "machine")

        def sent(call_id: str) -> list[Captured]:
            found = [
                catcher.find(call_id, "/twilio/status", CallStatus=status)
                for status in ("initiated", "ringing", "in-progress")
            ]
            found += [catcher.find(call_id, "amd=1")]
            found += [catcher.find(call_id, "/twilio/status", CallStatus="completed")]
            return [c for c in found if c is not None]

        async def caught() -> bool:
            ended = (catcher.find(c, "/twilio/status", CallStatus="completed") for c in calls)
            return all(ended)

        await until(caught, 20, "Twilio to report both calls completed")
        await twilio.settled(timeout=10)
        person, machine = (sent(c) for c in calls)
        assert (len(person), len(machine)) == (4, 5)  # progress, (amd,) completed
        before = await call_views(http)
        assert {v["status"] for v in before.values()} == {"ringing"}  # the dial's answer only

        def signed_text(seen: Captured, form: Mapping[str, str]) -> str:
            return string_to_sign(public + seen.path, form)

        replays = Replays(http, "x-twilio-signature", signed_text)
        assert await replays.refuse_every_fold(person + machine, ENGINE_FIELDS) >= 30
        # The re-shape the issue saw accepted: CallSid run into CallDuration.
        completed = person[-1]
        without_sid = fold(completed.form, "CallSid")
        assert "CallSid" not in without_sid
        assert (await replays.send(completed, without_sid)).status_code == 400

        # Well formed and signed, but naming another call than the attempt's CallSid.
        other = {**completed.form, "CallSid": "CA" + secrets.token_hex(16)}
        reply = await http.post(
            completed.path,
            data=other,
            headers={"X-Twilio-Signature": sign(TOKEN, public + completed.path, other)},
        )
        assert reply.status_code == 400 and "CallSid" in reply.text, reply.text
        assert await call_views(http) == before  # nothing changed

        await replays.accept_all(person + machine)
        assert_person_and_machine_settled(await call_views(http), completed.form["CallSid"])
        created = [r for r in twilio.create_requests if r.status == 201]
        assert sorted(identity(r.get("Url")) for r in created) == [
            ("machine", "1"), ("person", "1")
        ]  # fmt: skip
