"""Waiting on a condition with a deadline (never sleeping and hoping), for async tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(check: Callable[[], Awaitable[Any]], limit_s: float, what: str) -> Any:
    """Awaits ``check()`` until it is truthy and returns it; fails naming ``what`` after
    ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)
