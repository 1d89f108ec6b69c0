"""Engine fixtures: a queue on the session's real server, isolated by a unique queue name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from callqueue.engine.connection import connect
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, Priority

MakeQueue = Callable[..., CallQueue]


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
        return CallQueue(client, unique_name, QueueOptions(**options))

    return make


def spec(call_id: str, priority: Priority = Priority.NORMAL, **kw: Any) -> CallSpec:
    return CallSpec(
        call_id=call_id,
        phone_number="+919123456789",
        campaign_id="campaign-123",
        config={"flow_name": "wishfin-test"},
        priority=priority,
        **kw,
    )
