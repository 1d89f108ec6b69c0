"""GET /api/calls/{id}[/status], DELETE /api/calls/{id} and GET /api/calls/active.

Calls are moved through their life with the engine's own transitions (claim, carrier events),
the way a worker and a carrier would."""

from __future__ import annotations

import httpx
from api_support import SEED_CALL, SettingsFactory, app_client, claim_paced, seed_call

from callqueue.engine.queue import EndFacts
from callqueue.models import CarrierEvent, ClaimedCall, Outcome
from callqueue.runtime import Runtime


async def claim_one(runtime: Runtime) -> ClaimedCall:
    [call] = await claim_paced(runtime.queue, 1)
    return call


async def test_status_of_a_queued_call(client: httpx.AsyncClient) -> None:
    await client.post("/api/calls/queue", json=SEED_CALL)
    for path in ("/api/calls/call-456/status", "/api/calls/call-456"):
        reply = await client.get(path)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["call_id"] == "call-456"
        assert body["status"] == "queued"
        assert body["priority"] == "normal"
        assert body["phone_number"] == "+919123456789"
        assert body["campaign_id"] == "campaign-123"
        assert body["call_config"] == SEED_CALL["call_config"]
        assert body["call_config"]["variables"]["name"] == "John Doe"
        assert body["max_retries"] == 3
        assert body["attempts"] == []
        assert body["history"][0]["status"] == "queued"
        assert body["next_attempt_at"] is None
        assert body["cancel_requested"] is False
        assert body["created_at"].endswith("Z")


async def test_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/api/calls/nope/status", "/api/calls/nope"):
        reply = await client.get(path)
        assert reply.status_code == 404
        assert reply.json()["detail"][0]["loc"] == ["path", "call_id"]


async def test_attempts_are_reported(make_settings: SettingsFactory) -> None:
    # Retries due at once, so the second attempt can be claimed right away.
    async with app_client(make_settings(retry_base_delay=0, retry_jitter=0)) as (client, runtime):
        await attempts_are_reported(client, runtime)


async def attempts_are_reported(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await client.post("/api/calls/queue", json=seed_call(max_retries=1))
    q = runtime.queue
    # Attempt 1: busy -> retried later.
    call = await claim_one(runtime)
    await q.accepted(call, "carrier-1")
    await q.ended("call-456", 1, EndFacts(Outcome.BUSY, "carrier-1", "USER_BUSY", 0.0, 0.0))
    body = (await client.get("/api/calls/call-456/status")).json()
    assert body["status"] == "scheduled"
    assert body["next_attempt_at"] is not None
    assert body["outcome"] == "busy"
    [first] = body["attempts"]
    assert first["number"] == 1 and first["outcome"] == "busy"
    assert first["carrier_call_id"] == "carrier-1"
    assert first["hangup_cause"] == "USER_BUSY"
    assert first["started_at"] and first["ended_at"]
    # Attempt 2: answered, then completed.
    call = await claim_one(runtime)
    assert call.attempt == 2
    await q.accepted(call, "carrier-2")
    await q.event("call-456", 2, CarrierEvent.ANSWERED)
    live = (await client.get("/api/calls/call-456")).json()
    assert live["status"] == "in_progress"
    assert live["attempts"][-1]["number"] == 2
    assert live["attempts"][-1]["outcome"] is None
    assert live["attempts"][-1]["carrier_call_id"] == "carrier-2"
    await q.ended(
        "call-456",
        2,
        EndFacts(
            Outcome.COMPLETED, "carrier-2", "NORMAL_CLEARING", duration_s=42.5, bill_duration_s=60.0
        ),
    )
    done = (await client.get("/api/calls/call-456/status")).json()
    assert done["status"] == "completed" and done["outcome"] == "completed"
    second = done["attempts"][1]
    assert second["duration_seconds"] == 42.5
    assert second["bill_duration_seconds"] == 60.0
    assert second["answered_at"] is not None
    statuses = [h["status"] for h in done["history"]]
    assert statuses[0] == "queued" and statuses[-1] == "completed"
    assert "in_progress" in statuses and "scheduled" in statuses


async def test_cancel_waiting_call(client: httpx.AsyncClient) -> None:
    await client.post("/api/calls/queue", json=SEED_CALL)
    reply = await client.delete("/api/calls/call-456")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "call_id": "call-456",
        "status": "cancelled",
        "cancelled": True,
        "hangup_requested": False,
    }
    assert (await client.get("/api/calls/call-456")).json()["status"] == "cancelled"
    again = await client.delete("/api/calls/call-456")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"][0]["msg"]


async def test_cancel_unknown_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/api/calls/nope")).status_code == 404


async def test_cancel_live_call_asks_for_hangup(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post("/api/calls/queue", json=SEED_CALL)
    call = await claim_one(runtime)
    await runtime.queue.accepted(call, "carrier-1")
    reply = await client.delete("/api/calls/call-456")
    assert reply.status_code == 202, reply.text
    assert reply.json()["hangup_requested"] is True
    assert reply.json()["status"] == "ringing"
    body = (await client.get("/api/calls/call-456")).json()
    assert body["cancel_requested"] is True
    # The carrier hangs up: the call ends cancelled, never retried; a further cancel is 409.
    await runtime.queue.ended("call-456", 1, EndFacts(Outcome.CANCELLED, "carrier-1"))
    assert (await client.get("/api/calls/call-456")).json()["status"] == "cancelled"
    assert (await client.delete("/api/calls/call-456")).status_code == 409


async def test_cancel_completed_is_409(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await client.post("/api/calls/queue", json=SEED_CALL)
    call = await claim_one(runtime)
    await runtime.queue.ended(call.call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=1.0))
    reply = await client.delete("/api/calls/call-456")
    assert reply.status_code == 409
    assert "completed" in reply.json()["detail"][0]["msg"]


async def test_active_calls(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await client.get("/api/calls/active")).json() == {
        "count": 0,
        "max_concurrent_calls": 100,
        "calls": [],
    }
    for i in range(3):
        await client.post("/api/calls/queue", json=seed_call(custom_call_id=f"a{i}"))
    first = await claim_one(runtime)
    second = await claim_one(runtime)
    await runtime.queue.accepted(second, "carrier-b")
    await runtime.queue.event(second.call_id, 1, CarrierEvent.ANSWERED)
    reply = await client.get("/api/calls/active")
    assert reply.status_code == 200
    body = reply.json()
    assert body["count"] == 2
    by_id = {c["call_id"]: c for c in body["calls"]}
    assert set(by_id) == {first.call_id, second.call_id}
    assert by_id[first.call_id]["status"] == "dialing"
    assert by_id[second.call_id]["status"] == "in_progress"
    assert by_id[second.call_id]["carrier_call_id"] == "carrier-b"
    assert by_id[second.call_id]["answered_at"] is not None
    for c in body["calls"]:
        assert 0 <= c["seconds_live"] < 60
        assert c["attempt"] == 1 and c["phone_number"] == "+919123456789"
    await runtime.queue.ended(second.call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=3.0))
    assert [c["call_id"] for c in (await client.get("/api/calls/active")).json()["calls"]] == [
        first.call_id
    ]
