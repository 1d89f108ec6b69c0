"""Campaigns in the engine: settings, lifecycle, and what the claim needs to know of them.

Every change is campaign.lua (or zones.lua); this module packs arguments and reads replies.
The claim enforces a campaign's own limits together with the global ones, lets campaigns take
turns within a priority, and checks a campaign's calling window in the callee's local time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from callqueue.engine.codec import text
from callqueue.engine.contracts import CAMPAIGN, RECHECK
from callqueue.engine.queue import CallQueue
from callqueue.engine.scripts import ScriptArg
from callqueue.models import Outcome

#: Calls ended per campaign.lua run when a campaign is cancelled (a run blocks the server).
CANCEL_SLICE = 500
#: Parked calls looked at per recheck.lua run after a calling window changed (a run blocks the
#: server: per call about what the claim spent parking it; 1,000 took 27 ms of server time at
#: best on a busy 2-core test machine, as the same server spent 35 ms parking them).
RECHECK_SLICE = 500
#: How long a change of the window waits for its recheck to end. Whatever is left (a very large
#: campaign, or the process died meanwhile) is finished by the workers' maintenance loop; until
#: then those calls stay due at the old opening, where the claim checks them again.
RECHECK_BUDGET_S = 10.0


class CampaignNotFound(LookupError):
    pass


class CampaignStateConflict(RuntimeError):
    """The campaign's status refuses the operation (e.g. resuming a cancelled campaign)."""

    def __init__(self, campaign_id: str, op: str, status: str) -> None:
        super().__init__(f"campaign {campaign_id!r} is {status}: it cannot be {op}d")
        self.campaign_id, self.op, self.status = campaign_id, op, status


@dataclass(frozen=True, slots=True)
class Recheck:
    """What rechecking calls parked by a calling window did."""

    due_now: int  # queued again: the window lets them through now
    moved: int  # given the window's next opening as their due time
    runs: int  # recheck.lua runs (each looks at RECHECK_SLICE calls at most)
    done: bool  # False: the budget ran out first (the workers finish it)


@dataclass(frozen=True, slots=True)
class CampaignRetry:
    """A campaign's retry policy: which outcomes, how many more attempts, how long between."""

    retry_on: frozenset[Outcome]
    max_retries: int | None  # None: each call's own max_retries (default 3)
    delay_s: float
    backoff: str  # "linear" (delay x attempt) or "exponential" (delay x factor^(attempt-1))
    factor: float = 2.0
    max_delay_s: float = 3600.0
    machine_counts_as_done: bool = False

    def encode(self) -> str:
        """The form _lib.lua's campaign_retry reads."""
        on = sorted(o.value for o in self.retry_on)
        if self.machine_counts_as_done:
            on.append("+machine_done")
        mode = "lin" if self.backoff == "linear" else "exp"
        mr = "" if self.max_retries is None else str(self.max_retries)
        return "|".join(
            [",".join(on), mr, str(int(self.delay_s * 1000)), mode, repr(self.factor),
             str(int(self.max_delay_s * 1000))]
        )  # fmt: skip

    @classmethod
    def decode(cls, text: str) -> CampaignRetry:
        on, mr, base, mode, factor, cap = text.split("|")
        names = [o for o in on.split(",") if o]
        return cls(
            retry_on=frozenset(Outcome(o) for o in names if o != "+machine_done"),
            max_retries=int(mr) if mr else None,
            delay_s=int(base) / 1000,
            backoff="linear" if mode == "lin" else "exponential",
            factor=float(factor),
            max_delay_s=int(cap) / 1000,
            machine_counts_as_done="+machine_done" in names,
        )


class CampaignEngine:
    """Campaign operations on one queue."""

    def __init__(self, queue: CallQueue) -> None:
        self.queue = queue
        self._scripts = queue._scripts

    async def exists(self, campaign_id: str) -> bool:
        return bool(await self.queue.client.exists(self.queue.keys.campaign(campaign_id)))

    async def call_defaults(self, campaign_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Each campaign's default call_config (None: it sets none), in one round trip."""
        pipe = self.queue.client.pipeline(transaction=False)
        for cp in campaign_ids:
            pipe.hget(self.queue.keys.campaign(cp), "cfg")
        return [orjson.loads(raw) if raw else None for raw in await pipe.execute()]

    def _keys(self) -> list[str]:
        return CAMPAIGN.keys_of(self.queue.keys)

    def _head(self, campaign_id: str, op: str) -> list[ScriptArg]:
        o = self.queue.options
        return CAMPAIGN.pack(
            {
                "campaign_id": campaign_id,
                "op": op,
                "channel": self.queue.keys.wake_channel,
                "retention_ms": o.retention_s * 1000,
                "hist_limit": o.history_limit,
            }
        )

    async def configure(
        self,
        campaign_id: str,
        fields: Mapping[str, str],
        *,
        recheck_budget_s: float = RECHECK_BUDGET_S,
    ) -> tuple[str, bool]:
        """Sets settings ('' removes one); creates the campaign when new. A new calling window
        or window time zone applies to the calls the old one parked: they are rechecked here for
        up to ``recheck_budget_s`` (0: left to the workers). Returns (status, created)."""
        args = self._head(campaign_id, "set")
        for name, value in fields.items():
            args += [name, value]
        reply = await self._scripts.campaign(self.queue.client, self._keys(), args)
        if recheck_budget_s > 0 and int(reply[2]) == 1:
            await self.recheck_parked(campaign_id, budget_s=recheck_budget_s)
        return text(reply[0]), int(reply[1]) == 1

    async def recheck_parked(
        self,
        campaign_id: str = "",
        *,
        budget_s: float = RECHECK_BUDGET_S,
        slice_size: int = RECHECK_SLICE,
        at_ms: int | None = None,
    ) -> Recheck:
        """Runs the recheck under way of ``campaign_id`` ('': of every campaign) to its end,
        a slice of parked calls per run, or until ``budget_s`` has passed (one run at least).
        Safe to run from several processes at once, and again: each run takes its own slice.
        ``at_ms``: decide as if the time were that (epoch ms), as for claim."""
        k, o = self.queue.keys, self.queue.options
        keys = RECHECK.keys_of(k)
        deadline = time.monotonic() + budget_s
        due_now = moved = runs = 0
        while True:
            reply = await self._scripts.recheck(
                self.queue.client,
                keys,
                RECHECK.pack(
                    {
                        "campaign_id": campaign_id,
                        "limit": slice_size,
                        "hist_limit": o.history_limit,
                        "channel": k.wake_channel,
                        "clock_ms": at_ms or 0,
                    }
                ),
            )
            runs += 1
            due_now += int(reply[1])
            moved += int(reply[2])
            finished = int(reply[3]) == 0
            if finished or time.monotonic() >= deadline:
                return Recheck(due_now, moved, runs, finished)

    async def _state(self, campaign_id: str, op: str) -> str:
        reply = await self._scripts.campaign(
            self.queue.client, self._keys(), self._head(campaign_id, op)
        )
        if text(reply[0]) == "not_found":
            raise CampaignNotFound(campaign_id)
        if text(reply[0]) == "conflict":
            raise CampaignStateConflict(campaign_id, op, text(reply[1]))
        return text(reply[0])

    async def pause(self, campaign_id: str) -> str:
        """No new dials of the campaign from now on; live calls finish. Raises
        CampaignStateConflict for a cancelled campaign."""
        return await self._state(campaign_id, "pause")

    async def resume(self, campaign_id: str) -> str:
        """Dialing of a paused campaign goes on. Raises CampaignStateConflict for a cancelled
        campaign."""
        return await self._state(campaign_id, "resume")

    async def cancel(self, campaign_id: str) -> int:
        """Ends every call of the campaign not yet dialed (live ones finish); returns how many.
        Runs in slices; the campaign is cancelled from the first slice on, so nothing of it is
        dialed meanwhile."""
        cursor, total = 0, 0
        while True:
            args = [*self._head(campaign_id, "cancel"), CANCEL_SLICE, cursor]
            reply = await self._scripts.campaign(self.queue.client, self._keys(), args)
            if text(reply[0]) == "not_found":
                raise CampaignNotFound(campaign_id)
            total += int(reply[3])
            cursor = int(reply[2])
            if cursor < 0:
                return total
