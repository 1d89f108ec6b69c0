"""`callqueue up` as a process, driven over real HTTP with the seed's example payloads until
every call is final on the simulated carrier."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from e2e_support import FAST_CALLS, clean_env, free_port, running, wait_healthy, wait_until

from callqueue.carriers.simulator import read_ledger

TERMINAL = {"completed", "failed", "cancelled"}

SEED_CALL: dict[str, Any] = {
    "phone_number": "+919123456789",
    "campaign_id": "campaign-123",
    "call_config": {
        "voice": "en-US",
        "max_duration": 1800,
        "recording_enabled": True,
        "flow_name": "wishfin-test",
        "answer_url": "https://your-domain.com/outbound-answer",
        "variables": {"name": "John Doe", "email": "john@example.com"},
    },
    "custom_call_id": "call-456",
    "scheduled_at": "2025-01-15T14:30:00Z",
    "priority": "normal",
    "max_retries": 3,
}


def seed_bulk(rows: int) -> dict[str, Any]:
    """The seed's bulk example, rows shaped like its backend-integration snippet."""
    return {
        "batch_id": "campaign-batch-123",
        "calls": [
            {
                "phone_number": f"+9198765{i:05d}",
                "campaign_id": "campaign-123",
                "call_config": {
                    "flow_name": "wishfin-test",
                    "variables": {"name": f"Customer {i}"},
                    "answer_url": "https://your-domain.com/outbound-answer",
                },
            }
            for i in range(rows)
        ],
    }


def test_seed_payloads_reach_final_states(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ledger = tmp_path / "ledger.jsonl"
    env = clean_env(
        REDIS_URL=redis_url,
        QUEUE_NAME=unique_name,
        HOST="127.0.0.1",
        PORT=str(port),
        RATE_LIMIT_PER_SECOND="50",
        MAX_CONCURRENT_CALLS="20",
        SIM_LEDGER=str(ledger),
        **FAST_CALLS,
    )
    with running(["up"], env, tmp_path, "up") as up:
        wait_healthy(base, up)
        with httpx.Client(base_url=base, timeout=10) as http:
            reply = http.post("/api/calls/queue", json=SEED_CALL)
            assert reply.status_code == 201, reply.text
            assert reply.json()["status"] in ("queued", "dialing", "ringing", "in_progress")

            due = datetime.now(UTC) + timedelta(seconds=2)
            later = {**SEED_CALL, "custom_call_id": "call-457", "scheduled_at": due.isoformat()}
            reply = http.post("/api/calls/queue", json=later)
            assert reply.status_code == 201, reply.text
            assert reply.json()["status"] == "scheduled"

            bulk = seed_bulk(8)
            reply = http.post("/api/calls/bulk-queue", json=bulk)
            assert reply.status_code == 201, reply.text
            assert reply.json()["queued"] == 8
            assert http.post("/api/calls/bulk-queue", json=bulk).json()["duplicates"] == 8

            def batch_done() -> dict[str, Any] | None:
                body: dict[str, Any] = http.get("/api/batches/campaign-batch-123").json()
                return body if body["done"] else None

            def final(call_id: str) -> dict[str, Any] | None:
                body: dict[str, Any] = http.get(f"/api/calls/{call_id}/status").json()
                return body if body["status"] in TERMINAL else None

            batch = wait_until(batch_done, 30, "the batch to finish")
            assert batch["total"] == 8
            assert sum(batch["counts"][s] for s in TERMINAL) == 8
            first = wait_until(lambda: final("call-456"), 30, "call-456 to finish")
            second = wait_until(lambda: final("call-457"), 30, "call-457 to finish")

            assert first["attempts"] and first["attempts"][0]["carrier_call_id"]
            assert first["call_config"]["variables"]["email"] == "john@example.com"
            # The scheduled call was not dialed before its time.
            started = datetime.fromisoformat(second["attempts"][0]["started_at"])
            assert started >= due - timedelta(milliseconds=5)
            for call in (first, second):
                assert len(call["attempts"]) <= 1 + SEED_CALL["max_retries"]
                assert all(a["outcome"] for a in call["attempts"])

            status = http.get("/api/queue/status").json()
            assert status["enqueued_total"] == 10
            assert sum(status["counts"][s] for s in TERMINAL) == 10
            assert status["pending"] == 0 and status["live_calls"]["current"] == 0
            assert status["workers"]["alive"] == 1
            assert status["dialed_total"] >= 10
            assert http.get("/api/calls/active").json()["count"] == 0

        code, took = up.stop()
        assert code == 0, up.output
        assert took < 10

    # The carrier saw each attempt exactly once.
    dials = Counter((e["call"], e["attempt"]) for e in read_ledger(ledger) if e["ev"] == "dial")
    assert dials and max(dials.values()) == 1
