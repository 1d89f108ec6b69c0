"""GET /api/health (200 / 503), API keys, the OpenAPI document."""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from api_support import SEED_CALL, SettingsFactory, app_client, nothing_queued, started
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from callqueue.api.app import create_app
from callqueue.engine.queue import CallQueue
from callqueue.runtime import Runtime


def agent_answering(status: int) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/health"
        return httpx.Response(status, json={"ok": status == 200})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_health_ok_with_agent_unreachable_on_simulator(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/health")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "ok"
    assert body["redis"] == "ok"
    assert body["carrier"] == "simulator"
    assert body["agent"] == "unreachable"
    assert body["paused"] is False


async def test_health_reports_agent(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings()) as (client, _):
        app: Any = client._transport.app  # type: ignore[attr-defined]
        for status, state in ((200, "ok"), (500, "http 500")):
            if app.state.http is not None:
                await app.state.http.aclose()
            app.state.http = agent_answering(status)
            assert (await client.get("/api/health")).json()["agent"] == state


async def test_health_503_when_agent_down_with_real_carrier(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(carrier="plivo")) as (client, _):
        reply = await client.get("/api/health")
        assert reply.status_code == 503
        assert "agent server" in reply.json()["reason"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_503_when_redis_unreachable(make_settings: SettingsFactory) -> None:
    url = f"redis://127.0.0.1:{closed_port()}"
    settings = make_settings(redis_url=url)
    dead = redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 0))  # fail fast
    runtime = Runtime(settings, dead, CallQueue(dead, settings.queue_name), url)
    try:
        async with started(create_app(runtime=runtime)) as client:
            reply = await client.get("/api/health")
            assert reply.status_code == 503, reply.text
            body = reply.json()
            assert body["status"] == "unavailable"
            assert body["redis"].startswith("unreachable")
            assert body["reason"].startswith("Redis")
            # Other routes answer 503 too, not 500.
            for method, path, body in (
                ("GET", "/api/queue/status", None),
                ("GET", "/api/calls/x", None),
                ("POST", "/api/calls/queue", SEED_CALL),
            ):
                reply = await client.request(method, path, json=body)
                assert reply.status_code == 503, (path, reply.text)
                assert reply.json()["detail"][0]["type"] == "unavailable"
    finally:
        await dead.aclose()


PROTECTED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/calls/queue", {"json": SEED_CALL}),
    ("POST", "/api/calls/bulk-queue", {"json": {"batch_id": "b", "calls": [SEED_CALL]}}),
    ("GET", "/api/calls/call-456/status", {}),
    ("GET", "/api/calls/call-456", {}),
    ("DELETE", "/api/calls/call-456", {}),
    ("GET", "/api/calls/active", {}),
    ("GET", "/api/batches/b", {}),
    ("GET", "/api/queue/status", {}),
    ("POST", "/api/queue/pause", {}),
    ("POST", "/api/queue/resume", {}),
]


WRONG_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"X-API-Key": "key-on"},
    {"Authorization": "key-one"},
    {"Authorization": "Basic key-one"},
]


@pytest.mark.parametrize(("method", "path", "kw"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
async def test_api_keys_are_required_when_set(
    make_settings: SettingsFactory, method: str, path: str, kw: dict[str, Any]
) -> None:
    async with app_client(make_settings(api_keys="key-one, key-two")) as (client, runtime):
        for headers in WRONG_AUTH:
            reply = await client.request(method, path, headers=headers, **kw)
            assert reply.status_code == 401, (headers, reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
            assert reply.json()["detail"][0]["type"] == "unauthorized"
        await nothing_queued(runtime)
        assert not await runtime.queue.is_paused()
        for headers in ({"Authorization": "Bearer key-one"}, {"X-API-Key": "key-two"}):
            reply = await client.request(method, path, headers=headers, **kw)
            assert reply.status_code != 401, (headers, reply.text)


async def test_key_is_checked_before_the_body(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(api_keys="secret")) as (client, runtime):
        json_type = {"content-type": "application/json"}
        for content in (b"{not json", b"[" * 100_000):
            reply = await client.post("/api/calls/queue", content=content, headers=json_type)
            assert reply.status_code == 401, reply.text
        reply = await client.post("/api/calls/bulk-queue", content=b"{", headers=json_type)
        assert reply.status_code == 401
        await nothing_queued(runtime)


async def test_health_and_docs_need_no_key(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(api_keys="secret")) as (client, _):
        assert (await client.get("/api/health")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200


async def test_no_keys_no_auth(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/calls/queue", json=SEED_CALL)).status_code == 201
    assert (await client.get("/api/queue/status")).status_code == 200


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/nope")
    assert reply.status_code == 404 and reply.json()["detail"][0]["type"] == "not_found"
    reply = await client.put("/api/calls/queue", json=SEED_CALL)
    assert reply.status_code == 405


async def test_openapi_describes_every_route_and_field(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    expected = {
        ("post", "/api/calls/queue"), ("post", "/api/calls/bulk-queue"),
        ("get", "/api/calls/{call_id}/status"), ("get", "/api/calls/{call_id}"),
        ("delete", "/api/calls/{call_id}"), ("get", "/api/calls/active"),
        ("get", "/api/batches/{batch_id}"), ("get", "/api/queue/status"),
        ("post", "/api/queue/pause"), ("post", "/api/queue/resume"), ("get", "/api/health"),
    }  # fmt: skip
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("description"), (method, path)
            for param in op.get("parameters", []):
                assert param.get("description"), (method, path, param["name"])
    schemas = doc["components"]["schemas"]
    for model, schema in schemas.items():
        for name, field in schema.get("properties", {}).items():
            assert field.get("description"), (model, name)
    for model in ("QueueCallRequest", "CallConfig"):
        for name, field in schemas[model]["properties"].items():
            assert field.get("examples"), (model, name)
    assert schemas["QueueCallRequest"]["additionalProperties"] is False
    assert schemas["QueueCallRequest"]["examples"][0] == SEED_CALL
    bulk_body = doc["paths"]["/api/calls/bulk-queue"]["post"]["requestBody"]
    ref = bulk_body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/BulkQueueRequest"
    items = schemas["BulkQueueRequest"]["properties"]["calls"]["items"]["$ref"]
    assert items.split("/")[-1] in schemas  # every reference resolves
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])


async def test_asgi_module_opens_its_own_runtime(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAME", unique_name)
    monkeypatch.setenv("API_KEYS", "")
    sys.modules.pop("callqueue.api.asgi", None)
    module = importlib.import_module("callqueue.api.asgi")
    async with started(module.app) as client:
        assert (await client.post("/api/calls/queue", json=SEED_CALL)).status_code == 201
        health = (await client.get("/api/health")).json()
        assert health["queue"] == unique_name and health["redis"] == "ok"
    assert module.app.state.runtime.queue.name == unique_name
