"""Shared constants and helpers of the API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from callqueue.api.app import create_app
from callqueue.api.server import bind_socket, make_server
from callqueue.config import Settings
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import queue_snapshot
from callqueue.models import ClaimBlock, ClaimedCall
from callqueue.runtime import Runtime, open_runtime

SettingsFactory = Callable[..., Settings]


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``, between its start-up and its shutdown."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@asynccontextmanager
async def app_client(
    settings: Settings, hot: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A client of an app on its own runtime (for settings other than the defaults).
    ``hot``: POST /api/calls/queue answered by the hot path (api/hot.py) or by the route."""
    rt = await open_runtime(settings)
    try:
        app = create_app(runtime=rt)
        app.hot_path = hot
        async with started(app) as client:
            yield client, rt
    finally:
        await rt.aclose()


@asynccontextmanager
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The app behind the HTTP server ``callqueue api`` runs (uvicorn with its protocol and
    settings), on a free loopback port: its base URL."""
    server = make_server(runtime)
    sock = bind_socket("127.0.0.1", 0)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({serving, listening}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        assert server.listening.is_set(), "the HTTP server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        sock.close()


SEED_CALL: dict[str, Any] = {
    "phone_number": "+919123456789",
    "campaign_id": "campaign-123",
    "call_config": {
        "voice": "en-US",
        "max_duration": 1800,
        "recording_enabled": True,
        "flow_name": "wishfin-test",
        "answer_url": "https://your-domain.com/outbound-answer",
        "variables": {"name": "John Doe", "email": "john@example.com"},
    },
    "custom_call_id": "call-456",
    "scheduled_at": "2025-01-15T14:30:00Z",
    "priority": "normal",
    "max_retries": 3,
}


def seed_call(**changes: Any) -> dict[str, Any]:
    body = {**SEED_CALL, "call_config": dict(SEED_CALL["call_config"])}
    body.update(changes)
    return body


async def nothing_queued(runtime: Runtime) -> None:
    """No call was created: the enqueue counter (bumped by every creation) is untouched, the
    queues are empty, and the seed's call id is free."""
    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 0
    assert snap.queued == snap.scheduled == 0
    assert not await runtime.client.exists(runtime.queue.keys.call(SEED_CALL["custom_call_id"]))


async def claim_paced(q: CallQueue, want: int) -> list[ClaimedCall]:
    """Claims until the limits stop it (the rate limiter hands out one grant per 1/rate s)."""
    got: list[ClaimedCall] = []
    while len(got) < want:
        result = await q.claim(want - len(got))
        got += result.calls
        if not result.calls:
            if result.blocked != ClaimBlock.RATE or result.wait_ms is None:
                return got
            await asyncio.sleep(result.wait_ms / 1000)
    return got
