"""Sub-benchmarks that run the library in this process against a private embedded server."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.common import (
    DialWatch,
    InProcessWorker,
    enqueue_concurrently,
    make_spec,
    make_specs,
    open_queue,
    percentile,
    private_server,
    used_memory,
)
from bench.registry import BenchContext, Measured, benchmark
from callqueue.carriers.base import DialRequest
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import queued_total
from callqueue.models import CallSpec, EnqueueState

BULK_BATCH = 1_000
DISPATCH_CONCURRENCY = 100
# Throughputs are the median of a few rounds: the machine may be shared, and one short round
# can land on someone else's busy moment.
ROUNDS = 3


def _rounds_note(what: str, rates: list[float]) -> str:
    return f"{what} rounds: " + ", ".join(f"{r:,.0f}/s" for r in rates)


async def _bulk_rate(ctx: BenchContext, url: str, name: str, n: int) -> float:
    """One ``enqueue_many`` of ``n`` seed calls, 1,000 per script (the library overlaps them)."""
    async with open_queue(ctx, url, name) as queue:
        specs = make_specs(0, n)
        t0 = time.perf_counter()
        results = await queue.enqueue_many(specs, batch_size=BULK_BATCH)
        elapsed = time.perf_counter() - t0
    _check_created(sum(1 for r in results if r.state == EnqueueState.CREATED), n)
    return n / elapsed


@benchmark("enqueue_bulk", "enqueue_bulk_per_s")
async def enqueue_bulk(ctx: BenchContext) -> Measured:
    """CallQueue.enqueue_many of 50,000 seed calls in batches of 1,000, one caller."""
    n = ctx.n(50_000, 10_000)
    with private_server() as server:
        rates = [await _bulk_rate(ctx, server.local_url, f"bulk{r}", n) for r in range(ROUNDS)]
    return Measured(
        {"enqueue_bulk_per_s": statistics.median(rates)},
        n={"calls": n, "batch": BULK_BATCH, "rounds": ROUNDS},
        notes=[_rounds_note("enqueue_many", rates)],
    )


@benchmark("enqueue_single", "enqueue_single_per_s")
async def enqueue_single(ctx: BenchContext) -> Measured:
    """One client, sequential "await queue.enqueue(spec)"."""
    n = ctx.n(2_000, 500)
    rates = []
    with private_server() as server:
        for r in range(ROUNDS):
            async with open_queue(ctx, server.local_url, f"single{r}") as queue:
                specs = make_specs(0, n)
                created = 0
                t0 = time.perf_counter()
                for spec in specs:
                    result = await queue.enqueue(spec)
                    created += result.state == "created"
                elapsed = time.perf_counter() - t0
            _check_created(created, n)
            rates.append(n / elapsed)
    return Measured(
        {"enqueue_single_per_s": statistics.median(rates)},
        n={"calls": n, "rounds": ROUNDS},
        notes=[_rounds_note("enqueue", rates)],
    )


async def dispatch_rate(queue: CallQueue, n: int, concurrency: int, timeout_s: float) -> float:
    """Calls per second settled by one in-process dispatcher (zero-latency simulator) until the
    ``n``-th call has been settled. The queue must be paused and hold at least ``n`` calls:
    the clock starts when it is resumed, with the dispatcher already running."""
    finished_before = int(await queue.client.zcard(queue.keys.finished))
    async with InProcessWorker(queue, concurrency) as worker:
        worker.counter.reset(n)
        t0 = time.perf_counter()
        await queue.set_paused(False)
        try:
            await asyncio.wait_for(worker.counter.reached.wait(), timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"only {worker.counter.settled} of {n} calls settled in {timeout_s:.0f} s; "
                + await worker.diagnose()
            ) from None
        assert worker.counter.reached_at is not None
        elapsed = worker.counter.reached_at - t0
        await queue.set_paused(True)  # no more claims while the dispatcher stops
    if worker.counter.failed:
        raise RuntimeError(f"{worker.counter.failed} end events were not applied")
    finished = int(await queue.client.zcard(queue.keys.finished)) - finished_before
    if finished < n:  # cross-check the in-process count against Redis
        raise RuntimeError(f"{n} calls counted as settled but only {finished} were finished")
    return n / elapsed


async def fill_paused(queue: CallQueue, n: int, callers: int = 1) -> None:
    """Queues ``n`` seed calls with the queue paused (nothing is dispatched meanwhile), in
    1,000-call ``enqueue_many`` batches from ``callers`` concurrent callers."""
    await queue.set_paused(True)
    batches = (n + BULK_BATCH - 1) // BULK_BATCH

    def batch(i: int) -> list[CallSpec]:
        return make_specs(i * BULK_BATCH, min(BULK_BATCH, n - i * BULK_BATCH))

    created = await enqueue_concurrently(queue, batches, batch, callers)
    ready = int(await queued_total(queue))
    if created != n or ready != n:
        raise RuntimeError(f"filled {created} calls ({ready} ready), expected {n}")


@benchmark("dispatch", "dispatch_per_s")
async def dispatch(ctx: BenchContext) -> Measured:
    """Claim + dial + events + settle, zero-latency simulator, no limits, one process."""
    n = ctx.n(5_000, 2_000)
    rates = []
    with private_server() as server:
        for r in range(ROUNDS):
            async with open_queue(ctx, server.local_url, f"dispatch{r}") as queue:
                await fill_paused(queue, n)
                rates.append(
                    await dispatch_rate(queue, n, DISPATCH_CONCURRENCY, timeout_s=n / 200 + 10)
                )
    return Measured(
        {"dispatch_per_s": statistics.median(rates)},
        n={"calls": n, "concurrency": DISPATCH_CONCURRENCY, "rounds": ROUNDS},
        notes=[_rounds_note("dispatch", rates)],
    )


@benchmark("pickup", "pickup_p50_ms", "pickup_p99_ms")
async def pickup(ctx: BenchContext) -> Measured:
    """Idle system: start of enqueue() of one call -> the carrier's dial(), one at a time."""
    samples = ctx.n(300, 100)
    warmup = 20
    watch = DialWatch()
    latencies: list[float] = []
    with private_server() as server:
        async with (
            open_queue(ctx, server.local_url, "pickup") as queue,
            InProcessWorker(queue, concurrency=10, on_dial=watch.on_dial) as worker,
        ):
            for i in range(warmup + samples):
                latency = await watch.enqueue_and_time(queue, make_spec(i), worker)
                if i >= warmup:
                    latencies.append(latency)
                # Let the call settle and the dispatcher go back to sleep: an idle system.
                await asyncio.wait_for(worker.counter.wait_settled(i + 1), 10)
                await asyncio.sleep(0.003)
    return Measured(
        {"pickup_p50_ms": percentile(latencies, 50), "pickup_p99_ms": percentile(latencies, 99)},
        n={"samples": samples, "warmup": warmup},
        notes=[f"pickup max {max(latencies):.2f} ms"],
    )


@benchmark("schedule_lateness", "schedule_lateness_p50_ms", "schedule_lateness_p99_ms")
async def schedule_lateness(ctx: BenchContext) -> Measured:
    """Calls due 0.5-3.5 s ahead: wall time at the carrier's dial() minus the due time."""
    count = ctx.n(300, 100)
    spread_ms = ctx.n(3_000, 1_500)
    lead_ms = 500
    dialed_at: dict[str, float] = {}
    all_dialed = asyncio.Event()

    def on_dial(request: DialRequest, _perf: float, wall: float) -> None:
        dialed_at.setdefault(request.call_id, wall)
        if len(dialed_at) >= count:
            all_dialed.set()

    with private_server() as server:
        async with (
            open_queue(ctx, server.local_url, "sched") as queue,
            InProcessWorker(queue, concurrency=50, on_dial=on_dial) as worker,
        ):
            first_due = int(time.time() * 1000) + lead_ms
            due = {f"call-{i:07d}": first_due + i * spread_ms // count for i in range(count)}
            await queue.enqueue_many(
                [make_spec(i, scheduled_at_ms=due[f"call-{i:07d}"]) for i in range(count)]
            )
            timeout = (lead_ms + spread_ms) / 1000 + 10
            try:
                await asyncio.wait_for(all_dialed.wait(), timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"{len(dialed_at)} of {count} scheduled calls dialed in {timeout:.0f} s; "
                    + await worker.diagnose()
                ) from None
    lateness = [dialed_at[cid] * 1000 - due_ms for cid, due_ms in due.items()]
    return Measured(
        {
            "schedule_lateness_p50_ms": percentile(lateness, 50),
            "schedule_lateness_p99_ms": percentile(lateness, 99),
        },
        n={"calls": count, "spread_ms": spread_ms},
        notes=[f"schedule lateness min {min(lateness):.2f} ms, max {max(lateness):.2f} ms"],
    )


@benchmark("redis_memory", "redis_bytes_per_call")
async def redis_memory(ctx: BenchContext) -> Measured:
    """INFO used_memory delta for queued seed calls, per call."""
    n = ctx.n(100_000, 20_000)
    with private_server() as server:
        async with open_queue(ctx, server.local_url, "mem"):
            pass  # loads the function library, so it is not counted
        before = await used_memory(server.local_url)
        async with open_queue(ctx, server.local_url, "mem") as queue:
            specs = make_specs(0, n)
            results = await queue.enqueue_many(specs, batch_size=BULK_BATCH)
            _check_created(sum(1 for r in results if r.state == EnqueueState.CREATED), n)
            ready = await queued_total(queue)
        # Measured on a fresh connection after the filling client is gone, so its buffers
        # are not counted.
        after = await used_memory(server.local_url)
    if ready != n:
        raise RuntimeError(f"{ready} calls queued, expected {n}")
    return Measured(
        {"redis_bytes_per_call": (after - before) / n},
        n={"calls": n},
        notes=[f"used_memory {before:,} -> {after:,} bytes"],
    )


def _check_created(created: int, expected: int) -> None:
    if created != expected:
        raise RuntimeError(f"{created} calls created, expected {expected}")
