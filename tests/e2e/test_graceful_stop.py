"""SIGTERM to `callqueue up` under load: it exits within 10 s, and a fresh `callqueue worker`
finishes the rest. No call is lost, no attempt is dialed twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
from e2e_support import (
    FAST_CALLS,
    clean_env,
    free_port,
    read_batch,
    read_snapshot,
    running,
    wait_healthy,
    wait_until,
)

from callqueue.carriers.simulator import read_ledger

CALLS = 400


def test_sigterm_under_load_loses_nothing(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ledger = tmp_path / "ledger.jsonl"
    env = clean_env(
        REDIS_URL=redis_url,
        QUEUE_NAME=unique_name,
        HOST="127.0.0.1",
        PORT=str(port),
        RATE_LIMIT_PER_SECOND="100",
        MAX_CONCURRENT_CALLS="30",
        QUEUE_WORKERS="30",
        SIM_LEDGER=str(ledger),
        **FAST_CALLS,
    )
    calls = [
        {"phone_number": f"+9198{i:08d}", "campaign_id": "load", "max_retries": 2}
        for i in range(CALLS)
    ]
    with running(["up"], env, tmp_path, "up") as up:
        wait_healthy(base, up)
        reply = httpx.post(
            f"{base}/api/calls/bulk-queue", json={"batch_id": "load", "calls": calls}, timeout=30
        )
        assert reply.status_code == 201, reply.text
        assert reply.json()["queued"] == CALLS

        def busy() -> bool:
            status = httpx.get(f"{base}/api/queue/status", timeout=5).json()
            return bool(status["dialed_total"] >= 40 and status["live_calls"]["current"] > 0)

        wait_until(busy, 20, "calls to be live")
        code, took = up.stop()
        assert code == 0, up.output
        assert took < 10, f"took {took:.1f} s to stop"
        print(f"up stopped in {took:.2f} s")

    left = read_batch(redis_url, unique_name, "load")
    assert left is not None and not left.done  # work was left for the next worker

    with running(["worker"], env, tmp_path, "worker") as worker:

        def finished() -> bool:
            counts = read_batch(redis_url, unique_name, "load")
            return counts is not None and counts.done

        wait_until(finished, 40, "the worker to finish the batch", interval=0.2)
        code, _ = worker.stop()
        assert code == 0, worker.output

    counts = read_batch(redis_url, unique_name, "load")
    assert counts is not None
    assert counts.total == CALLS
    by_status = counts.by_status
    assert sum(by_status.values()) == CALLS
    assert by_status["completed"] + by_status["failed"] == CALLS, by_status
    snap = read_snapshot(redis_url, unique_name)
    assert snap.live_slots == 0 and snap.queued == 0 and snap.scheduled == 0

    dials = Counter((e["call"], e["attempt"]) for e in read_ledger(ledger) if e["ev"] == "dial")
    assert max(dials.values()) == 1, "an attempt was dialed twice"
    assert len({call for call, _ in dials}) == CALLS
    pids = {e["pid"] for e in read_ledger(ledger)}
    assert len(pids) == 2  # both processes dialed
