"""A Redis Cluster with replicas on this machine, for failover tests: ``masters`` masters,
each with ``replicas`` replicas, and a short node timeout so that a killed master's replica is
promoted within a few seconds (automatic failover).

::

    with ReplicaCluster(tmp / "cluster", node_timeout_ms=1500) as cluster:
        victim = cluster.master_of("{default}")
        victim.kill()
        took = cluster.wait_failover(victim)  # a replica of it is master, cluster_state ok

Each node is an :class:`~callqueue.embedded.EmbeddedServer` (the bundled ``valkey-server``)
in cluster mode with AOF on; start and stop are those of
:class:`~callqueue.testing.cluster.EmbeddedCluster`
(masters only, the regular test suite's cluster), the forming step is this one's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from callqueue.embedded import CLUSTER_SLOTS, HOST, EmbeddedServer, EmbeddedServerError
from callqueue.testing.cluster import EmbeddedCluster

__all__ = ["ReplicaCluster"]

FORM_TIMEOUT = 30.0


def _client(node: EmbeddedServer, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=node.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def _wait(what: str, timeout: float, check: Any) -> None:
    """Polls ``check()`` (true when done) until ``timeout``; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise EmbeddedServerError(f"timed out after {timeout:.0f} s waiting for {what}: {last}")
        time.sleep(0.05)


class ReplicaCluster(EmbeddedCluster):
    """``masters`` x (1 + ``replicas``) cluster-mode servers on 127.0.0.1 (the first
    ``masters`` nodes start as the masters)."""

    def __init__(
        self, base_dir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1500
    ) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        super().__init__(base_dir, masters)
        self.node_timeout_ms = node_timeout_ms
        extra = {
            "cluster-node-timeout": str(node_timeout_ms),
            # A replica that lost its master a while ago may still take over (the default
            # refuses after 10 node timeouts without contact, long for a test).
            "cluster-replica-validity-factor": "0",
            # A full sync starts at once instead of waiting 5 s for more replicas to join it.
            "repl-diskless-sync-delay": "0",
        }
        dirs = [self.base_dir / f"node{i}" for i in range(masters * (1 + replicas))]
        if any((d / "nodes.conf").exists() for d in dirs):
            raise EmbeddedServerError(f"{self.base_dir} holds a cluster from another run")
        self.nodes = [EmbeddedServer(d, cluster=True, extra=extra) for d in dirs]
        self._ids: dict[int, str] = {}  # port -> node id

    # -- topology -------------------------------------------------------------------------------
    def keyslot(self, key: str) -> int:
        with self._one(self._alive()) as client:
            return int(client.cluster("KEYSLOT", key))

    def master_of(self, key: str) -> EmbeddedServer:
        """The node that serves ``key``'s slot now."""
        slot = self.keyslot(key)
        with self._one(self._alive()) as client:
            for first, last, master, *_ in client.cluster("SLOTS"):
                if int(first) <= slot <= int(last):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedServerError(f"no node serves slot {slot}")

    def replicas_of(self, master: EmbeddedServer) -> list[EmbeddedServer]:
        master_id = self._ids[master.port]
        return [n for n in self.nodes if n.running and self._replicates(n) == master_id]

    def wait_failover(self, old_master: EmbeddedServer, timeout: float = 20.0) -> EmbeddedServer:
        """Waits until a former replica of ``old_master`` (killed) is a master and every
        running node sees ``cluster_state:ok``; returns the new master."""
        old_id = self._ids[old_master.port]
        candidates = [n for n in self.nodes if n.running and self._replicates(n) == old_id]
        if not candidates:
            raise EmbeddedServerError(f"{old_master.url} has no replica to promote")
        promoted: list[EmbeddedServer] = []

        def done() -> bool:
            promoted[:] = [n for n in candidates if self._role(n) == "master"]
            return bool(promoted) and all(self._state(n) == "ok" for n in self._alive())

        _wait(f"a replica of {old_master.url} to take over", timeout, done)
        return promoted[0]

    def rejoin(self, node: EmbeddedServer, timeout: float = FORM_TIMEOUT) -> None:
        """Starts a killed node again and waits until it is back as an in-sync replica (of
        the node that took over its slots) and every node sees ``cluster_state:ok``."""
        node.start()

        def synced() -> bool:
            info = self._info(node, "replication")
            if info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
            return all(self._state(n) == "ok" for n in self._alive())

        _wait(f"{node.url} to rejoin as a replica", timeout, synced)

    # -- internals ------------------------------------------------------------------------------
    def _alive(self) -> list[EmbeddedServer]:
        return [n for n in self.nodes if n.running]

    @contextlib.contextmanager
    def _one(self, nodes: list[EmbeddedServer]) -> Iterator[redis.Redis]:
        client = _client(nodes[0])
        try:
            yield client
        finally:
            client.close()

    def _info(self, node: EmbeddedServer, section: str) -> dict[str, Any]:
        with self._one([node]) as client:
            info: dict[str, Any] = client.info(section)
            return info

    def _role(self, node: EmbeddedServer) -> str:
        return str(self._info(node, "replication").get("role"))

    def _state(self, node: EmbeddedServer) -> str:
        with self._one([node]) as client:
            return str(client.cluster("INFO").get("cluster_state"))

    def _replicates(self, node: EmbeddedServer) -> str | None:
        """The id of the master ``node`` replicates, by ``node``'s own view (None: a master)."""
        with self._one([node]) as client:
            nodes: dict[str, dict[str, Any]] = client.cluster("NODES")
        me = next(n for n in nodes.values() if "myself" in n["flags"])
        return None if me["master_id"] == "-" else str(me["master_id"])

    def _form(self) -> None:
        masters, replicas = self.nodes[: self.masters], self.nodes[self.masters :]
        for node in self.nodes:
            with self._one([node]) as client:
                self._ids[node.port] = str(client.cluster("MYID"))
        for i, node in enumerate(masters):
            with self._one([node]) as client:
                first = i * CLUSTER_SLOTS // len(masters)
                last = (i + 1) * CLUSTER_SLOTS // len(masters) - 1
                client.cluster("ADDSLOTSRANGE", first, last)
        first_node = self.nodes[0]
        for node in self.nodes[1:]:
            with self._one([node]) as client:
                client.cluster("MEET", HOST, first_node.port, first_node.bus_port)

        def all_known() -> bool:
            for node in self.nodes:
                with self._one([node]) as client:
                    if int(client.cluster("INFO").get("cluster_known_nodes", 0)) != len(self.nodes):
                        return False
            return True

        _wait("every node to know every other", FORM_TIMEOUT, all_known)
        for i, node in enumerate(replicas):
            master = masters[i % len(masters)]
            with self._one([node]) as client:
                client.cluster("REPLICATE", self._ids[master.port])

        def in_sync() -> bool:
            for node in replicas:
                if self._info(node, "replication").get("master_link_status") != "up":
                    return False
            return all(self._state(n) == "ok" for n in self.nodes)

        _wait("the replicas to sync and cluster_state:ok", FORM_TIMEOUT, in_sync)
