"""What ENQUEUE_DURABILITY costs: single enqueues (one caller, then 50 concurrent callers, whose
calls share scripts and so share waits) and bulk enqueues in each mode, in one run, rounds
interleaved (none, aof, replica, none, ...) so that a busy moment of the shared machine does not
land on one mode only.

- ``none``: a private server as ``callqueue up`` starts one (append-only file, fsync every
  second); nothing is waited for.
- ``aof``: the same server switched to ``appendfsync always`` as ``callqueue`` does for its
  embedded server in this mode; each script is followed by ``WAITAOF 1 0``.
- ``replica``: the same kind of server with one replica of its own (started here, persistence
  as the primary's); each script is followed by ``WAIT 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Iterator

from bench.common import NO_LIMITS, make_specs, private_server, server_version
from bench.registry import BenchContext, Measured, benchmark
from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect
from callqueue.engine.durability import Durability, DurabilityOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, EnqueueState
from callqueue.testing.replicas import start_replica

MODES = (Durability.NONE, Durability.AOF, Durability.REPLICA)
ROUNDS = 3
BULK_BATCH = 1_000
CALLERS = 50
#: Generous: a figure is what a confirmed enqueue costs, never a timeout.
TIMEOUT_S = 5.0


def single_key(mode: Durability) -> str:
    return f"enqueue_single_per_s_durability_{mode.value}"


def concurrent_key(mode: Durability) -> str:
    return f"enqueue_concurrent_per_s_durability_{mode.value}"


def bulk_key(mode: Durability) -> str:
    return f"enqueue_bulk_per_s_durability_{mode.value}"


KEYS = tuple(key(mode) for key in (single_key, concurrent_key, bulk_key) for mode in MODES)


@contextlib.contextmanager
def primaries() -> Iterator[dict[Durability, EmbeddedServer]]:
    """One private server per mode (and the replica mode's replica)."""
    with contextlib.ExitStack() as stack:
        servers = {mode: stack.enter_context(private_server()) for mode in MODES}
        replica = start_replica(servers[Durability.REPLICA], appendonly=True)
        stack.callback(replica.stop)
        yield servers


@contextlib.asynccontextmanager
async def durable_queue(
    ctx: BenchContext, server: EmbeddedServer, mode: Durability, name: str
) -> AsyncIterator[CallQueue]:
    client = connect(server.local_url)
    try:
        queue = CallQueue(client, name, NO_LIMITS, DurabilityOptions(mode, TIMEOUT_S))
        await queue.prepare()
        # As `callqueue` starts: the embedded server is switched to what the mode needs.
        await queue.check_durability(may_configure=True)
        ctx.server_versions.add(await server_version(client))
        yield queue
    finally:
        await client.aclose()


async def _single_rate(queue: CallQueue, n: int) -> float:
    created = 0
    t0 = time.perf_counter()
    for spec in make_specs(0, n):
        created += (await queue.enqueue(spec)).state == EnqueueState.CREATED
    elapsed = time.perf_counter() - t0
    _check_created(created, n)
    return n / elapsed


async def _concurrent_rate(queue: CallQueue, n: int) -> float:
    """``CALLERS`` tasks, each enqueueing its share of ``n`` calls one after another (what an
    API process does with that many clients)."""
    specs = make_specs(0, n)

    async def caller(share: list[CallSpec]) -> int:
        return sum([(await queue.enqueue(s)).state == EnqueueState.CREATED for s in share])

    t0 = time.perf_counter()
    created = await asyncio.gather(*(caller(specs[i::CALLERS]) for i in range(CALLERS)))
    elapsed = time.perf_counter() - t0
    _check_created(sum(created), n)
    return n / elapsed


async def _bulk_rate(queue: CallQueue, n: int) -> float:
    specs = make_specs(0, n)
    t0 = time.perf_counter()
    results = await queue.enqueue_many(specs, batch_size=BULK_BATCH)
    elapsed = time.perf_counter() - t0
    _check_created(sum(r.state == EnqueueState.CREATED for r in results), n)
    return n / elapsed


@benchmark("enqueue_durability", *KEYS)
async def enqueue_durability(ctx: BenchContext) -> Measured:
    """Single (1 and 50 callers) and bulk enqueues with ENQUEUE_DURABILITY none/aof/replica."""
    singles, concurrent, bulk = ctx.n(2_000, 500), ctx.n(10_000, 2_000), ctx.n(20_000, 5_000)
    rates: dict[str, list[float]] = {key: [] for key in KEYS}
    with primaries() as servers:
        for r in range(ROUNDS):
            for mode in MODES:
                async with durable_queue(ctx, servers[mode], mode, f"s{r}") as queue:
                    rates[single_key(mode)].append(await _single_rate(queue, singles))
                async with durable_queue(ctx, servers[mode], mode, f"c{r}") as queue:
                    rates[concurrent_key(mode)].append(await _concurrent_rate(queue, concurrent))
                async with durable_queue(ctx, servers[mode], mode, f"b{r}") as queue:
                    rates[bulk_key(mode)].append(await _bulk_rate(queue, bulk))
    notes = [
        f"{key} rounds: " + ", ".join(f"{rate:,.0f}/s" for rate in values)
        for key, values in rates.items()
    ]
    return Measured(
        {key: statistics.median(values) for key, values in rates.items()},
        n={
            "single_calls": singles,
            "concurrent_calls": concurrent,
            "callers": CALLERS,
            "bulk_calls": bulk,
            "batch": BULK_BATCH,
            "rounds": ROUNDS,
        },
        notes=notes,
    )


def _check_created(created: int, expected: int) -> None:
    if created != expected:
        raise RuntimeError(f"{created} calls created, expected {expected}")
