"""Shared fixtures: an embedded server (and, on demand, a cluster) for the whole test session.

Tests share these servers, so they must isolate themselves with ``unique_name`` (as a queue name
or key prefix) and never FLUSHALL/FLUSHDB.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Running from a checkout where the package is not installed (`make install` does `pip install -e`).
if importlib.util.find_spec("callqueue") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callqueue.embedded import EmbeddedServer
from callqueue.testing.cluster import EmbeddedCluster

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e is marked e2e, every test on the cluster is marked cluster: new
    tests need no marker of their own for these."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
        if "redis_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One embedded server for the session (127.0.0.1, free port, AOF in a temp dir)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A 3-master cluster, started the first time a test asks for it (takes ~2.5 s)."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def unique_name() -> str:
    """A short unique name (``t`` + 8 hex digits) to use as a queue name or key prefix."""
    return "t" + secrets.token_hex(4)
