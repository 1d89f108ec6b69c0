"""Campaigns in the engine: settings, lifecycle, and what the claim needs to know of them.

Every change is campaign.lua (or zones.lua); this module packs arguments and reads replies.
The claim enforces a campaign's own limits together with the global ones, lets campaigns take
turns within a priority, and checks a campaign's calling window in the callee's local time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from callqueue.engine.queue import CallQueue
from callqueue.engine.scripts import ScriptArg
from callqueue.models import Outcome

#: Calls ended per campaign.lua run when a campaign is cancelled (a run blocks the server).
CANCEL_SLICE = 500


class CampaignNotFound(LookupError):
    pass


class CampaignStateConflict(RuntimeError):
    """The campaign's status refuses the operation (e.g. resuming a cancelled campaign)."""

    def __init__(self, campaign_id: str, op: str, status: str) -> None:
        super().__init__(f"campaign {campaign_id!r} is {status}: it cannot be {op}d")
        self.campaign_id, self.op, self.status = campaign_id, op, status


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

    def _keys(self) -> list[str]:
        k = self.queue.keys
        return [
            k.prefix, k.campaign_index, k.control, k.campaigns, k.scheduled, k.finished, k.dead,
            k.stats,
        ]  # fmt: skip

    def _head(self, campaign_id: str, op: str) -> list[ScriptArg]:
        o = self.queue.options
        return [
            campaign_id, op, self.queue.keys.wake_channel, o.retention_s * 1000, o.history_limit,
        ]  # fmt: skip

    async def configure(self, campaign_id: str, fields: Mapping[str, str]) -> tuple[str, bool]:
        """Sets settings ('' removes one); creates the campaign when new.
        Returns (status, created)."""
        args = self._head(campaign_id, "set")
        for name, value in fields.items():
            args += [name, value]
        reply = await self._scripts.campaign(self.queue.client, self._keys(), args)
        return _s(reply[0]), int(reply[1]) == 1

    async def _state(self, campaign_id: str, op: str) -> str:
        reply = await self._scripts.campaign(
            self.queue.client, self._keys(), self._head(campaign_id, op)
        )
        if _s(reply[0]) == "not_found":
            raise CampaignNotFound(campaign_id)
        if _s(reply[0]) == "conflict":
            raise CampaignStateConflict(campaign_id, op, _s(reply[1]))
        return _s(reply[0])

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
            if _s(reply[0]) == "not_found":
                raise CampaignNotFound(campaign_id)
            total += int(reply[3])
            cursor = int(reply[2])
            if cursor < 0:
                return total


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
