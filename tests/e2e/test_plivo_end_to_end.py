"""`callqueue up` with CARRIER=plivo against the local Plivo-compatible server and a fake agent
server: outcomes, carrier faults, limits counted by the carrier, forged callbacks, and a dead
agent server pausing dispatch. Everything is asserted from the fake carrier's own ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from e2e_support import (
    CallbackCatcher,
    Captured,
    Replays,
    assert_person_and_machine_settled,
    call_views,
    clean_env,
    free_port,
    queue_person_and_machine,
    running,
    until,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callqueue.carriers.plivo_events import ENGINE_FIELDS
from callqueue.carriers.plivo_signature import sign_v3, v3_string_to_sign
from callqueue.testing import (
    CONCURRENCY_LIMIT_BREACHED,
    FakePlivo,
    Scenario,
    serve_asgi,
)

AUTH_ID, TOKEN = "MAFAKEACCOUNT0000001", "fake-plivo-token"
TERMINAL = {"completed", "failed", "cancelled"}
MAX_LIVE, RATE = 3, 5


def agent_app() -> Starlette:
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def answer(_: Request) -> Response:
        return Response("<Response><Speak>hello</Speak></Response>", media_type="text/xml")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/outbound-answer", answer, methods=["POST", "GET"]),
        ]
    )


class Scenarios:
    """Callee number -> behaviour; a push-back (429, 5030) happens once per number."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> Scenario:
        to = str(body["to"])
        self.seen[to] += 1
        first = self.seen[to] == 1
        quick = {"ring_s": 0.05, "talk_s": 0.2}
        if to.endswith("02"):
            return Scenario(outcome="busy", **quick)
        if to.endswith("03"):
            return Scenario(outcome="no_answer", ring_s=0.05)
        if to.endswith("04") and first:
            return Scenario(api_status=429, retry_after_s=0.2)
        if to.endswith("05") and first:
            return Scenario(outcome="failed", hangup_cause=CONCURRENCY_LIMIT_BREACHED)
        if to.endswith("06"):
            return Scenario(outcome="machine", **quick)
        return Scenario(outcome="answered", **quick)


@asynccontextmanager
async def service(
    tmp_path: Path,
    redis_url: str,
    queue: str,
    plivo: FakePlivo,
    agent_port: int,
    public_url: str = "",
    **overrides: str,
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """``callqueue up`` on a free port; Plivo calls back ``public_url`` (default: the app)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        REDIS_URL=redis_url, QUEUE_NAME=queue, PORT=str(port), CARRIER="plivo",
        PLIVO_AUTH_ID=AUTH_ID, PLIVO_AUTH_TOKEN=TOKEN, PLIVO_NUMBER="+14155550100",
        PLIVO_API_URL=plivo.url, PUBLIC_URL=public_url or base,
        AGENT_SERVER_URL=f"http://127.0.0.1:{agent_port}",
        AGENT_CHECK_INTERVAL="0.2", MAX_CONCURRENT_CALLS=str(MAX_LIVE),
        RATE_LIMIT_PER_SECOND=str(RATE), RING_TIMEOUT="5", DEFAULT_MAX_DURATION="5",
        CALL_GRACE_SECONDS="2", RETRY_BASE_DELAY="0.1", RETRY_MAX_DELAY="0.2",
        RATE_BACKOFF_SECONDS="1", LOG_LEVEL="WARNING",
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


def calls_dialed(plivo: FakePlivo) -> Counter[tuple[str, str]]:
    """(call id, attempt) -> accepted Make-a-Call requests, from the carrier's ledger."""
    seen: Counter[tuple[str, str]] = Counter()
    for request in plivo.api_requests:
        if request.is_make_call and request.status == 201:
            query = parse_qs(urlsplit(str(request.body["answer_url"])).query)
            seen[(query["call_id"][0], query["attempt"][0])] += 1
    return seen


async def status_of(http: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/calls/{call_id}/status")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_calls_through_plivo_end_to_end(
    tmp_path: Path, redis_url: str, unique_name: str
) -> None:
    agent_port = free_port()
    async with (
        serve_asgi(agent_app(), port=agent_port),
        FakePlivo(AUTH_ID, TOKEN, scenario=Scenarios()) as plivo,
        service(tmp_path, redis_url, unique_name, plivo, agent_port) as (_, http),
    ):
        numbers = {
            f"c{i:02d}-{kind}": f"+9191234{i:02d}7{kind}"
            for i in range(4)
            for kind in ("01", "02", "03", "04", "05")
        }
        for call_id, phone in numbers.items():
            reply = await http.post(
                "/api/calls/queue",
                json={
                    "phone_number": phone,
                    "campaign_id": "campaign-123",
                    "custom_call_id": call_id,
                    "max_retries": 1,
                    "call_config": {"flow_name": "wishfin-test", "variables": {"name": "John Doe"}},
                },
            )
            assert reply.status_code == 201, reply.text

        async def all_final() -> bool:
            states = [(await status_of(http, c))["status"] for c in numbers]
            return all(s in TERMINAL for s in states)

        await until(all_final, 60, "every call to end")
        for call_id in numbers:
            body = await status_of(http, call_id)
            kind = call_id[-2:]
            expected = "failed" if kind in ("02", "03") else "completed"
            assert body["status"] == expected, body
            attempts = body["attempts"]
            # busy/no-answer: 1 + max_retries. A 429 places nothing (no attempt); a 5030 is an
            # attempt the carrier refused: recorded, but it costs no retry.
            assert len(attempts) == (2 if kind in ("02", "03", "05") else 1), body
            if kind == "05":
                assert [a["outcome"] for a in attempts] == ["throttled", "completed"]
            if kind == "01":
                assert attempts[0]["duration_seconds"] > 0 and attempts[0]["carrier_call_id"]
                assert attempts[0]["hangup_cause"] == "NORMAL_CLEARING (4000)"

        dialed = calls_dialed(plivo)
        assert all(n == 1 for n in dialed.values()), "an attempt was placed twice"
        assert plivo.max_live <= MAX_LIVE
        assert plivo.max_requests_in_any_second() <= RATE
        pushed_back = [r for r in plivo.api_requests if r.is_make_call and r.status == 429]
        assert len(pushed_back) == 4

        # A forged callback is refused and changes nothing.
        before = await status_of(http, "c00-01")
        forged = await http.post(
            "/api/webhooks/plivo/hangup?call_id=c00-01&attempt=1",
            data={"CallStatus": "busy", "CallUUID": "x"},
            headers={"X-Plivo-Signature-V3": "bm9wZQ==", "X-Plivo-Signature-V3-Nonce": "1"},
        )
        assert forged.status_code == 403
        unsigned = await http.post(
            "/api/webhooks/plivo/ring?call_id=c00-01&attempt=1", data={"CallStatus": "ringing"}
        )
        assert unsigned.status_code == 403
        assert await status_of(http, "c00-01") == before


async def test_a_dead_agent_server_pauses_dialing_until_it_is_back(
    tmp_path: Path, redis_url: str, unique_name: str
) -> None:
    agent_port = free_port()
    async with (
        FakePlivo(AUTH_ID, TOKEN, scenario=Scenarios()) as plivo,
    ):
        agent = serve_asgi(agent_app(), port=agent_port)
        await agent.__aenter__()
        async with service(tmp_path, redis_url, unique_name, plivo, agent_port) as (_, http):
            await agent.__aexit__(None, None, None)  # the bot goes away

            async def paused() -> bool:
                body = (await http.get("/api/health")).json()
                return "agent" in body.get("dispatch_blocked", {})

            await until(paused, 10, "dispatch to pause for the agent server")
            status = (await http.get("/api/queue/status")).json()
            assert "agent server" in status["dispatch_blocked"]["agent"]
            reply = await http.post(
                "/api/calls/queue",
                json={"phone_number": "+919123456701", "custom_call_id": "waits"},
            )
            assert reply.status_code == 201
            # Nothing is placed while no bot can answer (a bounded look, not a wait for luck).
            await asyncio.sleep(1.0)
            assert (await status_of(http, "waits"))["status"] == "queued"
            assert not [r for r in plivo.api_requests if r.is_make_call]

            async with serve_asgi(agent_app(), port=agent_port):  # the bot is back

                async def done() -> bool:
                    return (await status_of(http, "waits"))["status"] == "completed"

                await until(done, 20, "the call to be placed once the agent is back")
            assert sum(calls_dialed(plivo).values()) == 1


async def test_reshaped_callbacks_are_refused_and_change_nothing(
    tmp_path: Path, redis_url: str, unique_name: str
) -> None:
    """Signature V3 signs the fields run together, so a genuine callback can be re-shaped (a
    field run into the value before it) and keep its signature. Every such re-shape of what
    the engine reads is refused with 400 and changes nothing; so is a well-formed callback
    naming another call; the genuine callbacks then apply."""
    agent_port = free_port()
    catcher = CallbackCatcher()
    async with (
        serve_asgi(agent_app(), port=agent_port),
        serve_asgi(catcher.app()) as public,  # Plivo calls this, not the app
        FakePlivo(AUTH_ID, TOKEN, scenario=Scenarios()) as plivo,
        service(
            tmp_path, redis_url, unique_name, plivo, agent_port, public,
            RING_TIMEOUT="60", DEFAULT_MAX_DURATION="60",
        ) as (_, http),
    ):  # fmt: skip
        await queue_person_and_machine(http, "+919123499701", "+919123499706")

        async def caught() -> bool:
            return all(catcher.find(c, "/plivo/hangup") for c in ("person", "machine"))

        await until(caught, 20, "Plivo to send both hangups")
        await plivo.settled(timeout=10)
        kinds = ("/plivo/ring", "/plivo/machine", "/plivo/hangup")
        person = [c for k in kinds if (c := catcher.find("person", k))]
        machine = [c for k in kinds if (c := catcher.find("machine", k))]
        assert (len(person), len(machine)) == (2, 3)  # ring, (machine,) hangup
        before = await call_views(http)
        assert {v["status"] for v in before.values()} == {"ringing"}  # the dial's answer only

        def signed_text(seen: Captured, form: Mapping[str, str]) -> str:
            nonce = seen.headers["x-plivo-signature-v3-nonce"]
            return v3_string_to_sign(public + seen.path, nonce, form)

        replays = Replays(http, "x-plivo-signature", signed_text)
        assert await replays.refuse_every_fold(person + machine, ENGINE_FIELDS) >= 20

        # Well formed and signed, but naming another call than the attempt's request uuid.
        hangup = person[-1]
        other = {k: str(uuid.uuid4()) if k.endswith("UUID") else v for k, v in hangup.form.items()}
        nonce = "reshape-test-nonce-0001"
        signature = sign_v3(TOKEN, public + hangup.path, nonce, other)
        reply = await http.post(
            hangup.path,
            data=other,
            headers={"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce},
        )
        assert reply.status_code == 400 and "CallUUID" in reply.text, reply.text
        assert await call_views(http) == before  # nothing changed

        await replays.accept_all(person + machine)
        assert_person_and_machine_settled(await call_views(http), hangup.form["CallUUID"])
        assert sorted(calls_dialed(plivo).items()) == [
            (("machine", "1"), 1), (("person", "1"), 1)
        ]  # fmt: skip
