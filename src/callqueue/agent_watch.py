"""Keeps an eye on the agent server (the voice bot): while its /health does not answer 2xx,
dispatch pauses, so no call is placed that no bot can take; it resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import httpx

log = logging.getLogger(__name__)


class Gate(Protocol):
    async def block(self, part: str, reason: str, retry_after_s: float | None = None) -> None: ...

    async def unblock(self, part: str) -> None: ...


async def probe(url: str, client: httpx.AsyncClient) -> str:
    """'' when healthy, else the reason."""
    target = f"{url.rstrip('/')}/health"
    try:
        response = await client.get(target)
    except httpx.HTTPError as exc:
        return f"agent server unreachable at {target}: {exc.__class__.__name__}"
    if 200 <= response.status_code < 300:
        return ""
    return f"agent server at {target} answered {response.status_code}"


class AgentWatch:
    def __init__(self, url: str, gate: Gate, interval_s: float = 5.0, timeout_s: float = 2.0):
        self.url = url
        self.gate = gate
        self.interval_s = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> str:
        reason = await probe(self.url, self._client)
        if reason:
            await self.gate.block("agent", reason)
        else:
            await self.gate.unblock("agent")
        return reason

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # never let the watch die
                log.exception("agent health check failed")
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        await self.check_once()  # know before the first claim
        self._task = asyncio.create_task(self._run(), name="agent-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()
