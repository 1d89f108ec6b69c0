"""The status-webhook outbox in Redis: what the scripts append (``hooks`` stream), what
delivery reads and claims, and the bookkeeping of retries and failures (hooks.lua).

Delivery itself (HTTP, signing, payloads) is a service: ``callqueue.status_webhooks``. This
module is its only way to Redis, and the API's for listing and retrying failed deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from callqueue.engine.codec import text
from callqueue.engine.contracts import HOOKS
from callqueue.engine.queue import CallQueue

GROUP = "hooks"  # the consumer group every worker's deliverer reads in

#: One stream entry: (entry id, its fields).
Entry = tuple[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    outbox: int  # entries not yet read by any deliverer
    retrying: int  # deliveries waiting for another try
    delivered_total: int
    failed_total: int
    failed: list[str]  # the latest given-up deliveries' members (JSON), latest first


def _entries(raw: Any) -> list[Entry]:
    return [
        (text(entry_id), {text(k): text(v) for k, v in fields.items()})
        for entry_id, fields in raw or []
        if fields
    ]


class HookOutbox:
    def __init__(self, queue: CallQueue) -> None:
        self.queue = queue
        self._keys = HOOKS.keys_of(queue.keys)

    async def op(self, *args: object) -> Any:
        """One hooks.lua step (done | retry | fail | due | again: see its header)."""
        return await self.queue._scripts.hooks(
            self.queue.client, self._keys, [str(a) for a in args]
        )

    async def ensure_group(self) -> None:
        try:
            await self.queue.client.xgroup_create(
                self.queue.keys.hooks, GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for ``consumer`` (waits up to ``block_ms`` for one)."""
        reply: Any = await self.queue.client.xreadgroup(
            GROUP, consumer, {self.queue.keys.hooks: ">"}, count=count, block=block_ms
        )
        return [e for _, entries in reply or [] for e in _entries(entries)]

    async def claim_abandoned(self, consumer: str, idle_ms: int, count: int) -> list[Entry]:
        """Entries pending with a consumer quiet for ``idle_ms`` (it died mid-delivery)."""
        reply = await self.queue.client.xautoclaim(
            self.queue.keys.hooks, GROUP, consumer, idle_ms, start_id="0", count=count
        )
        return _entries(reply[1] if reply else [])

    async def summary(self, limit: int) -> OutboxSummary:
        k = self.queue.keys
        pipe = self.queue.client.pipeline(transaction=False)
        pipe.xlen(k.hooks)
        pipe.zcard(k.hooks_retry)
        pipe.hget(k.stats, "hooks_delivered")
        pipe.zcard(k.hooks_failed_index)
        pipe.zrevrange(k.hooks_failed_index, 0, limit - 1)
        outbox, retrying, delivered, failed_total, ids = await pipe.execute()
        rows = await self.queue.client.hmget(k.hooks_failed, ids) if ids else []
        return OutboxSummary(
            int(outbox),
            int(retrying),
            int(delivered or 0),
            int(failed_total),
            [text(r) for r in rows if r],
        )

    async def failed(self, delivery_id: str) -> str | None:
        """A given-up delivery's member (JSON), or None."""
        raw = await self.queue.client.hget(self.queue.keys.hooks_failed, delivery_id)
        return None if raw is None else text(raw)

    async def again(self, delivery_id: str, fresh_member: str) -> bool:
        """Puts a given-up delivery back in line, due now, as ``fresh_member``."""
        return bool(await self.op("again", delivery_id, fresh_member))
