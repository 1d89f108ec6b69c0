"""Chaos runs: real ``callqueue`` processes dial through the simulated carrier (or the fake
Plivo) while a part of the system is killed or its network misbehaves. Each run is judged from
the carrier's ledger and the queue's final state (see callqueue.testing.chaos.judge): every
call terminal, no attempt dialed twice, nobody dialed again after their call completed, nobody
on two calls at once, live calls within the cap, dials within the rate limit, and dialing back
at the full rate within WORKER_TTL + 2 s of each fault (counted from when the killed part is
back, if that took longer than WORKER_TTL).

Short form by default (a few hundred calls); ``CHAOS_FULL=1`` (``make chaos``) for the full
form (5,000 calls, more faults)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from chaos_support import (
    PROFILE,
    ChaosRun,
    base_url,
    service_env,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.embedded import EmbeddedServer
from callqueue.testing import serve_asgi
from callqueue.testing.chaos import Fault, RunReport
from callqueue.testing.fake_plivo_process import FakePlivoProcess
from callqueue.testing.faultproxy import FaultProxyProcess
from callqueue.testing.replica_cluster import ReplicaCluster

pytestmark = pytest.mark.chaos

#: Redis is brought back this long after it was killed (a supervisor's restart delay).
REDIS_DOWN_S = 3.0


async def test_kill_up_mid_run(
    tmp_path: Path, unique_name: str, chaos_reports: list[RunReport]
) -> None:
    """``kill -9`` of ``callqueue up`` while it has calls live; a supervisor starts it again
    (in the same directory: what it left there is its to read)."""
    with EmbeddedServer(tmp_path / "redis") as server:
        env = service_env(server.url, unique_name, tmp_path / "ledger.jsonl")
        async with ChaosRun("kill -9 up", tmp_path, env) as run:
            up = await run.start("up", "up-1", home="up")
            await run.enqueue()
            for i in range(PROFILE.kills):
                await run.next_fault(i, run.live_in(up))
                victim, killed_at = up, time.time()
                victim.kill()
                up = await run.start("up", f"up-{i + 2}", home="up")
                back = time.time() - killed_at
                run.fault(Fault("kill -9 up", killed_at, str(victim.popen.pid), back))
            await run.conclude(chaos_reports, [up], api=True)


async def test_kill_one_worker_of_two(
    tmp_path: Path, unique_name: str, chaos_reports: list[RunReport]
) -> None:
    """Two ``callqueue worker`` processes on one Redis; ``kill -9`` of one while it has calls
    live; a supervisor starts it again."""
    with EmbeddedServer(tmp_path / "redis") as server:
        env = service_env(server.url, unique_name, tmp_path / "ledger.jsonl")
        async with ChaosRun("kill -9 worker", tmp_path, env) as run:
            workers = [await run.start("worker", f"w{i}") for i in (1, 2)]
            await run.enqueue()
            for i in range(PROFILE.kills):
                victim, other = workers  # the older one dies
                await run.next_fault(i, run.live_in(victim, also_dialing=other))
                killed_at = time.time()
                victim.kill()
                run.fault(Fault("kill -9 worker", killed_at, str(victim.popen.pid)))
                workers = [other, await run.start("worker", f"w{i + 3}")]
            await run.conclude(chaos_reports, workers)


async def test_kill_redis_mid_run(
    tmp_path: Path, unique_name: str, chaos_reports: list[RunReport]
) -> None:
    """``kill -9`` of Redis (append-only file on) under ``callqueue up``, restarted 3 s later."""
    with EmbeddedServer(tmp_path / "redis", appendonly=True) as server:
        env = service_env(server.url, unique_name, tmp_path / "ledger.jsonl")
        async with ChaosRun("kill -9 redis", tmp_path, env) as run:
            up = await run.start("up", "up")
            await run.enqueue()
            for i in range(PROFILE.kills):
                await run.next_fault(i)
                killed_at = time.time()
                server.kill()
                await asyncio.sleep(REDIS_DOWN_S)  # the fault itself: Redis stays down
                await asyncio.to_thread(server.start)
                run.fault(Fault("kill -9 redis", killed_at, outage_s=time.time() - killed_at))
            await run.conclude(chaos_reports, [up], api=True)


@pytest.mark.cluster
async def test_cluster_master_failover(
    tmp_path: Path, unique_name: str, chaos_reports: list[RunReport]
) -> None:
    """3 masters + 3 replicas; the master holding the queue's slot is killed and its replica
    promoted (automatic failover); the old master comes back as a replica before the next."""
    cluster = ReplicaCluster(tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=1500)
    await asyncio.to_thread(cluster.start)
    try:
        key = f"cq:{{{unique_name}}}:x"
        # The service's first node: one that is neither killed nor promoted.
        first, spare = cluster.master_of(key), cluster.replicas_of(cluster.master_of(key))
        entry = next(n for n in cluster.nodes if n is not first and n not in spare)
        env = service_env(entry.url, unique_name, tmp_path / "ledger.jsonl", REDIS_CLUSTER="1")
        async with ChaosRun("cluster failover", tmp_path, env) as run:
            up = await run.start("up", "up")
            await run.enqueue()
            for i in range(PROFILE.kills):
                await run.next_fault(i)
                victim = cluster.master_of(key)
                killed_at = time.time()
                victim.kill()
                await asyncio.to_thread(cluster.wait_failover, victim)
                run.fault(Fault("master killed", killed_at, outage_s=time.time() - killed_at))
                await asyncio.to_thread(cluster.rejoin, victim)
            await run.conclude(chaos_reports, [up], api=True)
    finally:
        await asyncio.to_thread(cluster.stop)


# -- the fault proxy, with the fake Plivo ---------------------------------------------------------

AUTH_ID, TOKEN = "MACHAOS0000000000001", "chaos-plivo-token"
#: No worker dies here, so an attempt's longest life only bounds a dial request cut before it
#: reached the carrier: 2 + 1 + 2 + 5 s (the fake's calls ring up to 0.2 s, talk up to 1.2 s).
#: The grace is the issue's 5 s: a hangup callback later than that after the call's longest
#: life is not waited for (on this machine a busy service has taken up to 4.8 s to take one).
PROXY_LIMITS = {
    "DIAL_LEASE_SECONDS": "2",
    "RING_TIMEOUT": "1",
    "DEFAULT_MAX_DURATION": "2",
    "CALL_GRACE_SECONDS": "5",
}


def voice_bot() -> Starlette:
    """The agent server: its health (in /api/health) and the answer URL of answered calls."""

    async def answer(_: Request) -> Response:
        return Response("<Response><Speak>hello</Speak></Response>", media_type="text/xml")

    async def health(_: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route("/outbound-answer", answer, methods=["GET", "POST"]),
            Route("/health", health),
        ]
    )


async def test_fault_proxy_between_service_redis_and_plivo(
    tmp_path: Path, unique_name: str, chaos_reports: list[RunReport]
) -> None:
    """``callqueue up`` with CARRIER=plivo reaches Redis and the fake Plivo through fault
    proxies (processes of their own): latency, connections dropped (FIN) and reset (RST)."""
    ledger = tmp_path / "ledger.jsonl"
    with EmbeddedServer(tmp_path / "redis") as server:
        async with (
            FaultProxyProcess("127.0.0.1", server.port) as redis_proxy,
            FakePlivoProcess(ledger, AUTH_ID, TOKEN) as plivo,
            FaultProxyProcess("127.0.0.1", plivo.port) as plivo_proxy,
            serve_asgi(voice_bot()) as bot,
        ):
            env = service_env(
                f"redis://127.0.0.1:{redis_proxy.port}", unique_name, ledger,
                CARRIER="plivo", PLIVO_AUTH_ID=AUTH_ID, PLIVO_AUTH_TOKEN=TOKEN,
                PLIVO_NUMBER="+14155550100", PLIVO_API_URL=f"http://127.0.0.1:{plivo_proxy.port}",
                AGENT_SERVER_URL=bot, AGENT_CHECK="off", QUEUE_WORKERS=str(PROFILE.cap),
                RATE_LIMIT_PER_SECOND=str(PROFILE.proxy_rate), **PROXY_LIMITS,
            )  # fmt: skip
            env["PUBLIC_URL"] = base_url(env)
            await plivo_proxy.set_latency(0.02)
            async with ChaosRun("fault proxy", tmp_path, env, PROFILE.proxy_calls) as run:
                up = await run.start("up", "up")
                await run.enqueue()
                await run.steady()
                await run_schedule(run, proxy_schedule(redis_proxy, plivo_proxy))
                await run.conclude(chaos_reports, [up], api=True)


@dataclass(frozen=True)
class Step:
    act: Callable[[], Awaitable[object]]
    measured: bool = True  # a recovery target applies


def proxy_schedule(redis: FaultProxyProcess, carrier: FaultProxyProcess) -> list[tuple[str, Step]]:
    """The fault proxies' faults in order. The carrier path keeps its latency constant: a
    latency that drops would bunch requests sent a second apart into less than a second at
    the carrier, which no dialer can prevent. Short form: the two paths fail at the same
    moments, the carrier's first (a dial request cut before it reached the carrier holds its
    slot for its longest life, which then runs out while the rest goes on); full form: each
    path in turn, ``proxy_rounds`` times."""

    def both(carrier_fault: str, redis_fault: str) -> Step:
        async def act() -> None:
            await asyncio.gather(getattr(carrier, carrier_fault)(), getattr(redis, redis_fault)())

        return Step(act)

    latency = [
        ("redis +5ms", Step(lambda: redis.set_latency(0.005), measured=False)),
        ("redis 0ms", Step(lambda: redis.set_latency(0.0), measured=False)),
    ]
    if PROFILE.proxy_rounds == 0:
        return [
            ("plivo reset+redis drop", both("reset_all", "drop_all")),
            ("plivo drop+redis reset", both("drop_all", "reset_all")),
            *latency,
        ]
    one_round = [
        ("plivo drop", Step(carrier.drop_all)),
        ("plivo reset", Step(carrier.reset_all)),
        *latency,
        ("redis drop", Step(redis.drop_all)),
        ("redis reset", Step(redis.reset_all)),
    ]
    return one_round * PROFILE.proxy_rounds


async def run_schedule(run: ChaosRun, steps: list[tuple[str, Step]]) -> None:
    """Injects each fault once dialing is back at the full rate after the previous one (a
    latency stays on ``proxy_gap_s``: a deliberate part of the fault)."""
    for name, step in steps:
        await run.keep_busy()
        at = time.time()
        await step.act()
        run.fault(Fault(name, at, recovery=step.measured))
        if step.measured:
            await run.recovered()
        else:
            await asyncio.sleep(PROFILE.proxy_gap_s)
