"""Dispatch through the Plivo carrier, end to end: ``callqueue up`` (API + dispatcher + reaper in
one process, ``CARRIER=plivo``) dials the local Plivo-compatible server
(:class:`callqueue.testing.FakePlivo`, in this process), which plays every call (answered at
once, no talk) and sends its signed ring and hangup callbacks to the app's webhooks; the answer
URL goes to a tiny agent server (also in this process).

Why a ``callqueue up`` process rather than an in-process dispatcher: it is the deployment's
path: the dispatcher's HTTP client, the webhook route with its signature check, uvicorn and
the dispatcher all share one event loop and one core, as in production.

A call counts when the queue's ``finished`` ZSET has it (its hangup callback was applied in
Redis); dials are counted from the fake's own ledger (Make-a-Call requests answered 201).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench.common import CALL_CONFIG, CAMPAIGN, number_for, open_queue, private_server
from bench.http import (
    ROUNDS,
    callqueue_process,
    cpu_per,
    cpu_snapshot,
    free_port,
    http_client,
    maybe_profile,
)
from bench.registry import BenchContext, Measured, benchmark
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, EnqueueState, Priority
from callqueue.testing import FakePlivo, Scenario, serve_asgi

AUTH_ID, TOKEN, NUMBER = "MABENCHACCOUNT000001", "bench-plivo-token", "+14155550100"
WARM_UP = 50  # calls before the measured rounds
DIALS_IN_FLIGHT = 30  # QUEUE_WORKERS of the `up` process (dial requests in flight)
# Answered at once, hung up at once: the carrier adds no waiting of its own.
INSTANT = Scenario(outcome="answered", ring_s=0.0, talk_s=0.0)
# The seed's call config without its answer_url (an outside host the fake would fetch): the
# carrier then uses AGENT_SERVER_URL/outbound-answer, the local agent server.
CONFIG: dict[str, Any] = {k: v for k, v in CALL_CONFIG.items() if k != "answer_url"}


def agent_app() -> Starlette:
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def answer(_: Request) -> Response:
        return Response("<Response><Speak>hello</Speak></Response>", media_type="text/xml")

    return Starlette(
        routes=[Route("/health", health), Route("/outbound-answer", answer, methods=["POST"])]
    )


def specs(prefix: str, count: int) -> list[CallSpec]:
    return [
        CallSpec(
            call_id=f"{prefix}-{i:07d}",
            phone_number=number_for(prefix, i),
            campaign_id=CAMPAIGN,
            config=CONFIG,
            priority=Priority.NORMAL,
            max_retries=0,
        )
        for i in range(count)
    ]


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def _round(
    queue: CallQueue, plivo: FakePlivo, prefix: str, n: int, timeout_s: float
) -> tuple[float, int, float]:
    """Fills ``n`` calls (paused), resumes, and times until the ``n``-th is finished in Redis.
    Returns (seconds, dials the fake accepted in the round, the fake's dial span in s)."""
    client = queue.client
    await queue.set_paused(True)
    results = await queue.enqueue_many(specs(prefix, n))
    created = sum(1 for r in results if r.state == EnqueueState.CREATED)
    if created != n:
        raise RuntimeError(f"{created} calls created, expected {n}")
    finished_before = int(await client.zcard(queue.keys.finished))
    requests_before = len(plivo.api_requests)
    t0 = time.perf_counter()
    await queue.set_paused(False)

    async def all_finished() -> bool:
        return int(await client.zcard(queue.keys.finished)) - finished_before >= n

    try:
        await _until(all_finished, timeout_s, f"{n} calls to finish")
    except RuntimeError:
        done = int(await client.zcard(queue.keys.finished)) - finished_before
        raise RuntimeError(
            f"only {done} of {n} calls finished in {timeout_s:.0f} s; the fake accepted "
            f"{sum(1 for r in plivo.call_requests if r.status == 201)} dials in all"
        ) from None
    elapsed = time.perf_counter() - t0
    await queue.set_paused(True)
    await plivo.settled(timeout=30)  # every callback delivered before the next round
    dials = [r for r in plivo.api_requests[requests_before:] if r.is_make_call and r.status == 201]
    span = dials[-1].at - dials[0].at if len(dials) > 1 else 0.0
    return elapsed, len(dials), span


@benchmark(
    "plivo_dispatch", "plivo_dispatch_per_s", "plivo_dials_per_s", "plivo_up_cpu_ms_per_call"
)
async def plivo_dispatch(ctx: BenchContext) -> Measured:
    """Calls/s through CARRIER=plivo (`callqueue up`) against FakePlivo, answered at once."""
    n = ctx.n(250, 150)
    timeout_s = n / 20 + 20
    rates: list[float] = []
    dial_rates: list[float] = []
    up_ms: list[float] = []
    notes: list[str] = []
    cpu: list[str] = []
    with private_server() as server:
        name = "plivo"
        options = QueueOptions(max_live_calls=0, rate_per_second=0)
        async with (
            open_queue(ctx, server.local_url, name, options) as queue,
            serve_asgi(agent_app(), port=free_port()) as agent_url,
            FakePlivo(AUTH_ID, TOKEN, scenario=INSTANT) as plivo,
        ):
            await queue.set_paused(True)
            port = free_port()
            settings = {
                "REDIS_URL": server.local_url,
                "QUEUE_NAME": name,
                "CARRIER": "plivo",
                "PLIVO_AUTH_ID": AUTH_ID,
                "PLIVO_AUTH_TOKEN": TOKEN,
                "PLIVO_NUMBER": NUMBER,
                "PLIVO_API_URL": plivo.url,
                "PUBLIC_URL": f"http://127.0.0.1:{port}",
                "AGENT_SERVER_URL": agent_url,
                "AGENT_CHECK": "off",
                "MAX_CONCURRENT_CALLS": "0",
                "RATE_LIMIT_PER_SECOND": "0",
                "QUEUE_WORKERS": str(DIALS_IN_FLIGHT),
            }
            async with callqueue_process("up", settings, "plivo", port) as proc:

                async def worker_alive() -> bool:
                    return int(await queue.client.zcard(queue.keys.workers)) >= 1

                await _until(worker_alive, 20, "the dispatcher's first heartbeat")
                # Warm-up: connections to the fake and to the app, first-use costs.
                await _round(queue, plivo, "warm", WARM_UP, 30)
                for r in range(ROUNDS):
                    pids = {"up": proc.pid, "valkey": server.pid}
                    before = cpu_snapshot(pids)
                    with maybe_profile(proc, f"plivo_round{r}", notes):
                        elapsed, dials, span = await _round(queue, plivo, f"r{r}", n, timeout_s)
                    after = cpu_snapshot(pids)
                    proc.check_alive()
                    if dials != n:
                        raise RuntimeError(f"the fake accepted {dials} dials for {n} calls")
                    rates.append(n / elapsed)
                    dial_rates.append((dials - 1) / span if span else float("nan"))
                    # The round includes waiting for the fake to settle: CPU per call, not %.
                    up_ms.append((after["up"] - before["up"]) * 1000 / n)
                    cpu.append(cpu_per(before, after, n, "call"))
                # Every call completed (not failed), as the app itself reports it.
                async with http_client(proc.base_url) as http:
                    status = (await http.get("/api/queue/status")).json()
                completed = int(status["counts"]["completed"])
                if completed != WARM_UP + ROUNDS * n or status["pending"]:
                    raise RuntimeError(f"/api/queue/status: {status['counts']}")
            failed = [c for c in plivo.callbacks if not c.ok]
            if failed:
                raise RuntimeError(
                    f"{len(failed)} callbacks not accepted, e.g. {failed[0].kind} "
                    f"{failed[0].status} {failed[0].error}"
                )
            max_live = plivo.max_live
    return Measured(
        {
            "plivo_dispatch_per_s": statistics.median(rates),
            "plivo_dials_per_s": statistics.median(dial_rates),
            "plivo_up_cpu_ms_per_call": statistics.median(up_ms),
        },
        n={
            "calls_per_round": n,
            "rounds": ROUNDS,
            "queue_workers": DIALS_IN_FLIGHT,
            "scenario": "answered, ring 0 s, talk 0 s",
            "server": "callqueue up (1 process)",
        },
        notes=[
            "plivo rounds (calls finished in Redis / dials in the fake's ledger): "
            + ", ".join(f"{a:,.0f}/s / {b:,.0f}/s" for a, b in zip(rates, dial_rates, strict=True))
            + f"; the fake's most live calls {max_live}",
            "plivo CPU by process (bench = the fake + the agent server): " + "; ".join(cpu),
            *notes,
        ],
    )
