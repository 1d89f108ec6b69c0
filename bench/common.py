"""Shared pieces: the seed's payload, private embedded servers, queues, and carrier/reporter
wrappers that time what the carrier sees."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from bench.registry import BenchContext
from callqueue.carriers.base import DialRequest, DialResult
from callqueue.carriers.simulator import SimProfile, SimulatedCarrier
from callqueue.dispatcher import Dispatcher
from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect, server_version
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue, EndFacts, EventCall
from callqueue.engine.reads import queued_total
from callqueue.heap import settle_heap, unsettle_heap
from callqueue.models import CallSpec, CallStatus, CarrierEvent, EventResult, Outcome, Priority

# The seed's example call (README, "Queue a single call").
PHONE = "+919123456789"
CAMPAIGN = "campaign-123"
CALL_CONFIG: dict[str, Any] = {
    "voice": "en-US",
    "max_duration": 1800,
    "recording_enabled": True,
    "flow_name": "wishfin-test",
    "answer_url": "https://your-domain.com/outbound-answer",
    "variables": {"name": "John Doe", "email": "john@example.com"},
}

NO_LIMITS = QueueOptions(max_live_calls=0, rate_per_second=0)
# Every call completes at once: no ring, no talk, no dial latency.
ZERO_LATENCY = SimProfile(mix={Outcome.COMPLETED: 1.0}, ring_s=(0.0, 0.0), talk_s=(0.0, 0.0))


def number_for(prefix: str, i: int) -> str:
    """A distinct number per call, as in a real list: calls to one number are never live at
    once (ONE_CALL_PER_NUMBER), so a benchmark that dialed the seed's one number for every
    call would measure that rule instead of the queue. ``+919`` + 2 digits of the prefix + 7."""
    return f"+919{zlib.crc32(prefix.encode()) % 100:02d}{i:07d}"


def make_spec(i: int, scheduled_at_ms: int | None = None, prefix: str = "call") -> CallSpec:
    """The seed's example call with a unique id, and a number of its own."""
    return CallSpec(
        call_id=f"{prefix}-{i:07d}",
        phone_number=number_for(prefix, i),
        campaign_id=CAMPAIGN,
        config=CALL_CONFIG,
        priority=Priority.NORMAL,
        max_retries=3,
        scheduled_at_ms=scheduled_at_ms,
    )


def make_specs(start: int, count: int, prefix: str = "call") -> list[CallSpec]:
    return [make_spec(i, prefix=prefix) for i in range(start, start + count)]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


# -- servers and queues ---------------------------------------------------------------------


@contextlib.contextmanager
def private_server() -> Iterator[EmbeddedServer]:
    """A fresh embedded server on a free port, configured as ``callqueue up`` starts one
    (append-only file, fsync every second) in a temporary directory, removed afterwards."""
    server = EmbeddedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def rewrite_persistence(client: Any, timeout_s: float = 180) -> float:
    """Has the server rewrite its append-only file now and waits for the rewrite to end;
    returns the seconds it took. Filling a backlog of a million calls grows the file past the
    point where the server rewrites it in a child process, by itself, at some moment of its
    own choosing: one such rewrite running would share the machine's two cores with what is
    measured next, so that figure would be the rewrite's. A rewrite after the fill, waited
    out, leaves the file compact, so that no other falls inside the measurement."""
    t0 = time.perf_counter()
    fields = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")

    async def idle() -> None:
        while True:
            info: dict[str, Any] = await client.info("persistence")
            if not any(int(info.get(field, 0)) for field in fields):
                return
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"the append-only rewrite still ran after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)

    await idle()  # one the server started by itself (a second is refused meanwhile)
    await client.execute_command("BGREWRITEAOF")
    await idle()
    return time.perf_counter() - t0


@contextlib.asynccontextmanager
async def open_queue(
    ctx: BenchContext, url: str, name: str, options: QueueOptions = NO_LIMITS
) -> AsyncIterator[CallQueue]:
    """A queue on its own client, with the function library loaded (outside any timing)."""
    client = connect(url)
    try:
        queue = CallQueue(client, name, options)
        await queue.prepare()
        ctx.server_versions.add(await server_version(client))
        yield queue
    finally:
        await client.aclose()


async def used_memory(url: str) -> int:
    """``used_memory`` from INFO memory, read on a fresh connection."""
    client = connect(url)
    try:
        info: dict[str, Any] = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


async def enqueue_concurrently(
    queue: CallQueue,
    batches: int,
    batch: Callable[[int], Sequence[CallSpec]],
    callers: int,
) -> int:
    """``callers`` concurrent callers share batches ``batch(0)`` .. ``batch(batches - 1)``,
    each sending one batch at a time with ``enqueue_many``. Returns how many calls were
    created."""
    created = 0
    next_batch = 0

    async def caller() -> None:
        nonlocal created, next_batch
        while next_batch < batches:
            index = next_batch
            next_batch += 1
            results = await queue.enqueue_many(batch(index))
            created += sum(1 for r in results if r.state == "created")

    await asyncio.gather(*(caller() for _ in range(callers)))
    return created


# -- what the carrier sees --------------------------------------------------------------------


class TimedCarrier:
    """Delegates to a carrier and calls ``on_dial(request, perf_counter, wall_time)`` the moment
    ``dial`` is called, before the carrier does anything."""

    def __init__(
        self,
        inner: SimulatedCarrier,
        on_dial: Callable[[DialRequest, float, float], None],
    ) -> None:
        self.inner = inner
        self.name = f"timed-{inner.name}"
        self._on_dial = on_dial

    async def dial(self, request: DialRequest) -> DialResult:
        self._on_dial(request, time.perf_counter(), time.time())
        return await self.inner.dial(request)

    async def hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> bool:
        return await self.inner.hangup(call_id, attempt, carrier_call_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # optional extras, e.g. drain() at a graceful stop


class DialWatch:
    """Times enqueue -> the carrier's dial() of chosen calls. Pass ``on_dial`` to the worker;
    other dials go to ``others``."""

    def __init__(self, others: Callable[[DialRequest], None] | None = None) -> None:
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._others = others

    def on_dial(self, request: DialRequest, perf: float, _wall: float) -> None:
        future = self._waiting.pop(request.call_id, None)
        if future is not None and not future.done():
            future.set_result(perf)
        elif self._others is not None:
            self._others(request)

    async def enqueue_and_time(
        self, queue: CallQueue, spec: CallSpec, worker: InProcessWorker, timeout_s: float = 10
    ) -> float:
        """Milliseconds from the start of ``queue.enqueue(spec)`` to that call's dial."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[spec.call_id] = future
        t0 = time.perf_counter()
        await queue.enqueue(spec)
        try:
            dialed = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"{spec.call_id} not dialed in {timeout_s:.0f} s; {await worker.diagnose()}"
            ) from None
        return (dialed - t0) * 1000


class CountingWriter(EventWriter):
    """The library's ``EventWriter``, unchanged, that also counts the calls whose end event was
    applied (the call is settled in Redis) and notes when the ``target``-th one was.

    It only watches: the end events are recognised as the ``submit`` made while the carrier's
    ``report`` of an ``ended`` event runs."""

    def __init__(self, queue: CallQueue) -> None:
        super().__init__(queue)
        self._ending = False
        self._changed = asyncio.Event()
        self.reset(0)

    def reset(self, target: int) -> None:
        self.settled = 0
        self.failed = 0
        self.target = target
        self.reached = asyncio.Event()
        self.reached_at: float | None = None

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
        self._ending = kind == CarrierEvent.ENDED
        try:
            await super().report(
                call_id, attempt, kind, carrier_call_id=carrier_call_id, end=end, then=then
            )
        finally:
            self._ending = False

    def submit(self, call: EventCall) -> asyncio.Future[EventResult]:
        future = super().submit(call)
        if self._ending:
            future.add_done_callback(self._ended)
        return future

    def _ended(self, future: asyncio.Future[EventResult]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            return
        result = future.result()
        if not (result.applied and result.status == CallStatus.COMPLETED):
            self.failed += 1
            return
        self.settled += 1
        self._changed.set()
        if self.target and self.settled >= self.target and self.reached_at is None:
            self.reached_at = time.perf_counter()
            self.reached.set()

    async def wait_settled(self, count: int) -> None:
        """Until at least ``count`` calls have been settled."""
        while self.settled < count:
            self._changed.clear()
            await self._changed.wait()


class InProcessWorker:
    """A ``Dispatcher`` with the zero-latency simulator behind a :class:`TimedCarrier` and a
    :class:`CountingWriter`, all in this process (what ``callqueue worker`` wires up)."""

    def __init__(
        self,
        queue: CallQueue,
        concurrency: int,
        on_dial: Callable[[DialRequest, float, float], None] | None = None,
        profile: SimProfile = ZERO_LATENCY,
    ) -> None:
        self.counter = CountingWriter(queue)
        self.carrier = TimedCarrier(
            SimulatedCarrier(self.counter, profile), on_dial or (lambda _r, _p, _w: None)
        )
        self.dispatcher = Dispatcher(queue, self.carrier, self.counter, concurrency=concurrency)

    async def diagnose(self) -> str:
        """What the worker and the queue look like, for error messages."""
        queue = self.dispatcher.queue
        tasks = []
        for task in self.dispatcher._tasks:  # private, but only read when something is stuck
            state = "running"
            if task.done():
                exc = None if task.cancelled() else task.exception()
                state = f"ended ({exc!r})" if exc else "ended"
            tasks.append(f"{task.get_name()} {state}")
        ready = await queued_total(queue)
        return (
            f"dispatcher dialed {self.dispatcher.dialed}, settled {self.counter.settled}, "
            f"failed {self.counter.failed}; tasks: {', '.join(tasks) or 'none'}; "
            f"{ready} ready; paused={await queue.is_paused()}"
        )

    async def __aenter__(self) -> InProcessWorker:
        await self.dispatcher.start()
        # The heap as a worker process settles it once dispatching (callqueue worker / up).
        self._threshold = gc.get_threshold()
        settle_heap()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.stop()
        await self.carrier.aclose()
        unsettle_heap(self._threshold)
