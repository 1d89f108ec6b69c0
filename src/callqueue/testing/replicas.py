"""Replicas of an embedded server, for the tests and benchmarks of ``ENQUEUE_DURABILITY=replica``.

::

    with EmbeddedServer() as primary, replica_of(primary) as replica:
        ...                                  # the primary has one replica, in sync
        with frozen(replica):                # SIGSTOP: it acknowledges nothing until SIGCONT
            ...

Nothing here runs in production: a replica is started like any embedded server, then pointed
at its primary with ``REPLICAOF``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from callqueue.embedded import EmbeddedServer

SYNC_TIMEOUT = 15.0


def _info(server: EmbeddedServer, section: str) -> dict[str, Any]:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as client:
        info: dict[str, Any] = client.info(section)
        return info


def start_replica(
    primary: EmbeddedServer,
    data_dir: Path | None = None,
    *,
    appendonly: bool = False,
    binary: Path | None = None,
) -> EmbeddedServer:
    """A running replica of ``primary``, returned once the link is up and the primary counts
    it (``connected_slaves``), so that WAIT can be answered by it. ``binary``: another
    server than the bundled Valkey (to match an older primary)."""
    replica = EmbeddedServer(data_dir, appendonly=appendonly, binary=binary)
    replica.start()
    try:
        with redis.Redis(host=replica.host, port=replica.port, socket_timeout=5) as client:
            client.execute_command("REPLICAOF", primary.host, primary.port)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            link = _info(replica, "replication").get("master_link_status")
            seen = int(_info(primary, "replication").get("connected_slaves", 0))
            if link == "up" and seen >= 1:
                return replica
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"replica {replica.url} not in sync with {primary.url} after "
                    f"{SYNC_TIMEOUT:g} s (link {link}, primary sees {seen} replica(s))"
                )
            time.sleep(0.02)
    except BaseException:
        replica.stop()
        raise


@contextlib.contextmanager
def replica_of(primary: EmbeddedServer, data_dir: Path | None = None) -> Iterator[EmbeddedServer]:
    replica = start_replica(primary, data_dir)
    try:
        yield replica
    finally:
        replica.stop()


@contextlib.contextmanager
def frozen(server: EmbeddedServer) -> Iterator[None]:
    """``server`` stopped with SIGSTOP (it keeps its connections but answers and acknowledges
    nothing), resumed with SIGCONT on the way out."""
    pid = server.pid
    if pid is None:
        raise RuntimeError(f"{server.url} is not running")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
