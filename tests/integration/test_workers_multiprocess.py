"""Several worker processes on one server (or a cluster): limits hold globally, and a worker
killed with SIGKILL mid-dial loses no call and dials no attempt twice. Everything is counted
from the simulated carrier's ledger, which every process appends to."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest
from engine_support import own_number, spec
from procs import (
    check_no_double_dial,
    check_no_redial_after_completion,
    dials,
    live_intervals,
    max_in_window,
    max_overlap,
    start_worker,
    stop_workers,
    wait_for,
)

from callqueue.carriers.simulator import read_ledger
from callqueue.engine.connection import connect
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallStatus, RetryPolicy
from callqueue.testing.cluster import EmbeddedCluster

pytestmark = pytest.mark.slow  # worker processes

# The carrier ends a call at most RING_TIMEOUT 1 + DEFAULT_MAX_DURATION 1 after it got it.
CARRIER_LIFE_S = 2.0
# A slot is held from the claim for DIAL_LEASE 1 + RING 1 + MAX_DURATION 1 + GRACE 1.
SLOT_LIFE_S = 4.0
MAX_RETRIES = 3


def worker_env(url: str, queue: str, ledger: Path, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": url,
        "QUEUE_NAME": queue,
        "SIM_LEDGER": str(ledger),
        "QUEUE_WORKERS": "5",
        "SIM_RING_SECONDS": "0-0.05",
        "SIM_TALK_SECONDS": "0.1-0.4",
        "SIM_OUTCOMES": "completed=0.7,busy=0.2,no_answer=0.1",
        "RETRY_BASE_DELAY": "0.1",
        "RETRY_MAX_DELAY": "0.3",
        "RING_TIMEOUT": "1",
        "DEFAULT_MAX_DURATION": "1",
        "CALL_GRACE_SECONDS": "1",
        "DIAL_LEASE_SECONDS": "1",
        **extra,
    }


def engine_queue(client: Any, name: str) -> CallQueue:
    """The test's own handle on the queue (enqueue and inspect), same settings as the workers."""
    options = QueueOptions(
        ring_timeout_s=1,
        default_max_duration_s=1,
        grace_s=1,
        dial_lease_s=1,
        retry=RetryPolicy(base_delay_s=0.1),
    )
    return CallQueue(client, name, options)


async def all_terminal(q: CallQueue, n: int) -> bool:
    return int(await q.client.zcard(q.keys.finished)) >= n


async def assert_every_call_terminal(q: CallQueue, ids: list[str]) -> dict[CallStatus, int]:
    counts: dict[CallStatus, int] = {}
    for call_id in ids:
        record = await q.get(call_id)
        assert record is not None, f"{call_id} lost"
        assert record.status.is_terminal, f"{call_id} still {record.status}"
        assert len(record.attempts) <= 1 + MAX_RETRIES
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


async def test_three_workers_share_the_rate_limit_and_live_call_cap(
    redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    client = connect(redis_url)
    q = engine_queue(client, unique_name)
    ids = [f"c{i}" for i in range(150)]
    await q.enqueue_many(
        [spec(i, max_retries=MAX_RETRIES, phone_number=own_number(n)) for n, i in enumerate(ids)]
    )
    env = worker_env(
        redis_url, unique_name, ledger, MAX_CONCURRENT_CALLS="8", RATE_LIMIT_PER_SECOND="20"
    )
    procs = [start_worker(tmp_path, env, f"w{i}") for i in range(3)]
    try:
        await wait_for(lambda: all_terminal(q, len(ids)), 90, "every call to finish")
    finally:
        codes = stop_workers(procs)
    assert codes == [0, 0, 0], "workers must stop cleanly on SIGTERM"
    records = read_ledger(ledger)
    dial_times = [r["t"] for r in dials(records)]
    assert {r["pid"] for r in dials(records)} == {p.pid for p in procs}, "all three worked"
    assert max_in_window(dial_times, 1.0) <= 20
    assert max_overlap(live_intervals(records, SLOT_LIFE_S)) <= 8
    check_no_double_dial(records, CARRIER_LIFE_S)
    counts = await assert_every_call_terminal(q, ids)
    assert sum(counts.values()) == len(ids)
    # Used to the full: the rate limit was the binding constraint most of the time.
    span = max(dial_times) - min(dial_times)
    assert len(dial_times) / span >= 0.7 * 20, f"{len(dial_times)} dials in {span:.1f}s"
    await client.aclose()


async def sigkill_scenario(url: str, name: str, tmp_path: Path, cluster: bool) -> None:
    ledger = tmp_path / "ledger.jsonl"
    client = connect(url, cluster=cluster)
    q = engine_queue(client, name)
    ids = [f"k{i}" for i in range(200)]
    await q.enqueue_many(
        [spec(i, max_retries=MAX_RETRIES, phone_number=own_number(n)) for n, i in enumerate(ids)]
    )
    env = worker_env(
        url,
        name,
        ledger,
        MAX_CONCURRENT_CALLS="12",
        RATE_LIMIT_PER_SECOND="40",
        REDIS_CLUSTER="1" if cluster else "0",
    )
    # The victim answers slowly, so it always has dial requests in flight.
    victim = start_worker(tmp_path, {**env, "SIM_DIAL_LATENCY": "0.3"}, "victim")
    others = [start_worker(tmp_path, env, f"w{i}") for i in range(2)]
    procs: list[subprocess.Popen[bytes]] = [victim, *others]
    try:
        last_unseen: set[str] = set()

        async def victim_busy() -> bool:
            # Mid-dial: a call under a dial lease that no carrier has seen, at two looks in a
            # row (50 ms apart). Only the victim answers slowly (0.3 s); the others record a
            # dial within milliseconds of claiming.
            nonlocal last_unseen
            records = read_ledger(ledger) if ledger.exists() else []
            mine = [r for r in records if r["pid"] == victim.pid]
            seen = {r["call"] for r in records if r["ev"] == "dial"}
            # redis-py types replies for any decode_responses; this client's are bytes.
            leased = {
                m.decode() for m in cast("list[bytes]", await client.zrange(q.keys.leases, 0, -1))
            }
            unseen = leased - seen
            still, last_unseen = unseen & last_unseen, unseen
            return len(mine) >= 10 and bool(still)

        await wait_for(victim_busy, 30, "the victim to be mid-dial")
        victim.kill()
        killed_at = time.time()
        assert victim.wait(5) == -9
        await wait_for(lambda: all_terminal(q, len(ids)), 120, "every call to finish")
    finally:
        stop_workers(procs)
    records = read_ledger(ledger)
    check_no_double_dial(records, CARRIER_LIFE_S, {victim.pid: killed_at})
    check_no_redial_after_completion(records)
    counts = await assert_every_call_terminal(q, ids)
    assert sum(counts.values()) == len(ids)
    raw_stats = cast("dict[bytes, bytes]", await client.hgetall(q.keys.stats))
    stats = {k.decode(): v.decode() for k, v in raw_stats.items()}
    # The victim's calls were recovered: lapsed dial leases and/or attempts ended as lost.
    assert int(stats.get("lapsed_leases", 0)) + int(stats.get("o:lost", 0)) >= 1, stats
    await client.aclose()


async def test_sigkilled_worker_loses_no_call_and_dials_no_attempt_twice(
    redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    await sigkill_scenario(redis_url, unique_name, tmp_path, cluster=False)


@pytest.mark.cluster
async def test_sigkill_scenario_on_a_three_master_cluster(
    redis_cluster: EmbeddedCluster, unique_name: str, tmp_path: Path
) -> None:
    await sigkill_scenario(redis_cluster.url, unique_name, tmp_path, cluster=True)
