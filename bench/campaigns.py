"""Campaign fairness: how soon a newly queued small campaign is dialed while a big one runs."""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import replace

from bench.common import (
    DialWatch,
    InProcessWorker,
    make_spec,
    open_queue,
    percentile,
    private_server,
)
from bench.fastfill import fast_fill
from bench.registry import BenchContext, Measured, benchmark
from callqueue.carriers.base import DialRequest
from callqueue.engine.options import QueueOptions

#: The big campaign dials at a carrier's pace: this many per second (the global limit).
RATE = 100
DISPATCH_CONCURRENCY = 50


@benchmark("campaign_switch", "campaign_switch_ms", "campaign_switch_p99_ms")
async def campaign_switch(ctx: BenchContext) -> Measured:
    """A 100,000-call campaign dials at 100/s; one-call campaigns are queued one at a time:
    enqueue -> that campaign's first dial."""
    big = ctx.n(100_000, 20_000)
    samples = ctx.n(40, 15)
    big_dials = 0
    under_way = asyncio.Event()  # the big campaign has dialed for about a second

    def big_dialed(request: DialRequest) -> None:
        nonlocal big_dials
        if request.campaign_id == "campaign-123":
            big_dials += 1
            if big_dials >= RATE:
                under_way.set()

    watch = DialWatch(big_dialed)
    latencies: list[float] = []
    options = QueueOptions(max_live_calls=0, rate_per_second=RATE)
    with private_server() as server:
        async with open_queue(ctx, server.local_url, "switch", options) as queue:
            await queue.set_paused(True)
            await fast_fill(queue, server.host, server.port, big)  # campaign-123, the seed's
            await queue.set_paused(False)
            async with InProcessWorker(queue, DISPATCH_CONCURRENCY, watch.on_dial) as worker:
                await asyncio.wait_for(under_way.wait(), 30)
                for i in range(samples):
                    spec = replace(make_spec(i, prefix="small"), campaign_id=f"small-{i}")
                    latencies.append(await watch.enqueue_and_time(queue, spec, worker))
                    await asyncio.sleep(0.1)
    return Measured(
        {
            "campaign_switch_ms": statistics.median(latencies),
            "campaign_switch_p99_ms": percentile(latencies, 99),
        },
        n={"big_campaign": big, "samples": samples, "rate_per_s": RATE},
        notes=[
            f"campaign switch: min {min(latencies):.1f} ms, max {max(latencies):.1f} ms "
            f"(big campaign dialing at {RATE}/s; {big_dials} of its dials meanwhile)"
        ],
    )
