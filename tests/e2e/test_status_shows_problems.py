"""`callqueue status` shows what workers report stops dispatch, as /api/queue/status does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from e2e_support import clean_env

from callqueue.engine.connection import connect
from callqueue.engine.queue import CallQueue

REASON = "cannot reach the carrier's API: ConnectTimeout"


def status(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "callqueue.cli", "status", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def report(redis_url: str, queue_name: str, reason: str) -> None:
    async def go() -> None:
        client = connect(redis_url)
        try:
            await CallQueue(client, queue_name).report_problem("carrier", reason)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_status_shows_a_reported_problem(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, LOG_LEVEL="WARNING")
    assert json.loads(status(["--json"], env, tmp_path))["dispatch_blocked"] == {}
    report(redis_url, unique_name, REASON)
    assert json.loads(status(["--json"], env, tmp_path))["dispatch_blocked"] == {"carrier": REASON}
    table = status([], env, tmp_path)
    assert "dispatch blocked: carrier" in table and "ConnectTimeout" in table
