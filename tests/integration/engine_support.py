"""Helpers shared by the engine tests (importable by name; fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, Priority

MakeQueue = Callable[..., CallQueue]


def spec(call_id: str, priority: Priority = Priority.NORMAL, **kw: Any) -> CallSpec:
    return CallSpec(
        call_id=call_id,
        phone_number="+919123456789",
        campaign_id="campaign-123",
        config={"flow_name": "wishfin-test"},
        priority=priority,
        **kw,
    )
