"""Batches carrier events into pipelines: under load many events share one round trip, idle
an event goes out at once. Each event is still its own atomic script."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from callqueue.engine.queue import CallQueue, EndFacts, EventCall
from callqueue.models import CarrierEvent, EventResult

log = logging.getLogger(__name__)


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
            while len(batch) < self.max_batch and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _send(self, batch: list[tuple[EventCall, asyncio.Future[EventResult]]]) -> None:
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
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                log.exception("event batch failed")
                return
        for (_, future), result in zip(batch, results, strict=True):
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
