"""Status webhooks: signed, retried with backoff, at least once (a dead deliverer's entries are
taken over), every transition when asked, campaign completion, failures kept for the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from engine_support import MakeQueue
from procs import wait_for

from callqueue.engine.campaigns import CampaignEngine
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.models import CallSpec, CarrierEvent, Outcome
from callqueue.status_webhooks import GROUP, Event, WebhookDeliverer, signature, verify
from callqueue.testing.webhook_receiver import Delivery, WebhookReceiver, webhook_receiver

SECRET = "s3cret"


def calls(campaign: str, n: int, **kw: object) -> list[CallSpec]:
    return [CallSpec(call_id=f"{campaign}-{i}", phone_number=f"+91987650{i:04d}",
                     campaign_id=campaign, max_retries=0, **kw)  # type: ignore[arg-type]
            for i in range(n)]  # fmt: skip


async def finish_all(q: CallQueue, n: int, outcome: Outcome = Outcome.COMPLETED) -> None:
    done = 0
    while done < n:
        for c in (await q.claim(n)).calls:
            await q.ended(c.call_id, c.attempt, EndFacts(outcome, duration_s=7))
            done += 1


@asynccontextmanager
async def delivering(
    q: CallQueue, consumer: str = "w1", **kw: object
) -> AsyncIterator[WebhookDeliverer]:
    options: dict[str, object] = {"first_retry_s": 0.05, "sweep_s": 0.05, "block_ms": 100}
    options.update(kw)
    d = WebhookDeliverer(q, SECRET, consumer=consumer, **options)  # type: ignore[arg-type]
    await d.start()
    try:
        yield d
    finally:
        await d.aclose()


def test_signature_and_replay_window() -> None:
    body = b'{"a":1}'
    headers = {
        "X-Callqueue-Timestamp": "1000",
        "X-Callqueue-Signature": signature(SECRET, "1000", body),
    }
    assert verify(SECRET, headers, body, now=1100)
    assert not verify(SECRET, headers, body, now=1000 + 301)  # too old: a replay
    assert not verify("other", headers, body, now=1100)
    assert not verify(SECRET, headers, b'{"a":2}', now=1100)


async def test_final_statuses_are_told_signed_and_retried(make_queue: MakeQueue) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET, fail_next=3) as hook:
        await CampaignEngine(q).configure("hc", {"wh": hook.url})
        await q.enqueue_many(calls("hc", 5))
        await finish_all(q, 5)
        async with delivering(q):
            await wait_for(lambda: _got(hook, 5 + 1), 20, "5 call events and the campaign's")
    assert hook.refused == 3  # the first three tries met a 500 and were tried again
    assert all(d.verified for d in hook.deliveries)
    events = sorted(d.body["event"] for d in hook.deliveries)
    assert events == ["call.completed"] * 5 + ["campaign.completed"]
    one = next(d.body for d in hook.deliveries if d.body["event"] == "call.completed")
    assert one["call"]["status"] == "completed" and one["campaign_id"] == "hc"
    assert one["call"]["attempts"][0]["duration_seconds"] == 7
    stats = await q.client.hgetall(q.keys.stats)
    assert int(stats[b"hooks_delivered"]) == 6 and int(stats[b"hooks_retried"]) == 3
    assert await q.client.xlen(q.keys.hooks) == 0  # settled entries leave the outbox


async def _got(hook: WebhookReceiver, n: int) -> bool:
    return len(hook.delivery_ids()) >= n


async def test_a_call_webhook_wins_and_no_webhook_means_no_event(make_queue: MakeQueue) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET) as hook:
        await q.enqueue_many([*calls("none", 2), *calls("own", 1, webhook_url=hook.url)])
        await finish_all(q, 3, Outcome.REJECTED)
        assert await q.client.xlen(q.keys.hooks) == 1  # only the call that asked
        async with delivering(q):
            await wait_for(lambda: _got(hook, 1), 20, "the call's own webhook")
    assert hook.deliveries[0].body["event"] == "call.failed"
    assert hook.deliveries[0].body["call_id"] == "own-0"


async def test_every_transition_when_asked(make_queue: MakeQueue) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET) as hook:
        await CampaignEngine(q).configure("all", {"wh": hook.url, "we": "all"})
        await q.enqueue(calls("all", 1)[0])
        (c,) = (await q.claim(1)).calls
        await q.accepted(c, "uuid-1")
        await q.event(c.call_id, 1, CarrierEvent.ANSWERED)
        await q.ended(c.call_id, 1, EndFacts(Outcome.COMPLETED, duration_s=3))
        async with delivering(q):
            await wait_for(lambda: _got(hook, 5), 20, "every transition and the completion")

    def entry_order(d: Delivery) -> tuple[int, ...]:  # the outbox's order: its entry ids
        return tuple(int(part) for part in d.body["delivery_id"].split("-"))

    statuses = [d.body["status"] for d in sorted(hook.deliveries, key=entry_order)]
    assert statuses[:4] == ["dialing", "ringing", "in_progress", "completed"]
    assert sorted(d.body["event"] for d in hook.deliveries).count("call.completed") == 1


async def test_a_dead_deliverers_events_are_delivered_by_another(make_queue: MakeQueue) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET) as hook:
        await CampaignEngine(q).configure("crash", {"wh": hook.url})
        await q.enqueue_many(calls("crash", 3))
        await finish_all(q, 3)
        # A deliverer reads the entries, then dies before telling anyone.
        await q.client.xgroup_create(q.keys.hooks, GROUP, id="0", mkstream=True)
        read = await q.client.xreadgroup(GROUP, "dead-worker", {q.keys.hooks: ">"}, count=10)
        assert len(read[0][1]) == 4
        async with delivering(q, "w2", claim_idle_s=0.2):
            await wait_for(lambda: _got(hook, 4), 20, "the dead worker's events")
    pending = await q.client.xpending(q.keys.hooks, GROUP)
    assert pending["pending"] == 0


async def test_deliveries_that_keep_failing_are_kept_and_can_be_retried(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET, fail_next=1000) as hook:
        await CampaignEngine(q).configure("f", {"wh": hook.url})
        await q.enqueue(calls("f", 1)[0])
        await finish_all(q, 1)
        async with delivering(q, max_attempts=3):
            await wait_for(lambda: _failed(q, 2), 20, "the deliveries to be given up")
            assert hook.refused == 6  # 3 tries each: the call's event and the campaign's
            failed = await q.client.hgetall(q.keys.hooks_failed)
            member = next(iter(failed.values())).decode()
            assert '"attempts":3' in member and "HTTP 500" in member
            hook.fail_next = 0
            ids = [i.decode() for i in failed]
            keys = [q.keys.hooks, q.keys.hooks_retry, q.keys.hooks_failed,
                    q.keys.hooks_failed_index, q.keys.stats]  # fmt: skip
            for i in ids:
                fresh = Event.from_member(failed[i.encode()].decode()).member(0, "")
                assert await q._scripts.hooks(q.client, keys, ["again", i, fresh]) == 1
            await wait_for(lambda: _got(hook, 2), 20, "the retried deliveries")
    assert await q.client.hlen(q.keys.hooks_failed) == 0


async def _failed(q: CallQueue, n: int) -> bool:
    return int(await q.client.hlen(q.keys.hooks_failed)) >= n


async def test_no_secret_no_delivery(make_queue: MakeQueue) -> None:
    q = make_queue()
    async with webhook_receiver(SECRET) as hook:
        await CampaignEngine(q).configure("ns", {"wh": hook.url})
        await q.enqueue(calls("ns", 1)[0])
        await finish_all(q, 1)
        d = WebhookDeliverer(q, None, consumer="w", first_retry_s=0.05, sweep_s=0.05,
                             block_ms=100, max_attempts=1)  # fmt: skip
        await d.start()
        try:
            await wait_for(lambda: _failed(q, 1), 20, "the unsigned delivery to be refused")
        finally:
            await d.aclose()
    assert hook.deliveries == [] and hook.refused == 0
    members = (await q.client.hgetall(q.keys.hooks_failed)).values()
    assert members and all(b"WEBHOOK_SECRET" in m for m in members)
