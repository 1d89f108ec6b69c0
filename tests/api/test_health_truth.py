"""/api/health tells the truth: 503 with the reason when a worker reports a part down, or when
no worker is alive while calls are due; /api/health/live answers while the process serves.

These apps run without a worker (as `callqueue api` does), so the heartbeats are the engine's
own (the reap a worker runs), and problems are reported as the dispatcher reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio
from api_support import SettingsFactory, app_client, claim_paced, seed_call, started
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from test_health_auth_docs import closed_port

from callqueue.api.app import create_app
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.models import Outcome
from callqueue.runtime import Runtime, make_dispatcher
from callqueue.testing import FakePlivo
from waiting import until

UNREACHABLE = "cannot reach the carrier's API: ConnectError: All connection attempts failed"


async def health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    reply = await client.get("/api/health")
    return reply.status_code, reply.json()


async def beat(runtime: Runtime) -> None:
    """A worker's heartbeat, as its maintenance loop writes it."""
    await runtime.queue.reap("worker-1")


async def test_a_reported_carrier_problem_is_503_naming_the_carrier(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await health(client))[0] == 200
    await runtime.queue.report_problem("carrier", UNREACHABLE)
    code, body = await health(client)
    assert code == 503 and body["status"] == "unavailable"
    assert body["reason"] == f"carrier simulator: {UNREACHABLE}"
    assert body["dispatch_blocked"] == {"carrier": UNREACHABLE}
    # The existing fields keep their meaning.
    assert body["redis"] == "ok" and body["carrier"] == "simulator" and body["paused"] is False
    status = (await client.get("/api/queue/status")).json()
    assert status["dispatch_blocked"] == {"carrier": UNREACHABLE}
    # Cleared when the carrier answers again.
    await runtime.queue.report_problem("carrier", "")
    code, body = await health(client)
    assert code == 200 and body["reason"] is None and body["dispatch_blocked"] == {}


async def test_any_reported_problem_is_503_with_every_reason(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.queue.report_problem("agent", "GET http://bot/health: unreachable")
    code, body = await health(client)
    assert code == 503 and body["reason"] == "agent: GET http://bot/health: unreachable"
    await runtime.queue.report_problem("carrier", UNREACHABLE)
    code, body = await health(client)
    assert code == 503
    assert body["reason"] == (
        f"carrier simulator: {UNREACHABLE}; agent: GET http://bot/health: unreachable"
    )


async def test_refused_credentials_look_the_same(make_settings: SettingsFactory) -> None:
    """A real dispatcher, refused by the carrier: health shows it as any carrier problem."""
    auth_id = "MA" + "X" * 18
    async with FakePlivo(auth_id, "right-token") as plivo:
        settings = make_settings(
            carrier="plivo", plivo_auth_id=auth_id, plivo_auth_token="wrong-token",
            plivo_number="+14155550100", plivo_api_url=plivo.url, agent_check="off",
            public_url="http://127.0.0.1:9",
        )  # fmt: skip
        async with app_client(settings) as (client, runtime):
            body = seed_call(scheduled_at=None)
            assert (await client.post("/api/calls/queue", json=body)).status_code == 201
            dispatcher = make_dispatcher(runtime)
            await dispatcher.start()

            async def blocked() -> tuple[int, dict[str, Any]] | None:
                code, view = await health(client)
                seen = "carrier" in view["dispatch_blocked"] and view["workers_alive"] == 1
                return (code, view) if seen else None

            try:
                code, view = await until(blocked, 10, "the refusal to block dispatch")
            finally:
                await dispatcher.stop(2)
    assert any(r.status == 401 for r in plivo.api_requests)
    assert code == 503 and view["status"] == "unavailable"
    assert view["reason"] == f"carrier plivo: {view['dispatch_blocked']['carrier']}"


async def test_no_worker_while_calls_are_due_is_503(
    make_settings: SettingsFactory,
) -> None:
    async with app_client(make_settings(retry_base_delay=0, retry_jitter=0)) as (client, rt):
        assert (await health(client))[0] == 200  # nothing due: no worker needed
        assert (await client.post("/api/calls/queue", json=seed_call())).status_code == 201
        code, body = await health(client)
        assert code == 503 and body["workers_alive"] == 0
        assert "no worker alive while calls are due" in body["reason"]
        # A paused queue dials nothing anyway.
        await client.post("/api/queue/pause")
        assert (await health(client))[0] == 200
        await client.post("/api/queue/resume")
        assert (await health(client))[0] == 503
        # A worker's heartbeat is all it takes.
        await beat(rt)
        code, body = await health(client)
        assert code == 200 and body["workers_alive"] == 1 and body["reason"] is None


async def test_calls_due_means_dialable_now(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(retry_base_delay=0, retry_jitter=0)) as (client, rt):
        # Queued in a paused campaign: not due.
        call = seed_call(scheduled_at=None, custom_call_id="held", campaign_id="held")
        assert (await client.post("/api/calls/queue", json=call)).status_code == 201
        assert (await client.post("/api/campaigns/held/pause")).status_code == 200
        assert (await health(client))[0] == 200
        # Scheduled for later: not due yet.
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        later = seed_call(scheduled_at=tomorrow, custom_call_id="later",
                          campaign_id=None, phone_number="+919123456701")  # fmt: skip
        assert (await client.post("/api/calls/queue", json=later)).status_code == 201
        assert (await health(client))[0] == 200
        # Queued with no campaign: due.
        now = seed_call(custom_call_id="now", campaign_id=None, phone_number="+919123456702")
        assert (await client.post("/api/calls/queue", json=now)).status_code == 201
        assert (await health(client))[0] == 503
        # Dialed: nothing waits any more ...
        await beat(rt)
        [claimed] = await claim_paced(rt.queue, 1)
        assert claimed.call_id == "now"
        await rt.client.delete(rt.queue.keys.workers)  # ... and the worker is gone
        assert (await health(client))[0] == 200
        # ... until its retry is due: a scheduled call whose time has come.
        await rt.queue.ended("now", 1, EndFacts(Outcome.BUSY))
        code, body = await health(client)
        assert code == 503 and "no worker alive" in body["reason"]
        assert (await client.get("/api/calls/now")).json()["status"] == "scheduled"


async def test_liveness_answers_while_redis_is_down(make_settings: SettingsFactory) -> None:
    url = f"redis://127.0.0.1:{closed_port()}"
    settings = make_settings(redis_url=url, api_keys="k1")
    dead = redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    runtime = Runtime(settings, dead, CallQueue(dead, settings.queue_name), url)
    try:
        async with started(create_app(runtime=runtime)) as client:
            live = await client.get("/api/health/live")  # no API key: a probe has none
            assert live.status_code == 200 and live.json() == {"status": "alive"}
            assert (await client.get("/api/health")).status_code == 503
            assert (await client.get("/api/queue/status")).status_code == 401
    finally:
        await dead.aclose()
