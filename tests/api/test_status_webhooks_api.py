"""Status webhooks over HTTP: a URL needs WEBHOOK_SECRET; deliveries given up are listed and
can be tried again."""

from __future__ import annotations

import httpx
from api_support import SettingsFactory, app_client, nothing_queued, seed_call

from callqueue.runtime import Runtime
from callqueue.status_webhooks import Event

HOOK = "https://backend.example.com/hooks"


async def test_a_webhook_url_needs_the_secret(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post("/api/calls/queue", json=seed_call(webhook_url=HOOK))
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    await nothing_queued(runtime)
    bulk = await client.post("/api/calls/bulk-queue", json={"calls": [seed_call(webhook_url=HOOK)]})
    assert bulk.status_code == 422
    camp = await client.post("/api/campaigns", json={"campaign_id": "c", "webhook_url": HOOK})
    assert camp.status_code == 422 and camp.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    bad = await client.post("/api/calls/queue", json=seed_call(webhook_url="ftp://x"))
    assert bad.status_code == 422


async def test_with_the_secret_and_the_failed_list(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(webhook_secret="s")) as (client, runtime):
        ok = await client.post("/api/calls/queue", json=seed_call(webhook_url=HOOK))
        assert ok.status_code == 201
        record = await runtime.queue.get("call-456")
        assert record is not None and record.spec.webhook_url == HOOK
        camp = await client.post(
            "/api/campaigns",
            json={"campaign_id": "c", "webhook_url": HOOK, "webhook_events": "all"},
        )
        assert camp.json()["settings"]["webhook_events"] == "all"
        # A delivery given up, as the deliverer records it.
        q = runtime.queue
        event = Event("1-0", "call", "call-456", "failed", 0, "c", HOOK)
        keys = [q.keys.hooks, q.keys.hooks_retry, q.keys.hooks_failed, q.keys.hooks_failed_index,
                q.keys.stats]  # fmt: skip
        await q._scripts.hooks(
            q.client, keys, ["fail", "", "", "1-0", event.member(12, "HTTP 500"), "10"]
        )
        view = (await client.get("/api/status-webhooks")).json()
        assert view["failed_total"] == 1 and view["failed"][0]["last_error"] == "HTTP 500"
        assert view["failed"][0]["event"] == "call.failed" and view["failed"][0]["attempts"] == 12
        again = await client.post("/api/status-webhooks/1-0/retry")
        assert again.status_code == 200
        after = (await client.get("/api/status-webhooks")).json()
        assert after["failed_total"] == 0 and after["retrying"] == 1
        assert (await client.post("/api/status-webhooks/1-0/retry")).status_code == 404
