"""ENQUEUE_DURABILITY=replica over real HTTP: a `callqueue api` process answers 201 once a real
replica has the call, and refuses to start, in one line, when the server has no replica."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import redis
from e2e_support import FAST_CALLS, clean_env, free_port, running, wait_healthy

from callqueue.embedded import EmbeddedServer
from callqueue.engine.keys import QueueKeys
from callqueue.testing.replicas import replica_of


def test_api_answers_201_once_the_replica_has_the_call(tmp_path: Path, unique_name: str) -> None:
    with EmbeddedServer(tmp_path / "primary") as primary, replica_of(primary) as replica:
        port = free_port()
        env = clean_env(REDIS_URL=primary.url, QUEUE_NAME=unique_name, PORT=str(port),
                        ENQUEUE_DURABILITY="replica", ENQUEUE_DURABILITY_TIMEOUT="5",
                        **FAST_CALLS)  # fmt: skip
        with running(["api"], env, tmp_path, "api") as api:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, api)
            keys = QueueKeys(unique_name)
            with redis.Redis(host=replica.host, port=replica.port) as on_replica:
                for _ in range(5):
                    call_id = f"http-{uuid.uuid4().hex[:10]}"
                    body = {"phone_number": "+919123456789", "custom_call_id": call_id}
                    reply = httpx.post(f"{base}/api/calls/queue", json=body, timeout=10)
                    assert reply.status_code == 201, reply.text
                    assert on_replica.hget(keys.call(call_id), "st") == b"queued"
            code, _ = api.stop()
            assert code == 0, api.output


def test_api_refuses_to_start_without_a_replica(redis_url: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, PORT=str(free_port()), ENQUEUE_DURABILITY="replica")
    done = subprocess.run(
        [sys.executable, "-m", "callqueue.cli", "api"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("ENQUEUE_DURABILITY=replica: the server has no replica connected")
