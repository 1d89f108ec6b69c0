"""Redis itself dies (SIGKILL) under load and comes back on its append-only file: workers
reconnect, no call is lost and no attempt is dialed twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine_support import own_number, spec
from procs import (
    check_no_double_dial,
    check_no_redial_after_completion,
    start_worker,
    stop_workers,
    wait_for,
)
from test_workers_multiprocess import (
    CARRIER_LIFE_S,
    MAX_RETRIES,
    assert_every_call_terminal,
    engine_queue,
    worker_env,
)

from callqueue.carriers.simulator import read_ledger
from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect


async def test_workers_ride_out_a_redis_crash_and_restart(tmp_path: Path, unique_name: str) -> None:
    server = EmbeddedServer(tmp_path / "redis", appendonly=True)
    server.start()
    ledger = tmp_path / "ledger.jsonl"
    procs = []
    try:
        client = connect(server.url)
        q = engine_queue(client, unique_name)
        ids = [f"r{i}" for i in range(150)]
        await q.enqueue_many(
            [
                spec(i, max_retries=MAX_RETRIES, phone_number=own_number(n))
                for n, i in enumerate(ids)
            ]
        )
        env = worker_env(
            server.url, unique_name, ledger, MAX_CONCURRENT_CALLS="10", RATE_LIMIT_PER_SECOND="40"
        )
        procs = [start_worker(tmp_path, env, f"w{i}") for i in range(2)]

        async def busy() -> bool:
            return ledger.exists() and len(read_ledger(ledger)) >= 60

        await wait_for(busy, 30, "calls to be under way")
        server.kill()  # like a crash: no shutdown, no final fsync
        await asyncio.sleep(0.5)  # workers now fail to reach Redis, and must keep trying
        server.restart()
        await client.aclose()
        client = connect(server.url)
        q = engine_queue(client, unique_name)

        async def all_done() -> bool:
            return int(await q.client.zcard(q.keys.finished)) >= len(ids)

        await wait_for(all_done, 90, "every call to finish after the restart")
        assert all(p.poll() is None for p in procs), "workers survived the outage"
        check_no_double_dial(read_ledger(ledger), CARRIER_LIFE_S)
        check_no_redial_after_completion(read_ledger(ledger))
        counts = await assert_every_call_terminal(q, ids)
        assert sum(counts.values()) == len(ids)
        await client.aclose()
    finally:
        stop_workers(procs)
        server.stop()
