"""Campaign views that tell the truth: live calls by their real status, lifecycle requests a
campaign's state refuses, and retry policies that ask only for what matters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import SettingsFactory, app_client, claim_paced, seed_call

from callqueue.engine.queue import EndFacts
from callqueue.models import CarrierEvent, Outcome
from callqueue.runtime import Runtime


async def queue_campaign(client: httpx.AsyncClient, campaign: str, n: int) -> None:
    """``n`` calls of ``campaign``, due now, leaving retries to the campaign's policy."""
    rows = [seed_call(custom_call_id=f"{campaign}-{i}", phone_number=f"+9198765000{i:02d}",
                      scheduled_at=None, campaign_id=campaign) for i in range(n)]  # fmt: skip
    for row in rows:
        del row["max_retries"]
    reply = await client.post("/api/calls/bulk-queue", json={"calls": rows})
    assert reply.status_code == 201, reply.text


async def test_progress_shows_live_calls_by_their_real_status(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    q = runtime.queue
    await queue_campaign(client, "live", 4)
    dialing, ringing, talking = await claim_paced(q, 3)
    await q.accepted(ringing, "cid-ringing")
    await q.accepted(talking, "cid-talking")
    await q.event(talking.call_id, talking.attempt, CarrierEvent.ANSWERED)

    progress = (await client.get("/api/campaigns/live")).json()["progress"]
    counts = progress["counts"]
    assert (counts["dialing"], counts["ringing"], counts["in_progress"]) == (1, 1, 1), counts
    assert counts["queued"] == 1 and counts["scheduled"] == 0
    assert progress["live_calls"] == 3 and progress["open_calls"] == 4
    # The same calls, the same statuses, wherever they are looked at.
    active = (await client.get("/api/calls/active")).json()["calls"]
    assert {c["call_id"]: c["status"] for c in active} == {
        dialing.call_id: "dialing",
        ringing.call_id: "ringing",
        talking.call_id: "in_progress",
    }
    status = (await client.get("/api/queue/status")).json()["counts"]
    assert {s: status[s] for s in ("dialing", "ringing", "in_progress")} == {
        s: counts[s] for s in ("dialing", "ringing", "in_progress")
    }
    listed = (await client.get("/api/campaigns")).json()["campaigns"][0]["progress"]["counts"]
    assert listed == counts

    await q.ended(talking.call_id, talking.attempt, EndFacts(Outcome.COMPLETED, duration_s=3))
    counts = (await client.get("/api/campaigns/live")).json()["progress"]["counts"]
    assert (counts["dialing"], counts["ringing"], counts["in_progress"]) == (1, 1, 0)
    assert counts["completed"] == 1


async def test_a_cancelled_campaign_cannot_be_resumed_or_paused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await queue_campaign(client, "gone", 2)
    assert (await client.post("/api/campaigns/gone/cancel")).status_code == 200

    async def view() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get("/api/campaigns/gone")).json()
        body["progress"].pop("expected_finish_at")  # "now" for a campaign with no open call
        return body

    before = await view()
    assert before["status"] == "cancelled"
    for op in ("resume", "pause"):
        reply = await client.post(f"/api/campaigns/gone/{op}")
        assert reply.status_code == 409, reply.text
        [detail] = reply.json()["detail"]
        assert detail["loc"] == ["path", "campaign_id"] and detail["type"] == "conflict"
        assert "cancelled" in detail["msg"] and op in detail["msg"]
        assert await view() == before  # nothing changed
    # Nothing of it is dialed.
    assert (await runtime.queue.claim(5)).calls == []


async def test_pause_and_resume_of_other_states(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await queue_campaign(client, "done", 1)
    # Resuming a running campaign, or pausing a paused one, asks for what already holds.
    assert (await client.post("/api/campaigns/done/resume")).json()["status"] == "active"
    assert (await client.post("/api/campaigns/done/pause")).json()["status"] == "paused"
    assert (await client.post("/api/campaigns/done/pause")).json()["status"] == "paused"
    assert (await client.post("/api/campaigns/done/resume")).json()["status"] == "active"
    [call] = await claim_paced(runtime.queue, 1)
    await runtime.queue.ended(call.call_id, call.attempt, EndFacts(Outcome.COMPLETED))
    assert (await client.get("/api/campaigns/done")).json()["status"] == "completed"
    # A completed campaign takes new calls; resuming it changes nothing, pausing it holds the
    # calls that name it later.
    resumed = await client.post("/api/campaigns/done/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "completed"
    paused = await client.post("/api/campaigns/done/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"


@pytest.mark.parametrize(
    "retry",
    [
        {"retry_on": [], "max_retries": 0},
        {"retry_on": []},
        {"retry_on": ["busy"], "max_retries": 0},
        {"max_retries": 0},
    ],
)
async def test_a_policy_that_retries_nothing_needs_no_delay(
    client: httpx.AsyncClient, runtime: Runtime, retry: dict[str, Any]
) -> None:
    reply = await client.post("/api/campaigns", json={"campaign_id": "once", "retry": retry})
    assert reply.status_code == 201, reply.text
    stored = reply.json()["settings"]["retry"]
    assert stored["max_retries"] == retry.get("max_retries")
    await queue_campaign(client, "once", 1)
    [call] = await claim_paced(runtime.queue, 1)
    await runtime.queue.ended(call.call_id, call.attempt, EndFacts(Outcome.BUSY))
    view = (await client.get(f"/api/calls/{call.call_id}")).json()
    assert view["status"] == "failed", view  # not retried: nothing to wait for


async def test_a_retry_policy_takes_the_queues_values_for_what_it_omits(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(retry_on="busy,lost", retry_base_delay=45)
    async with app_client(settings) as (client, _):
        reply = await client.post(
            "/api/campaigns", json={"campaign_id": "dflt", "retry": {"max_retries": 2}}
        )
        assert reply.status_code == 201, reply.text
        retry = reply.json()["settings"]["retry"]
        assert retry["retry_on"] == ["busy", "lost"] and retry["delay_seconds"] == 45
        assert retry["max_retries"] == 2 and retry["backoff"] == "exponential"
        # What is given wins, and is still checked.
        given = {"retry_on": ["no_answer"], "delay_seconds": 5}
        patched = await client.patch("/api/campaigns/dflt", json={"retry": given})
        retry = patched.json()["settings"]["retry"]
        assert retry["retry_on"] == ["no_answer"] and retry["delay_seconds"] == 5
        bad = await client.post(
            "/api/campaigns", json={"campaign_id": "bad", "retry": {"delay_seconds": -1}}
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "retry", "delay_seconds"]
