"""Campaigns' default call_config, as the queue routes merge it under each call's own.

Read from Redis at most every ``TTL_S`` per campaign and process: a change made through PATCH
applies at once in the process that made it and within ``TTL_S`` in the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from callqueue.engine.campaigns import CampaignEngine
from callqueue.engine.queue import CallQueue

TTL_S = 5.0
MAX_ENTRIES = 10_000


class CampaignDefaults:
    def __init__(self, queue: CallQueue) -> None:
        self.queue = queue
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def forget(self, campaign_id: str) -> None:
        self._cache.pop(campaign_id, None)

    async def get(self, campaign_ids: Iterable[str | None]) -> dict[str, dict[str, Any]]:
        """campaign id -> its defaults, for those of ``campaign_ids`` that have some."""
        now = time.monotonic()
        wanted = {c for c in campaign_ids if isinstance(c, str) and c}
        stale = [c for c in wanted if c not in self._cache or self._cache[c][0] < now]
        if stale:
            if len(self._cache) > MAX_ENTRIES:
                self._cache.clear()
            found = await CampaignEngine(self.queue).call_defaults(stale)
            for cp, value in zip(stale, found, strict=True):
                self._cache[cp] = (now + TTL_S, value)
        out = {}
        for cp in wanted:
            value = self._cache[cp][1]
            if value:
                out[cp] = value
        return out
