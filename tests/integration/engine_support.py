"""Helpers shared by the engine tests (importable by name; fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, Priority

MakeQueue = Callable[..., CallQueue]


def spec(call_id: str, priority: Priority = Priority.NORMAL, **kw: Any) -> CallSpec:
    kw.setdefault("phone_number", "+919123456789")
    return CallSpec(
        call_id=call_id,
        campaign_id="campaign-123",
        config={"flow_name": "wishfin-test"},
        priority=priority,
        **kw,
    )


def own_number(i: int) -> str:
    """A distinct valid number per call, as in a real list (one person, one line applies)."""
    return f"+9198{i:08d}"
