"""Status webhooks: telling the backend about every final status (and, when asked, every
transition) of its calls, and when a campaign completes - as Temporal used to.

The engine's scripts add an entry to an outbox stream in the same step as the change, naming
the URL (the call's webhook_url, else its campaign's). Workers deliver from it here, apart from
dialing (a slow receiver never delays a call):

* every delivery is signed: ``X-Callqueue-Signature: sha256=<hex>`` is the HMAC-SHA256, with
  WEBHOOK_SECRET, of ``"<X-Callqueue-Timestamp>.<body>"``; the timestamp (unix seconds) lets the
  receiver refuse replays (see :func:`verify`);
* at least once: an entry is acknowledged (hooks.lua) only after a 2xx answer; one whose
  deliverer died is claimed by another worker after ``CLAIM_IDLE_S``; a receiver may see an
  event twice and can tell by ``X-Callqueue-Delivery``;
* a failed delivery is tried again with backoff (5 s doubling, at most 15 min apart) up to
  WEBHOOK_MAX_ATTEMPTS times, then listed under ``GET /api/status-webhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from callqueue.engine.codec import text
from callqueue.engine.outbox import GROUP, HookOutbox
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import campaign_states
from callqueue.schemas.campaigns import CampaignView
from callqueue.schemas.views import CallView

log = logging.getLogger(__name__)

__all__ = ["GROUP", "Event", "WebhookDeliverer", "signature", "verify"]

CLAIM_IDLE_S = 60.0  # an entry pending this long with its consumer gone is delivered by another
RETRY_LEASE_S = 120.0  # a retry taken by a deliverer comes due again after this, if not settled
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 900.0
FAILED_KEPT = 10_000
REPLAY_WINDOW_S = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant time)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get("x-callqueue-timestamp", "")
    if not stamp.isdigit() or abs((now or time.time()) - int(stamp)) > REPLAY_WINDOW_S:
        return False
    expected = signature(secret, stamp, body)
    return hmac.compare_digest(expected, lowered.get("x-callqueue-signature", ""))


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox entry: what changed, and whom to tell."""

    delivery_id: str  # the stream entry id of its first try; stays the same on every retry
    kind: str  # call | campaign
    subject: str  # call id or campaign id
    status: str
    at_ms: int
    campaign_id: str
    url: str
    attempts: int = 0  # deliveries tried so far
    entry_id: str = ""  # the stream entry (first try), '' for a retry
    retry_member: str = ""  # its member in the retry set, '' for a first try

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(entry_id, fields.get("k", "call"), fields.get("id", ""), fields.get("s", ""),
                   int(fields.get("t") or 0), fields.get("cp", ""), fields.get("u", ""),
                   entry_id=entry_id)  # fmt: skip

    def member(self, attempts: int, error: str) -> str:
        """Its form in the retry set (and in the failed list)."""
        return orjson.dumps({
            "delivery_id": self.delivery_id, "kind": self.kind, "subject": self.subject,
            "status": self.status, "at_ms": self.at_ms, "campaign_id": self.campaign_id,
            "url": self.url, "attempts": attempts, "last_error": error,
        }).decode()  # fmt: skip

    @classmethod
    def from_member(cls, member: str) -> Event:
        d = orjson.loads(member)
        return cls(d["delivery_id"], d["kind"], d["subject"], d["status"], d["at_ms"],
                   d["campaign_id"], d["url"], d["attempts"], retry_member=member)  # fmt: skip


def backoff_s(attempts: int, first_s: float = FIRST_RETRY_S) -> float:
    return float(min(MAX_RETRY_S, first_s * 2 ** max(0, attempts - 1)))


class WebhookDeliverer:
    """Delivers the queue's outbox; runs next to a dispatcher (``start``/``aclose``)."""

    def __init__(
        self,
        queue: CallQueue,
        secret: str | None,
        *,
        consumer: str,
        concurrency: int = 8,
        timeout_s: float = 10.0,
        max_attempts: int = 12,
        block_ms: int = 2000,
        first_retry_s: float = FIRST_RETRY_S,
        claim_idle_s: float = CLAIM_IDLE_S,
        sweep_s: float = 5.0,
    ) -> None:
        self.queue = queue
        self.outbox = HookOutbox(queue)
        self.secret = secret
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.block_ms = block_ms
        self.timeout_s = timeout_s
        self.first_retry_s = first_retry_s
        self.claim_idle_s = claim_idle_s
        self.sweep_s = sweep_s
        self._gate = asyncio.Semaphore(concurrency)
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.delivered = 0

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.timeout_s)
        if self._http is not None:
            await self._http.aclose()

    # -- the outbox ---------------------------------------------------------------------------
    async def _run(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                await self.outbox.ensure_group()
                while not self._stopping.is_set():
                    events = await self._read()
                    if time.monotonic() - last_sweep > self.sweep_s:
                        last_sweep = time.monotonic()
                        events += await self._claim_abandoned()
                        events += await self._due_retries()
                    for event in events:
                        await self._gate.acquire()
                        task = asyncio.create_task(self._deliver(event))
                        self._inflight.add(task)
                        task.add_done_callback(self._done)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook outbox read failed (%s); trying again in 1 s", exc)
                await asyncio.sleep(1.0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._gate.release()

    async def _read(self) -> list[Event]:
        entries = await self.outbox.read(self.consumer, 50, self.block_ms)
        return [Event.from_entry(*e) for e in entries]

    async def _claim_abandoned(self) -> list[Event]:
        """Entries pending with a consumer that went quiet (died mid-delivery)."""
        idle_ms = int(self.claim_idle_s * 1000)
        entries = await self.outbox.claim_abandoned(self.consumer, idle_ms, 50)
        return [Event.from_entry(*e) for e in entries]

    async def _due_retries(self) -> list[Event]:
        now = int(time.time() * 1000)
        members = await self.outbox.op("due", now, 50, int(RETRY_LEASE_S * 1000))
        return [Event.from_member(text(m)) for m in members]

    # -- one delivery -------------------------------------------------------------------------
    async def payload(self, event: Event) -> dict[str, Any]:
        """The body: the event, and the call or campaign as GET would show it now (the API's
        own views)."""
        body: dict[str, Any] = {
            "event": f"{event.kind}.{event.status}",
            "delivery_id": event.delivery_id,
            "occurred_at": _iso(event.at_ms),
            "status": event.status,
        }
        if event.kind == "campaign":
            (state,) = await campaign_states(self.queue, [event.subject])
            body["campaign_id"] = event.subject
            body["campaign"] = CampaignView.of(state).model_dump(mode="json") if state else None
        else:
            record = await self.queue.get(event.subject)
            body["call_id"] = event.subject
            body["campaign_id"] = event.campaign_id or None
            body["call"] = CallView.of(record).model_dump(mode="json") if record else None
        return body

    async def _deliver(self, event: Event) -> None:
        attempts = event.attempts + 1
        try:
            error = await self._post(event)
        except Exception as exc:  # reading the call failed: try again later
            error = f"could not build the delivery: {exc}"
        try:
            if error is None:
                await self.outbox.op("done", event.entry_id, event.retry_member)
                self.delivered += 1
            elif attempts >= self.max_attempts:
                log.warning("webhook %s to %s given up after %d attempts: %s",
                            event.delivery_id, event.url, attempts, error)  # fmt: skip
                await self.outbox.op("fail", event.entry_id, event.retry_member, event.delivery_id,
                                  event.member(attempts, error), FAILED_KEPT)  # fmt: skip
            else:
                due = int((time.time() + backoff_s(attempts, self.first_retry_s)) * 1000)
                await self.outbox.op("retry", event.entry_id, event.retry_member,
                                  event.member(attempts, error), due)  # fmt: skip
        except Exception as exc:  # Redis away: the entry stays pending, claimed again later
            log.warning("webhook %s bookkeeping failed: %s", event.delivery_id, exc)

    async def _post(self, event: Event) -> str | None:
        """None when the receiver took it (2xx); else what went wrong."""
        if not self.secret:
            return "WEBHOOK_SECRET is not set on the worker: deliveries cannot be signed"
        body = orjson.dumps(await self.payload(event))
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "callqueue-webhooks",
            "X-Callqueue-Event": f"{event.kind}.{event.status}",
            "X-Callqueue-Delivery": event.delivery_id,
            "X-Callqueue-Timestamp": stamp,
            "X-Callqueue-Signature": signature(self.secret, stamp, body),
        }
        assert self._http is not None
        try:
            reply = await self._http.post(event.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= reply.status_code < 300:
            return None
        return f"HTTP {reply.status_code}: {reply.text[:200]}"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
