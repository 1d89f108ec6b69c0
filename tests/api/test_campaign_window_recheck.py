"""PATCHing a campaign's calling window over real HTTP (uvicorn on a socket) releases the calls
its old window parked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import uvicorn
from api_support import SettingsFactory, claim_paced, seed_call

from callqueue.api.app import create_app
from callqueue.api.server import bind_socket
from callqueue.runtime import Runtime, open_runtime

SERVER_START_S = 10.0


@asynccontextmanager
async def served(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app served by uvicorn on a free local port, and a client of it."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(SERVER_START_S):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_patching_the_window_releases_the_calls_it_parked(
    make_settings: SettingsFactory,
) -> None:
    hour = datetime.now(UTC).hour
    closed = f"daily {(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    open_now = f"daily {(hour - 1) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    runtime = await open_runtime(make_settings())
    try:
        async with served(runtime) as http:
            created = await http.post("/api/campaigns", json={
                "campaign_id": "evening", "calling_window": closed,
                "calling_window_timezone": "UTC"})  # fmt: skip
            assert created.status_code == 201, created.text
            ids = [f"call-{i}" for i in range(3)]
            for call_id in ids:
                queued = await http.post("/api/calls/queue", json=seed_call(
                    custom_call_id=call_id, campaign_id="evening", timezone="UTC",
                    scheduled_at=None))  # fmt: skip
                assert queued.status_code == 201, queued.text
            # A worker's claim finds the window closed: every call is parked until it opens.
            assert (await runtime.queue.claim(10)).calls == []
            for call_id in ids:
                view = (await http.get(f"/api/calls/{call_id}")).json()
                assert view["status"] == "scheduled"
                assert view["next_attempt_at"] is not None
            patched = await http.patch("/api/campaigns/evening", json={"calling_window": open_now})
            assert patched.status_code == 200, patched.text
            assert patched.json()["progress"]["counts"]["queued"] == 3
            for call_id in ids:
                view = (await http.get(f"/api/calls/{call_id}")).json()
                assert view["status"] == "queued"
                assert view["history"][-1]["note"] == "the calling window changed: due now"
            taken = [c.call_id for c in await claim_paced(runtime.queue, 3)]
            assert taken == ids
    finally:
        await runtime.aclose()
