"""Batches carrier events into pipelines: under load many events share one round trip, idle
an event goes out at once. Each event is still its own atomic script.

Events for the same attempt that pile up in one batch are folded into the latest one (an
``ended`` carries the carrier id of ``accepted`` and the time of ``answered``): the script
reaches the same end state in one step instead of three.

**No event is dropped.** An event is what the carrier said happened; losing one leaves an
attempt holding its slot until its longest life passes and then retried as ``lost``, calling
back a person who may have just finished talking. So:

- a batch that meets a transient Redis failure (see :mod:`callqueue.engine.faults`: connection,
  timeout, LOADING, READONLY, cluster failover, TRYAGAIN, too many connections) is sent again
  with backoff, for as long as the process lives; events are idempotent, so a replay that finds
  its work done changes nothing;
- a batch that fails otherwise is split, and each event is tried alone, so one bad event cannot
  hold back the rest; an event that still fails (or that the script refuses) is logged with its
  call and attempt, kept, and tried again every ``retry_failed_s``;
- what is still unwritten when the writer closes goes to the **spool**, a JSON-lines file that
  the next writer on this machine replays at start (``EVENT_SPOOL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from callqueue.engine.contracts import PHASE
from callqueue.engine.faults import Backoff, is_transient
from callqueue.engine.queue import CallQueue, EventCall
from callqueue.models import CarrierEvent, EndFacts, EventResult, Outcome

log = logging.getLogger(__name__)

Waiter = asyncio.Future[EventResult]
_RANK = PHASE  # the Lua's PHASE too (generated from it): events merge as the script orders them
RETRY_FAILED_S = 30.0


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
        later.carrier_ids or earlier.carrier_ids,
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


def _after(future: Waiter, then: Callable[[], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        then()


# -- the spool -------------------------------------------------------------------------------
def event_to_json(call: EventCall) -> bytes:
    return orjson.dumps(asdict(call))


def event_from_json(line: bytes) -> EventCall:
    raw: dict[str, Any] = orjson.loads(line)
    end = raw.get("end")
    if end is not None:
        end = EndFacts(**{**end, "outcome": Outcome(end["outcome"])})
    return EventCall(
        str(raw["call_id"]),
        int(raw["attempt"]),
        str(raw["kind"]),
        str(raw.get("token", "")),
        str(raw.get("carrier_call_id", "")),
        end,
        raw.get("answered_ms"),
        tuple(str(i) for i in raw.get("carrier_ids", ())),
    )


def write_spool(path: Path, events: list[EventCall]) -> None:
    """Appends ``events`` to the spool and makes them durable (fsync) before returning."""
    if not events:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"".join(event_to_json(e) + b"\n" for e in events))
        os.fsync(fd)
    finally:
        os.close(fd)


def take_spool(path: Path) -> list[EventCall]:
    """The spooled events, taken over by this process: the file is renamed first, so two
    writers sharing a spool never replay the same file twice; it is removed once the events are
    back in a writer (which spools them again if it cannot write them either)."""
    taken = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.replaying")
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return []
    events = []
    with open(taken, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(event_from_json(line))
            except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash
                log.error("event spool %s line %d unreadable, skipped: %s", path, number, exc)
    taken.unlink()
    return events


class EventWriter:
    """Implements the carriers' ``EventReporter`` on top of a queue."""

    def __init__(
        self,
        queue: CallQueue,
        max_batch: int = 500,
        *,
        spool: Path | None = None,
        retry_failed_s: float = RETRY_FAILED_S,
    ) -> None:
        self.queue = queue
        self.max_batch = max_batch
        self.spool = spool
        self.retry_failed_s = retry_failed_s
        self._pending: asyncio.Queue[tuple[EventCall, Waiter]] = asyncio.Queue()
        self._sending: list[EventCall] = []  # the batch on its way (spooled if we close)
        self._failed: list[EventCall] = []  # refused for a reason other than a blip
        self._task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self.replayed = 0

    def start(self) -> None:
        if self._task is not None:
            return
        if self.spool is not None:
            spooled = take_spool(self.spool)
            if spooled:
                log.warning("replaying %d carrier events spooled at the last stop", len(spooled))
                self.replayed += len(spooled)
                for call in spooled:
                    self.submit(call)
        self._task = asyncio.create_task(self._run(), name="event-writer")
        self._retry_task = asyncio.create_task(self._retry_failed(), name="event-retry")

    def submit(self, call: EventCall) -> Waiter:
        future: Waiter = asyncio.get_running_loop().create_future()
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
        then: Callable[[], None] | None = None,
    ) -> None:
        """Takes the event (written in order; a refused one is kept and tried again); calls
        ``then`` once it is written."""
        future = self.submit(
            self.queue.event_call(call_id, attempt, kind, carrier_call_id=carrier_call_id, end=end)
        )
        if then is not None:
            future.add_done_callback(lambda f: _after(f, then))

    @property
    def unwritten(self) -> int:
        """Events submitted and not written yet (queued, on their way, or kept after refusal)."""
        return self._pending.qsize() + len(self._sending) + len(self._failed)

    async def _run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            await asyncio.sleep(0)  # let events produced in the same tick join this batch
            while len(batch) < self.max_batch and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            self._sending = [call for call, _ in batch]
            try:
                await self._send(fold(batch))
                self._sending = []  # kept when cancelled: aclose spools it
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _send(self, batch: list[tuple[EventCall, list[Waiter]]]) -> None:
        backoff = Backoff()
        tries = 0
        while True:
            try:
                results = await self.queue.events(call for call, _ in batch)
                break
            except Exception as exc:
                if not is_transient(exc):
                    await self._send_alone(batch, exc)
                    return
                tries += 1
                delay = backoff.next()
                # Events are idempotent, so sending the whole batch again is safe.
                if tries in (1, 10) or tries % 100 == 0:
                    log.warning(
                        "%d carrier events not written (Redis: %s); try %d in %.2fs",
                        len(batch), exc, tries + 1, delay,
                    )  # fmt: skip
                await asyncio.sleep(delay)
        if tries:
            log.warning("%d carrier events written after %d tries", len(batch), tries + 1)
        for (call, waiters), result in zip(batch, results, strict=True):
            if result.error:
                self._keep(call, result.error)
                self._fail(waiters, RuntimeError(result.error))
            else:
                self._resolve(waiters, result)

    async def _send_alone(
        self, batch: list[tuple[EventCall, list[Waiter]]], exc: Exception
    ) -> None:
        """A batch failed for a reason other than a blip: each event alone, so one bad event
        holds back none of the others."""
        if len(batch) == 1:
            call, waiters = batch[0]
            self._keep(call, f"{type(exc).__name__}: {exc}")
            self._fail(waiters, exc)
            return
        for item in batch:
            await self._send([item])

    def _keep(self, call: EventCall, why: str) -> None:
        log.error(
            "carrier event %s of %s attempt %d not applied (%s): kept, tried again in %.0fs",
            call.kind, call.call_id, call.attempt, why, self.retry_failed_s,
        )  # fmt: skip
        self._failed.append(call)

    @staticmethod
    def _resolve(waiters: list[Waiter], result: EventResult) -> None:
        for future in waiters:
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(waiters: list[Waiter], exc: Exception) -> None:
        for future in waiters:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller that does not wait logs nothing more

    async def _retry_failed(self) -> None:
        while True:
            await asyncio.sleep(self.retry_failed_s)
            again, self._failed = self._failed, []
            for call in again:
                self.submit(call)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Waits until every submitted event is written (graceful stop)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout_s)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Writes what it can within ``timeout_s``; spools the rest (or, with no spool, logs
        each event it has to leave behind)."""
        await self.flush(timeout_s)
        for task in (self._task, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._retry_task = None
        left = [*self._sending, *self._failed]
        while not self._pending.empty():
            left.append(self._pending.get_nowait()[0])
        self._sending, self._failed = [], []
        if not left:
            return
        if self.spool is not None:
            write_spool(self.spool, left)
            log.warning("%d carrier events not written: spooled to %s", len(left), self.spool)
            return
        for call in left:
            log.error(
                "carrier event %s of %s attempt %d not written at stop (no spool configured)",
                call.kind, call.call_id, call.attempt,
            )  # fmt: skip
