"""Wake-ups over pub/sub: a worker sleeps exactly until its next known deadline (a rate token,
a due call, a slot's expiry) and is woken early when new work, a freed slot or a hang-up
request is announced on the queue's channel. No fixed-interval polling."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection

from callqueue.engine.codec import text

log = logging.getLogger(__name__)

HangupHandler = Callable[[str, int, str], Coroutine[Any, Any, None]]


def _pubsub_client(client: Any, channel: str, turn: int = 0) -> Any:
    """The client to subscribe with. On a cluster, classic PUBLISH reaches every node, so any
    node will do: the channel's own first, then, each time the subscription is lost (its node
    may have died in a failover), the next of the nodes the cluster client knows."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()
        node = client.get_node_from_key(channel) if turn == 0 else None
        if node is None and nodes:
            node = nodes[turn % len(nodes)]
        if node is None:
            raise RuntimeError(f"no cluster node serves {channel!r}")
        accepted = set(inspect.signature(Redis.__init__).parameters) - {"self", "host", "port"}
        given = client.get_connection_kwargs()
        kwargs: dict[str, Any] = {k: v for k, v in given.items() if k in accepted}
        if given.get("connection_class") is SSLConnection:
            kwargs["ssl"] = True
        return Redis(host=node.host, port=int(node.port), **kwargs)
    return client


class Waker:
    def __init__(self, client: Any, channel: str, on_hangup: HangupHandler | None = None):
        self._source = client
        self._client = _pubsub_client(client, channel)
        self._owns_client = self._client is not client
        self._turn = 0
        self._channel = channel
        self._on_hangup = on_hangup
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._hangups: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="waker")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5.0)

    def clear(self) -> None:
        """Call before looking for work, so a wake-up during the look is not lost."""
        self._event.clear()

    def poke(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float | None) -> bool:
        """True when woken, False when the timeout passed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._ready.set()
                self._event.set()  # (re)subscribed: something may have been missed
                delay = 0.05
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    message_text = text(data)
                    if message_text.startswith("h ") and self._on_hangup is not None:
                        parts = message_text.split(" ")
                        call_id, attempt = parts[1], int(parts[2])
                        carrier_id = parts[3] if len(parts) > 3 else ""
                        task = asyncio.create_task(self._on_hangup(call_id, attempt, carrier_id))
                        self._hangups.add(task)
                        task.add_done_callback(self._hangups.discard)
                    else:
                        self._event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake-up channel lost (%s); resubscribing in %.2fs", exc, delay)
                self._event.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._owns_client:  # a cluster node: the next one, in case this one is gone
                with contextlib.suppress(Exception):
                    await self._client.aclose()
                self._turn += 1
                with contextlib.suppress(Exception):
                    self._client = _pubsub_client(self._source, self._channel, self._turn)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_client:
            await self._client.aclose()
