"""Campaigns over HTTP: settings, the seed's implicit campaigns, lifecycle, progress, defaults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import claim_paced, nothing_queued, seed_call

from callqueue.engine.queue import EndFacts
from callqueue.models import Outcome
from callqueue.runtime import Runtime

SETTINGS: dict[str, Any] = {
    "campaign_id": "spring-sale",
    "name": "Spring sale",
    "max_concurrent_calls": 5,
    "rate_limit_per_second": 2.5,
    "weight": 2,
    "calling_window": "Mon-Sat 09:00-21:00",
    "calling_window_timezone": "Asia/Kolkata",
    "retry": {
        "retry_on": ["busy", "no_answer"],
        "max_retries": 2,
        "delay_seconds": 600,
        "backoff": "linear",
    },
    "call_config": {"flow_name": "sale", "voice": "en-IN", "variables": {"offer": "10%"}},
}


async def test_create_read_patch(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/campaigns", json=SETTINGS)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["campaign_id"] == "spring-sale" and body["status"] == "active"
    settings = body["settings"]
    assert settings["calling_window"] == "mon-sat 09:00-21:00"  # canonical form
    assert settings["max_concurrent_calls"] == 5 and settings["rate_limit_per_second"] == 2.5
    assert settings["retry"]["retry_on"] == ["busy", "no_answer"]
    assert settings["retry"]["backoff"] == "linear" and settings["retry"]["max_retries"] == 2
    assert settings["call_config"] == SETTINGS["call_config"]
    again = await client.post("/api/campaigns", json=SETTINGS)
    assert again.status_code == 409 and again.json()["detail"][0]["loc"] == ["body", "campaign_id"]

    patched = await client.patch(
        "/api/campaigns/spring-sale", json={"max_concurrent_calls": None, "calling_window": "tcpa"}
    )
    assert patched.status_code == 200, patched.text
    s = patched.json()["settings"]
    assert s["max_concurrent_calls"] is None and s["calling_window"] == "daily 08:00-21:00"
    assert s["rate_limit_per_second"] == 2.5  # untouched
    listing = (await client.get("/api/campaigns")).json()
    assert listing["total"] == 1 and listing["campaigns"][0]["campaign_id"] == "spring-sale"
    assert (await client.get("/api/campaigns/nope")).status_code == 404
    assert (await client.patch("/api/campaigns/nope", json={"name": "x"})).status_code == 404


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"calling_window": "mon-sat 9-21"}, ["body", "calling_window"]),
        ({"calling_window_timezone": "Mars/Olympus"}, ["body", "calling_window_timezone"]),
        ({"max_concurrent_calls": -1}, ["body", "max_concurrent_calls"]),
        ({"weight": 0}, ["body", "weight"]),
        ({"retry": {"retry_on": ["completed"], "delay_seconds": 1}}, ["body", "retry", "retry_on"]),
        ({"call_config": {"answer_url": "ftp://x"}}, ["body", "call_config", "answer_url"]),
        ({"maxconcurrent": 3}, ["body", "maxconcurrent"]),
        ({"campaign_id": "has space"}, ["body", "campaign_id"]),
    ],
)
async def test_bad_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], loc: list[str]
) -> None:
    reply = await client.post("/api/campaigns", json={**SETTINGS, **change})
    assert reply.status_code == 422, reply.text
    assert any(d["loc"][: len(loc)] == loc for d in reply.json()["detail"]), reply.json()
    assert (await client.get("/api/campaigns")).json()["total"] == 0  # nothing created


async def test_the_seeds_campaign_id_creates_a_campaign(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await client.post("/api/calls/queue", json=seed_call())).status_code == 201
    view = (await client.get("/api/campaigns/campaign-123")).json()
    assert view["status"] == "active" and view["settings"]["max_concurrent_calls"] is None
    assert view["progress"]["open_calls"] == 1


async def test_lifecycle_and_progress(client: httpx.AsyncClient, runtime: Runtime) -> None:
    q = runtime.queue
    rows = [
        seed_call(
            custom_call_id=f"c{i}",
            phone_number=f"+9198765000{i:02d}",
            scheduled_at=None,
            campaign_id="life",
        )
        for i in range(6)
    ]
    assert (await client.post("/api/calls/bulk-queue", json={"calls": rows})).status_code == 201
    paused = await client.post("/api/campaigns/life/pause")
    assert paused.json()["status"] == "paused"
    assert (await q.claim(10)).calls == []  # nothing of a paused campaign is dialed
    resumed = await client.post("/api/campaigns/life/resume")
    assert resumed.json()["status"] == "active"
    claimed = await claim_paced(q, 2)
    assert len(claimed) == 2
    await q.ended(claimed[0].call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=30))
    await q.ended(claimed[1].call_id, 1, EndFacts(Outcome.REJECTED))
    progress = (await client.get("/api/campaigns/life")).json()["progress"]
    assert progress["counts"]["queued"] == 4 and progress["counts"]["completed"] == 1
    assert progress["counts"]["failed"] == 1 and progress["attempts"] == 2
    assert progress["connect_rate"] == 0.5 and progress["average_duration_seconds"] == 30
    assert progress["dial_rate_per_second"] == pytest.approx(2 / 60)
    assert progress["expected_finish_at"] is not None
    cancelled = await client.post("/api/campaigns/life/cancel")
    assert cancelled.json() == {"campaign_id": "life", "status": "cancelled", "cancelled_calls": 4}
    after = (await client.get("/api/campaigns/life")).json()
    assert after["status"] == "cancelled" and after["progress"]["counts"]["cancelled"] == 4
    late = await client.post(
        "/api/calls/queue", json=seed_call(custom_call_id="late", campaign_id="life")
    )
    assert late.status_code == 409 and late.json()["detail"][0]["loc"] == ["body", "campaign_id"]
    for op in ("pause", "resume", "cancel"):
        assert (await client.post(f"/api/campaigns/nope/{op}")).status_code == 404


async def test_campaign_defaults_under_the_calls_own_config(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post("/api/campaigns", json=SETTINGS)
    call = {
        "phone_number": "+919876500001",
        "campaign_id": "spring-sale",
        "custom_call_id": "d1",
        "call_config": {"voice": "hi-IN", "variables": {"name": "A"}},
    }
    assert (await client.post("/api/calls/queue", json=call)).status_code == 201
    record = await runtime.queue.get("d1")
    assert record is not None
    assert record.spec.config["flow_name"] == "sale"  # from the campaign
    assert record.spec.config["voice"] == "hi-IN"  # the call's own wins
    assert record.spec.config["variables"] == {"offer": "10%", "name": "A"}  # merged
    # A replay is a replay even after the campaign's defaults change.
    await client.patch("/api/campaigns/spring-sale", json={"call_config": {"flow_name": "new"}})
    assert (await client.post("/api/calls/queue", json=call)).status_code == 200


async def test_unknown_campaign_routes_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (
        await client.post("/api/campaigns", json={"campaign_id": "x", "weight": -1})
    ).status_code == 422
    await nothing_queued(runtime)
