"""Does dispatch slow down with a deep backlog? 1,000,000 queued calls against 1,000."""

from __future__ import annotations

import statistics

from bench.common import open_queue, private_server, rewrite_persistence
from bench.fastfill import fast_fill
from bench.inprocess import DISPATCH_CONCURRENCY, dispatch_rate, fill_paused
from bench.registry import BenchContext, Measured, benchmark


@benchmark(
    "dispatch_scale",
    "dispatch_per_s_at_1m_over_1k",
    "dispatch_per_s_at_1k",
    "dispatch_per_s_at_1m",
)
async def dispatch_scale(ctx: BenchContext) -> Measured:
    """Dispatch rate from a 1,000,000-call backlog over the rate from a 1,000-call one."""
    big = ctx.n(1_000_000, 100_000)
    small = 1_000
    # Each round dispatches the same number of calls on both sides (the whole small backlog,
    # and as many from the big one), so start-up and the last claims weigh the same in both.
    rounds = 9
    small_rates: list[float] = []
    big_rates: list[float] = []
    # Both servers stay up and the rounds alternate (1k, 1M, 1k, 1M, ...), each side taking the
    # median of its rounds, so a busy moment on a shared machine does not land on one side of
    # the ratio only.
    with private_server() as small_server, private_server() as big_server:
        async with open_queue(ctx, big_server.local_url, "big") as big_queue:
            await big_queue.set_paused(True)
            await fast_fill(big_queue, big_server.host, big_server.port, big)
            rewrite_wait = await rewrite_persistence(big_queue.client)
            for r in range(rounds):
                async with open_queue(ctx, small_server.local_url, f"small{r}") as queue:
                    await fill_paused(queue, small)
                    small_rates.append(
                        await dispatch_rate(queue, small, DISPATCH_CONCURRENCY, timeout_s=30)
                    )
                big_rates.append(
                    await dispatch_rate(big_queue, small, DISPATCH_CONCURRENCY, timeout_s=60)
                )
    small_rate = statistics.median(small_rates)
    big_rate = statistics.median(big_rates)
    return Measured(
        {
            "dispatch_per_s_at_1m_over_1k": big_rate / small_rate,
            "dispatch_per_s_at_1k": small_rate,
            "dispatch_per_s_at_1m": big_rate,
        },
        n={
            "big_backlog": big,
            "big_dispatched": small * rounds,
            "small_backlog": small,
            "rounds": rounds,
            "concurrency": DISPATCH_CONCURRENCY,
        },
        notes=[
            f"after the 1M fill, the append-only file was rewritten ({rewrite_wait:.1f} s), so "
            "that no rewrite falls inside the rounds",
            "dispatch from 1k rounds: " + ", ".join(f"{r:,.0f}/s" for r in small_rates),
            "dispatch from 1M rounds: " + ", ".join(f"{r:,.0f}/s" for r in big_rates),
        ],
    )
