"""Batches carrier events into pipelines: under load many events share one round trip, idle
an event goes out at once. Each event is still its own atomic script.

Events for the same attempt that pile up in one batch are folded into the latest one (an
``ended`` carries the carrier id of ``accepted`` and the time of ``answered``): the script
reaches the same end state in one step instead of three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from callqueue.engine.queue import CallQueue, EndFacts, EventCall
from callqueue.models import CarrierEvent, EventResult

log = logging.getLogger(__name__)

Waiter = asyncio.Future[EventResult]
_RANK = {"accepted": 1, "ringing": 1, "answered": 2, "ended": 3}


def _merge(prev: EventCall, new: EventCall) -> EventCall | None:
    """One event standing for both, or None when they must go separately."""
    if prev.kind not in _RANK or new.kind not in _RANK:
        return None  # "ambiguous" is a note about the dial; keep it as it is
    if new.kind == "accepted":
        if prev.kind == "accepted":
            return None
        later, earlier = prev, new  # the carrier's callback overtook the dial's answer
    elif _RANK[new.kind] >= _RANK[prev.kind]:
        later, earlier = new, prev
    else:
        return None
    answered = later.answered_ms
    if answered is None and earlier.kind == "answered":
        answered = earlier.answered_ms or int(time.time() * 1000)
    return EventCall(
        later.call_id,
        later.attempt,
        later.kind,
        later.token,
        later.carrier_call_id or earlier.carrier_call_id,
        later.end,
        answered,
    )


def fold(batch: list[tuple[EventCall, Waiter]]) -> list[tuple[EventCall, list[Waiter]]]:
    """Folds events of the same attempt; every waiter gets the result of the folded event."""
    out: list[tuple[EventCall, list[Waiter]]] = []
    index: dict[tuple[str, int], int] = {}
    for call, future in batch:
        key = (call.call_id, call.attempt)
        at = index.get(key)
        merged = _merge(out[at][0], call) if at is not None else None
        if at is not None and merged is not None:
            out[at] = (merged, [*out[at][1], future])
        else:
            index[key] = len(out)
            out.append((call, [future]))
    return out


class EventWriter:
    """Implements the carriers' ``EventReporter`` on top of a queue."""

    def __init__(self, queue: CallQueue, max_batch: int = 500) -> None:
        self.queue = queue
        self.max_batch = max_batch
        self._pending: asyncio.Queue[tuple[EventCall, asyncio.Future[EventResult]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-writer")

    def submit(self, call: EventCall) -> asyncio.Future[EventResult]:
        future: asyncio.Future[EventResult] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((call, future))
        return future

    async def report(
        self,
        call_id: str,
        attempt: int,
        kind: CarrierEvent,
        *,
        carrier_call_id: str = "",
        end: EndFacts | None = None,
    ) -> None:
        self.submit(
            self.queue.event_call(call_id, attempt, kind, carrier_call_id=carrier_call_id, end=end)
        )

    async def _run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            await asyncio.sleep(0)  # let events produced in the same tick join this batch
            while len(batch) < self.max_batch and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                await self._send(fold(batch))
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _send(self, batch: list[tuple[EventCall, list[Waiter]]]) -> None:
        delay = 0.05
        while True:
            try:
                results = await self.queue.events(call for call, _ in batch)
                break
            except (TimeoutError, ConnectionError, OSError) as exc:
                # Events are idempotent, so sending the whole batch again is safe.
                log.warning("event batch not delivered (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:
                for _, waiters in batch:
                    for future in waiters:
                        if not future.done():
                            future.set_exception(exc)
                log.exception("event batch failed")
                return
        for (call, waiters), result in zip(batch, results, strict=True):
            if result.error:
                log.error(
                    "event %s of %s attempt %d refused: %s",
                    call.kind,
                    call.call_id,
                    call.attempt,
                    result.error,
                )
            for future in waiters:
                if not future.done():
                    future.set_result(result)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Waits until every submitted event is written (graceful stop)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout_s)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
