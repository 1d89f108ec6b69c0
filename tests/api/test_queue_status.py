"""GET /api/queue/status, POST /api/queue/pause and /api/queue/resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from api_support import SettingsFactory, app_client, claim_paced, seed_call

from callqueue.engine.queue import EndFacts
from callqueue.models import CallSpec, ClaimBlock, Outcome
from callqueue.runtime import Runtime
from callqueue.testing.cluster import EmbeddedCluster


async def test_empty_queue(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.get("/api/queue/status")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["queue"] == runtime.queue.name
    assert body["paused"] is False
    assert body["pending"] == 0
    assert set(body["counts"]) == {
        "scheduled",
        "queued",
        "dialing",
        "ringing",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
    }
    assert not any(body["counts"].values())
    assert body["queued_by_priority"] == {"urgent": 0, "high": 0, "normal": 0, "low": 0}
    assert body["live_calls"] == {"current": 0, "limit": 100}
    assert body["dial_rate"] == {
        "last_second": 0,
        "limit_per_second": 10.0,
        "last_minute": 0,
        "peak_per_second": 0,
    }
    assert body["success_rate"] is None and body["failure_rate"] is None
    assert body["average_call_duration_seconds"] is None
    assert body["workers"] == {"alive": 0, "ids": []}


async def test_counts_by_status_and_priority(client: httpx.AsyncClient) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    plan = [("urgent", None), ("high", None), ("high", None), ("low", None), ("normal", later)]
    for i, (priority, when) in enumerate(plan):
        body = seed_call(custom_call_id=f"p{i}", priority=priority, scheduled_at=when)
        assert (await client.post("/api/calls/queue", json=body)).status_code == 201
    await client.delete("/api/calls/p3")
    status = (await client.get("/api/queue/status")).json()
    assert status["queued_by_priority"] == {"urgent": 1, "high": 2, "normal": 0, "low": 0}
    assert status["counts"]["queued"] == 3
    assert status["counts"]["scheduled"] == 1
    assert status["counts"]["cancelled"] == 1
    assert status["scheduled"] == 1
    assert status["pending"] == 4
    assert status["enqueued_total"] == 5


async def test_live_calls_rates_and_durations(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_concurrent_calls=3, rate_limit_per_second=5)
    async with app_client(settings) as (client, runtime):
        for i in range(5):
            await client.post("/api/calls/queue", json=seed_call(custom_call_id=f"c{i}"))
        claimed = await claim_paced(runtime.queue, 5)
        assert len(claimed) == 3  # the live-call cap
        status = (await client.get("/api/queue/status")).json()
        assert status["live_calls"] == {"current": 3, "limit": 3}
        assert status["counts"]["dialing"] == 3 and status["counts"]["queued"] == 2
        assert status["dial_rate"]["last_second"] == 3
        assert status["dial_rate"]["last_minute"] == 3
        # Paced 200 ms apart, the three grants may straddle a second boundary.
        assert status["dial_rate"]["peak_per_second"] in (2, 3)
        assert status["dial_rate"]["limit_per_second"] == 5.0
        assert status["dialed_total"] == 3

        q = runtime.queue
        await q.ended(claimed[0].call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=10.0))
        await q.ended(claimed[1].call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=20.0))
        await q.ended(claimed[2].call_id, 1, EndFacts(Outcome.REJECTED))  # never retried
        status = (await client.get("/api/queue/status")).json()
        assert status["live_calls"]["current"] == 0
        assert status["counts"]["completed"] == 2 and status["counts"]["failed"] == 1
        assert status["success_rate"] == 2 / 3
        assert status["failure_rate"] == 1 - 2 / 3
        assert status["average_call_duration_seconds"] == 15.0
        assert status["attempt_outcomes"]["completed"] == 2
        assert status["attempt_outcomes"]["rejected"] == 1


async def test_workers_alive(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.queue.reap("worker-a")  # what a dispatcher's heartbeat does
    status = (await client.get("/api/queue/status")).json()
    assert status["workers"] == {"alive": 1, "ids": ["worker-a"]}


async def test_pause_and_resume(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await client.post("/api/calls/queue", json=seed_call())
    reply = await client.post("/api/queue/pause")
    assert reply.status_code == 200 and reply.json() == {"paused": True}
    assert (await client.get("/api/queue/status")).json()["paused"] is True
    assert (await runtime.queue.claim(1)).blocked == ClaimBlock.PAUSED
    # Queuing still works while paused.
    assert (await client.post("/api/calls/queue", json=seed_call(custom_call_id="x"))).is_success
    reply = await client.post("/api/queue/resume")
    assert reply.status_code == 200 and reply.json() == {"paused": False}
    assert (await client.get("/api/queue/status")).json()["paused"] is False
    assert len((await runtime.queue.claim(1)).calls) == 1


async def test_reads_work_on_a_cluster(
    make_settings: SettingsFactory, redis_cluster: EmbeddedCluster
) -> None:
    """Every key of a queue shares one slot, and "now" comes from that slot's node (a cluster
    pipeline refuses keyless commands such as TIME)."""
    settings = make_settings(redis_url=redis_cluster.url, redis_cluster=True)
    async with app_client(settings) as (client, runtime):
        bulk = {"batch_id": "b", "calls": [seed_call(custom_call_id=None)] * 3}
        assert (await client.post("/api/calls/bulk-queue", json=bulk)).status_code == 201
        await runtime.queue.claim(1)
        status = (await client.get("/api/queue/status")).json()
        assert status["counts"]["queued"] == 2 and status["counts"]["dialing"] == 1
        assert (await client.get("/api/calls/active")).json()["count"] == 1
        assert (await client.get("/api/batches/b")).json()["total"] == 3
        assert (await client.get("/api/health")).json()["redis"] == "ok"


async def test_dead_letter_lists_failed_calls_with_their_attempts(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    q = runtime.queue
    await q.enqueue_many(
        [
            CallSpec("dead-1", "+919123456789", max_retries=0),
            CallSpec("fine-1", "+919123456780", max_retries=0),
        ]
    )
    for call in (await q.claim(2)).calls:
        outcome = Outcome.BUSY if call.call_id == "dead-1" else Outcome.COMPLETED
        await q.ended(call.call_id, call.attempt, EndFacts(outcome, hangup_cause="USER_BUSY"))
    reply = await client.get("/api/queue/dead-letter", params={"limit": 10})
    assert reply.status_code == 200
    body = reply.json()
    assert body["count"] == 1 and body["calls"][0]["call_id"] == "dead-1"
    assert body["calls"][0]["status"] == "failed"
    assert body["calls"][0]["attempts"][0]["outcome"] == "busy"
    assert (await client.get("/api/queue/dead-letter", params={"limit": 0})).status_code == 422
