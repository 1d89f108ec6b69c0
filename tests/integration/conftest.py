"""Engine fixtures: a queue on the session's real server, isolated by a unique queue name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from engine_support import MakeQueue

from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    c = connect(redis_url)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def make_queue(client: Any, unique_name: str) -> MakeQueue:
    def make(**options: Any) -> CallQueue:
        # No dial-rate limit unless a test sets one: the limiter paces grants (one per
        # 1/rate s), and tests of other things claim several calls back to back.
        options.setdefault("rate_per_second", 0)
        # Tests of other things queue many calls to one number; one-line-per-number has its
        # own tests.
        options.setdefault("one_call_per_number", False)
        return CallQueue(client, unique_name, QueueOptions(**options))

    return make


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A server of the test's own (append-only file on), to kill and restart."""
    server = EmbeddedServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
