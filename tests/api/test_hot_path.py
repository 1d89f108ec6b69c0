"""POST /api/calls/queue answered by the hot path (api/hot.py) and by the FastAPI route (what
serves it with OTEL_TELEMETRY on) gives the same answers, good and bad, with the same effects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from api_support import SEED_CALL, SettingsFactory
from redis.exceptions import ConnectionError as RedisConnectionError

from callqueue.api.app import create_app
from callqueue.api.limits import DEFAULT_MAX_BODY
from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import Runtime, open_runtime

Answer = tuple[int, Any, dict[str, str]]
KEPT_HEADERS = ("content-type", "www-authenticate", "retry-after", "connection")


@asynccontextmanager
async def app_on(
    settings_factory: SettingsFactory, name: str, hot: bool, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    runtime = await open_runtime(settings_factory(queue_name=name, **overrides))
    try:
        app = create_app(runtime=runtime)
        app.hot_path = hot
        # Starlette re-raises an unexpected error after its 500 (for the server to log): answer
        # it, as uvicorn does.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            yield client, runtime
    finally:
        await runtime.aclose()


async def answer(client: httpx.AsyncClient, **request: Any) -> Answer:
    reply = await client.post("/api/calls/queue", **request)
    headers = {k: reply.headers[k] for k in KEPT_HEADERS if k in reply.headers}
    try:
        body: Any = reply.json()
    except ValueError:
        body = reply.text
    return reply.status_code, body, headers


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


def _cases() -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    other = {**SEED_CALL, "max_retries": 1}
    as_json = {"content-type": "application/json"}
    huge = orjson.dumps({**SEED_CALL, "campaign_id": "x" * (DEFAULT_MAX_BODY + 10)})
    return [
        ("seed call", lambda: {"json": SEED_CALL}),
        ("replay", lambda: {"json": SEED_CALL}),
        ("conflict", lambda: {"json": other}),
        ("no id", lambda: {"json": {"phone_number": "+91 91234-56789"}}),
        ("bad number", lambda: {"json": {**SEED_CALL, "phone_number": "+12"}}),
        ("unknown field", lambda: {"json": {**SEED_CALL, "priorty": "high"}}),
        ("bad priority", lambda: {"json": {**SEED_CALL, "priority": "asap"}}),
        ("naive time", lambda: {"json": {**SEED_CALL, "scheduled_at": "2030-01-01T10:00:00"}}),
        ("not json", lambda: {"content": b"{nope", "headers": as_json}),
        ("text body", lambda: {"content": b"{}", "headers": {"content-type": "text/plain"}}),
        ("array", lambda: {"json": [SEED_CALL]}),
        ("declared too large", lambda: {"content": huge, "headers": as_json}),
        ("streamed too large", lambda: {"content": _streamed(huge), "headers": as_json}),
        ("webhook without secret", lambda: {"json": {**SEED_CALL, "custom_call_id": "w-1",
                                                     "webhook_url": "https://x.example/h"}}),
        ("extension", lambda: {"json": {**SEED_CALL, "phone_number": "+91 9123 456 702 x5"}}),
        ("dot segment id", lambda: {"json": {**SEED_CALL, "custom_call_id": ".."}}),
        ("key in the query", lambda: {"json": SEED_CALL, "params": {"api_key": "k"}}),
    ]  # fmt: skip


async def test_hot_path_answers_like_the_route(
    make_settings: SettingsFactory, unique_name: str
) -> None:
    results: dict[bool, list[Answer]] = {}
    counts: dict[bool, int] = {}
    for hot in (True, False):
        async with app_on(make_settings, f"{unique_name}-{hot}", hot) as (client, runtime):
            got = []
            for _, request in _cases():
                status, body, headers = await answer(client, **request())
                if isinstance(body, dict) and "call_id" in body and body["call_id"] != "call-456":
                    body["call_id"] = "<random>"  # made afresh for a call without an id
                got.append((status, body, headers))
            results[hot] = got
            snapshot = await queue_snapshot(runtime.queue)
            counts[hot] = snapshot.enqueued
    for (label, _), hot, framework in zip(_cases(), results[True], results[False], strict=True):
        assert hot == framework, label
    statuses = [a[0] for a in results[True]]
    assert statuses == [201, 200, 409, 201, 422, 422, 422, 422, 422, 422, 422, 413, 413, 422,
                        422, 422, 400]  # fmt: skip
    assert counts[True] == counts[False] == 2  # the seed call and the call without an id


@pytest.mark.parametrize("hot", [True, False])
async def test_api_keys_on_both_paths(make_settings: SettingsFactory, unique_name: str,
                                      hot: bool) -> None:  # fmt: skip
    async with app_on(make_settings, unique_name, hot, api_keys="k1,k2") as (client, _):
        status, body, headers = await answer(client, json=SEED_CALL)
        assert status == 401
        assert headers.get("www-authenticate") == "Bearer"
        assert body["detail"][0]["type"] == "unauthorized"
        status, _, _ = await answer(client, json=SEED_CALL, headers={"X-API-Key": "nope"})
        assert status == 401
        status, _, _ = await answer(client, json=SEED_CALL, headers={"X-API-Key": "k2"})
        assert status == 201
        auth = {"Authorization": "Bearer k1"}
        status, _, _ = await answer(client, json=SEED_CALL, headers=auth)
        assert status == 200


async def test_redis_errors_and_crashes_on_both_paths(
    make_settings: SettingsFactory, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: dict[bool, list[Answer]] = {}
    for hot in (True, False):
        async with app_on(make_settings, f"{unique_name}-{hot}", hot) as (client, runtime):
            got = []
            for exc in (RedisConnectionError("refused"), RuntimeError("boom")):

                async def failing(*_: Any, exc: Exception = exc) -> Any:
                    raise exc

                monkeypatch.setattr(runtime.queue, "enqueue", failing)
                got.append(await answer(client, json=SEED_CALL))
            results[hot] = got
    assert results[True] == results[False]
    (down, down_body, down_headers), (crash, crash_body, _) = results[True]
    assert (down, down_headers.get("retry-after")) == (503, "1")
    assert down_body["detail"][0]["type"] == "unavailable"
    assert (crash, crash_body["detail"][0]["type"]) == (500, "internal")
