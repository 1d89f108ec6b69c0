"""ENQUEUE_DURABILITY on a Redis Cluster: the wait goes to the primary that holds the queue's
slot (WAITAOF and WAIT count the writes of the connection they are sent on), one per script."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio
from engine_support import own_number, spec

from callqueue.engine.connection import connect
from callqueue.engine.durability import Durability, DurabilityOptions, DurabilityUnavailable
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.testing.cluster import EmbeddedCluster

pytestmark = pytest.mark.cluster


def waitaof_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


@contextmanager
def node_clients(cluster: EmbeddedCluster) -> Iterator[dict[int, redis.Redis]]:
    clients = {
        node.port: redis.Redis(host=node.host, port=node.port, decode_responses=True)
        for node in cluster.nodes
    }
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


async def test_aof_waits_on_the_primary_of_the_queue_slot(
    redis_cluster: EmbeddedCluster, unique_name: str
) -> None:
    client = connect(redis_cluster.url, cluster=True)
    options = QueueOptions(rate_per_second=0, one_call_per_number=False)
    aof = CallQueue(client, unique_name, options, DurabilityOptions(Durability.AOF, 5.0))
    replica = CallQueue(client, unique_name, options, DurabilityOptions(Durability.REPLICA))
    with node_clients(redis_cluster) as nodes:
        try:
            await aof.prepare()
            with pytest.raises(DurabilityUnavailable, match="needs appendfsync always"):
                await aof.check_durability()  # the suite's cluster fsyncs every second
            with pytest.raises(DurabilityUnavailable, match="no replica connected"):
                await replica.check_durability()  # its masters have no replicas
            for node in nodes.values():
                node.config_set("appendfsync", "always")
            await aof.check_durability()
            assert isinstance(client, redis.asyncio.RedisCluster)
            slot_node = client.get_node_from_key(aof.keys.prefix)
            assert slot_node is not None
            home = slot_node.port
            before = {port: waitaof_calls(node) for port, node in nodes.items()}

            for i in range(2):
                await aof.enqueue(spec(f"{unique_name}-{i}"))
            specs = [spec(f"{unique_name}-b{i}", phone_number=own_number(i)) for i in range(2500)]
            results = await aof.enqueue_many(specs, batch_id=f"{unique_name}-batch")

            assert [r.state for r in results] == ["created"] * 2500
            assert await aof.get(f"{unique_name}-1") is not None
            after = {port: waitaof_calls(node) for port, node in nodes.items()}
            expected = {port: 2 + 3 if port == home else 0 for port in nodes}
            assert {port: after[port] - before[port] for port in nodes} == expected
        finally:
            for node in nodes.values():
                node.config_set("appendfsync", "everysec")
            await client.aclose()
