"""A Redis Cluster of embedded servers, for the suite (and benchmarks): ``masters`` cluster-mode
``valkey-server`` processes with the slots split evenly. Test-only, so it lives here rather than
in the product's launcher (:mod:`callqueue.embedded`)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from callqueue.embedded import (
    CLUSTER_SLOTS,
    CLUSTER_TIMEOUT,
    HOST,
    EmbeddedServer,
    EmbeddedServerError,
    tail_of_log,
)


class EmbeddedCluster:
    """``masters`` cluster-mode servers with the 16384 slots split evenly (no replicas)."""

    def __init__(self, base_dir: Path | None = None, masters: int = 3) -> None:
        if masters < 1:
            raise ValueError("masters must be >= 1")
        self._owns_dir = base_dir is None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="callqueue-valkey-cluster-"))
        self.base_dir = base_dir.resolve()
        self.masters = masters
        self.nodes: list[EmbeddedServer] = []

    @property
    def url(self) -> str:
        return self._require_nodes()[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self._require_nodes()]

    def _require_nodes(self) -> list[EmbeddedServer]:
        if not self.nodes:
            raise EmbeddedServerError("the cluster has not been started")
        return self.nodes

    def start(self) -> Self:
        """Start the nodes, assign slots, MEET, and wait (20 s) for ``cluster_state:ok``."""
        if not self.nodes:
            dirs = [self.base_dir / f"node{i}" for i in range(self.masters)]
            stale = [d for d in dirs if (d / "nodes.conf").exists()]
            if stale:
                raise EmbeddedServerError(
                    f"{stale[0]} already holds a cluster configuration (nodes.conf) from "
                    "another run; use a fresh base_dir"
                )
            self.nodes = [EmbeddedServer(d, cluster=True) for d in dirs]
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.nodes = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def _clients(self) -> Iterator[list[redis.Redis]]:
        clients = [
            redis.Redis(
                host=HOST,
                port=node.port,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
                decode_responses=True,
            )
            for node in self.nodes
        ]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()

    def _form(self) -> None:
        count = len(self.nodes)
        with self._clients() as clients:
            for i, client in enumerate(clients):
                info: dict[str, Any] = client.cluster("INFO")
                if int(info.get("cluster_slots_assigned", 0)) > 0:
                    continue  # restarted nodes keep their slots in nodes.conf
                first = i * CLUSTER_SLOTS // count
                last = (i + 1) * CLUSTER_SLOTS // count - 1
                client.cluster("ADDSLOTSRANGE", first, last)
            # A MEET must name the bus port: it is not the default port + 10000 here.
            first_node = self.nodes[0]
            for client in clients[1:]:
                client.cluster("MEET", HOST, first_node.port, first_node.bus_port)
            deadline = time.monotonic() + CLUSTER_TIMEOUT
            while True:
                problems = []
                for node, client in zip(self.nodes, clients, strict=True):
                    info = client.cluster("INFO")
                    state = info.get("cluster_state")
                    known = int(info.get("cluster_known_nodes", 0))
                    if state != "ok" or known != count:
                        problems.append(f"{node.url}: state={state} known_nodes={known}")
                if not problems:
                    return
                if time.monotonic() >= deadline:
                    raise EmbeddedServerError(
                        f"cluster did not reach cluster_state:ok within {CLUSTER_TIMEOUT:.0f} s: "
                        + "; ".join(problems),
                        tail_of_log(self.nodes[0].log_file),
                    )
                time.sleep(0.05)
