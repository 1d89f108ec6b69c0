"""The contract every carrier meets.

A carrier places calls (``dial``) and hangs them up (``hangup``). What happens to a call after
the carrier accepted it comes back as events through a :class:`EventReporter`: from webhooks for
real carriers, from the simulator's own timers for the simulated one. Both land in the engine's
single event transition, so the rules are the same whatever the carrier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from callqueue.models import CarrierEvent, EndFacts


class DialKind(StrEnum):
    ACCEPTED = "accepted"  # the carrier took the call; events will follow
    REJECTED = "rejected"  # the carrier refused this number for good: the attempt fails
    REFUSED = "refused"  # rate limited / overloaded / down: no call placed, try again later
    AMBIGUOUS = "ambiguous"  # no clear answer (timeout): the call may be live
    UNUSABLE = "unusable"  # the carrier cannot be used (credentials): no call placed, pause


@dataclass(frozen=True, slots=True)
class DialRequest:
    call_id: str
    attempt: int
    to: str  # E.164
    campaign_id: str | None
    config: dict[str, Any] = field(default_factory=dict)
    ring_timeout_s: int = 60
    max_duration_s: int = 1800


@dataclass(frozen=True, slots=True)
class DialResult:
    kind: DialKind
    carrier_call_id: str = ""
    reason: str = ""
    retry_after_s: float | None = None  # for REFUSED: how long the carrier asks us to wait
    throttle: bool = False  # for REFUSED: the carrier pushed back; slow the global dial rate
    # The carrier could not be reached, timed out or failed (5xx): a few in a row stop dispatch
    # until it answers again (REFUSED or AMBIGUOUS only).
    fault: bool = False


class EventReporter(Protocol):
    """Where a carrier reports what happened to a call it accepted. ``report`` returns once the
    event is taken (it is written to Redis in order, never dropped); ``then``, if given, is
    called once it is written."""

    async def report(
        self,
        call_id: str,
        attempt: int,
        kind: CarrierEvent,
        *,
        carrier_call_id: str = "",
        end: EndFacts | None = None,
        then: Callable[[], None] | None = None,
    ) -> None: ...


class Carrier(Protocol):
    """A carrier may also have ``calls_end_with_process = True`` (its calls live in this
    process, as the simulator's do: whoever takes over a dead worker's attempts settles them at
    once) and ``async def abandon(cause: str) -> int`` (ends every call it has live, reporting
    each as failed with ``cause``; used when this worker can no longer prove it is alive)."""

    name: str

    async def dial(self, request: DialRequest) -> DialResult:
        """Places one call. Must not raise for carrier answers; map them to a DialResult."""
        ...

    async def hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> bool:
        """Ends a live call this carrier placed. False when it knows no such call."""
        ...

    async def aclose(self) -> None: ...
