"""A carrier simulated in-process: the default when no carrier is configured.

It plays a configurable mix of outcomes with ring and talk times, can inject carrier faults,
and appends every dial (and every end) to a ledger file, one JSON object per line, so tests and
benchmarks count dials per attempt and per second from the carrier's side. Ledger writes are
single ``write`` calls on an ``O_APPEND`` descriptor: lines from several processes never mix,
and a line is on disk before the dial is answered, so a killed process still leaves it behind.

A simulated call lives in this process and dies with it. Its end is written to the ledger once
the service has recorded it, stamped with the time the call ended: a real carrier retries its
final callback until the service acknowledges it, and a simulated call whose process died before
that was cut short, not completed. So an ``end`` line means "the carrier reported this outcome
and the service has it", which is what a chaos run checks re-dials against.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from dataclasses import dataclass, field

import orjson

from callqueue.carriers.base import DialKind, DialRequest, DialResult, EventReporter
from callqueue.models import CarrierEvent, EndFacts, Outcome

DEFAULT_MIX: dict[Outcome, float] = {
    Outcome.COMPLETED: 0.70,
    Outcome.BUSY: 0.10,
    Outcome.NO_ANSWER: 0.12,
    Outcome.FAILED: 0.04,
    Outcome.MACHINE: 0.04,
}


@dataclass(frozen=True, slots=True)
class SimProfile:
    mix: dict[Outcome, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    ring_s: tuple[float, float] = (1.0, 4.0)
    talk_s: tuple[float, float] = (5.0, 30.0)
    dial_latency_s: float = 0.0
    refuse_rate: float = 0.0  # answered like HTTP 429: no call placed
    reject_rate: float = 0.0  # answered like an invalid number
    ambiguous_rate: float = 0.0  # request times out after the call was placed
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError("simulator outcome mix needs non-negative weights that sum above 0")
        for name, (lo, hi) in (("ring_s", self.ring_s), ("talk_s", self.talk_s)):
            if lo < 0 or hi < lo:
                raise ValueError(f"simulator {name} must be a range 0 <= low <= high")


class Ledger:
    """Append-only JSON-lines record of what the carrier saw."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()

    def write(
        self, event: str, request: DialRequest, at: float | None = None, **extra: object
    ) -> None:
        record = {
            "t": time.time() if at is None else at,
            "ev": event,
            "call": request.call_id,
            "attempt": request.attempt,
            "pid": self._pid,
            **extra,
        }
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def read_ledger(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


class SimulatedCarrier:
    name = "simulator"
    calls_end_with_process = True  # its calls are tasks of this process

    def __init__(
        self,
        reporter: EventReporter,
        profile: SimProfile | None = None,
        ledger: str | os.PathLike[str] | None = None,
    ) -> None:
        self.profile = profile or SimProfile()
        self._reporter = reporter
        self._rng = random.Random(self.profile.seed)
        self._outcomes = list(self.profile.mix)
        self._cum_weights = list(itertools.accumulate(self.profile.mix.values()))
        self._ledger = Ledger(ledger) if ledger else None
        self._live: dict[str, tuple[asyncio.Task[None], DialRequest]] = {}
        self.dials = 0

    async def dial(self, request: DialRequest) -> DialResult:
        p = self.profile
        if p.dial_latency_s:
            await asyncio.sleep(p.dial_latency_s)
        roll = self._rng.random()
        if roll < p.refuse_rate:
            return DialResult(
                DialKind.REFUSED, reason="simulated 429", retry_after_s=1.0, throttle=True
            )
        roll -= p.refuse_rate
        if roll < p.reject_rate:
            return DialResult(DialKind.REJECTED, reason="simulated invalid destination")
        self.dials += 1
        carrier_id = os.urandom(16).hex()
        if self._ledger:
            self._ledger.write("dial", request, cid=carrier_id)
        if p.ring_s == (0, 0) and p.talk_s == (0, 0):
            await self._play(request, carrier_id)  # nothing to wait for: no task needed
        else:
            task = asyncio.create_task(self._play(request, carrier_id))
            self._live[carrier_id] = (task, request)
            task.add_done_callback(lambda _t: self._live.pop(carrier_id, None))
        if roll - p.reject_rate < p.ambiguous_rate:
            return DialResult(DialKind.AMBIGUOUS, reason="simulated timeout")
        return DialResult(DialKind.ACCEPTED, carrier_call_id=carrier_id)

    def _span(self, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo if hi == lo else self._rng.uniform(lo, hi)

    async def _play(self, request: DialRequest, carrier_id: str) -> None:
        outcome = self._rng.choices(self._outcomes, cum_weights=self._cum_weights)[0]
        ring = min(self._span(self.profile.ring_s), float(request.ring_timeout_s))
        report = self._reporter.report
        if ring:
            await report(
                request.call_id, request.attempt, CarrierEvent.RINGING, carrier_call_id=carrier_id
            )
            await asyncio.sleep(ring)
        if outcome in (Outcome.COMPLETED, Outcome.MACHINE):
            answered = time.time()
            await report(
                request.call_id, request.attempt, CarrierEvent.ANSWERED, carrier_call_id=carrier_id
            )
            talk = min(self._span(self.profile.talk_s), float(request.max_duration_s))
            if talk:
                await asyncio.sleep(talk)
            await self._end(
                request,
                carrier_id,
                outcome,
                "NORMAL_CLEARING",
                duration=round(time.time() - answered, 3),
            )
        else:
            cause = {Outcome.BUSY: "USER_BUSY", Outcome.NO_ANSWER: "NO_ANSWER"}.get(
                outcome, "NETWORK_OUT_OF_ORDER"
            )
            await self._end(request, carrier_id, outcome, cause, duration=0.0)

    async def _end(
        self,
        request: DialRequest,
        carrier_id: str,
        outcome: Outcome,
        cause: str,
        duration: float,
    ) -> None:
        ended = time.time()
        facts = EndFacts(
            outcome,
            carrier_id,
            cause,
            duration_s=duration,
            bill_duration_s=float(int(duration + 0.999)),
            ended_ms=int(ended * 1000),
        )
        ledger = self._ledger

        def written() -> None:
            if ledger:
                ledger.write("end", request, at=ended, cid=carrier_id, outcome=outcome.value)

        await self._reporter.report(
            request.call_id,
            request.attempt,
            CarrierEvent.ENDED,
            carrier_call_id=carrier_id,
            end=facts,
            then=written,
        )

    def _find(
        self, call_id: str, attempt: int, carrier_call_id: str
    ) -> tuple[str, asyncio.Task[None], DialRequest] | None:
        if carrier_call_id in self._live:
            task, request = self._live[carrier_call_id]
            return carrier_call_id, task, request
        for cid, (task, request) in self._live.items():
            if request.call_id == call_id and request.attempt == attempt:
                return cid, task, request
        return None

    async def hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> bool:
        found = self._find(call_id, attempt, carrier_call_id)
        if found is None:
            return False
        cid, task, request = found
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._end(request, cid, Outcome.CANCELLED, "ORIGINATOR_CANCEL", duration=0.0)
        return True

    async def abandon(self, cause: str) -> int:
        """Cuts every live call short, reporting each as failed with ``cause`` (the worker
        stops, or can no longer prove to Redis that it is alive, so its calls are taken over)."""
        live = list(self._live.items())
        self._live.clear()
        for _, (task, _request) in live:
            task.cancel()
        for _, (task, _request) in live:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(
            *(
                self._end(request, cid, Outcome.FAILED, cause, duration=0.0)
                for cid, (_task, request) in live
            )
        )
        return len(live)

    @property
    def live_calls(self) -> int:
        return len(self._live)

    async def drain(self, timeout_s: float) -> int:
        """Lets simulated calls finish (graceful stop); returns how many were still live."""
        tasks = [t for t, _ in self._live.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return sum(1 for t in tasks if not t.done())

    async def aclose(self) -> None:
        for task, _ in list(self._live.values()):
            task.cancel()
        self._live.clear()
        if self._ledger:
            self._ledger.close()
