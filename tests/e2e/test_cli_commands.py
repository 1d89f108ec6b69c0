"""The other commands: `up` on the embedded server, `api`, `status`, `demo`, and start-up
errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from e2e_support import FAST_CALLS, clean_env, free_port, running, wait_healthy, wait_until


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "callqueue.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_up_on_embedded_server_says_so(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(DATA_DIR=str(tmp_path / "data"), HOST="0.0.0.0", PORT=str(port), **FAST_CALLS)
    with running(["up"], env, tmp_path, "up") as up:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, up)
        health = httpx.get(f"{base}/api/health").json()
        assert health["redis_embedded"] is True and health["carrier"] == "simulator"
        assert (tmp_path / "data" / "server.json").exists()
        reply = httpx.post(f"{base}/api/calls/queue", json={"phone_number": "+919123456789"})
        assert reply.status_code == 201
        code, took = up.stop()
        assert code == 0 and took < 10, up.output
    output = up.output
    assert "EMBEDDED server" in output
    assert "SIMULATED" in output
    assert "WARNING: HOST=0.0.0.0" in output and "API_KEYS" in output
    assert not (tmp_path / "data" / "server.json").exists()  # its embedded server stopped


def test_api_only_and_status(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        REDIS_URL=redis_url, QUEUE_NAME=unique_name, PORT=str(port), API_KEYS="k1", **FAST_CALLS
    )
    with running(["api"], env, tmp_path, "api") as api:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, api)
        calls = [{"phone_number": "+919123456789", "priority": p} for p in ("high", "low", "low")]
        reply = httpx.post(
            f"{base}/api/calls/bulk-queue",
            json={"calls": calls},
            headers={"Authorization": "Bearer k1"},
        )
        assert reply.status_code == 201, reply.text
        assert httpx.get(f"{base}/api/queue/status").status_code == 401
        status = httpx.get(f"{base}/api/queue/status", headers={"X-API-Key": "k1"}).json()
        assert status["workers"]["alive"] == 0  # the API does not dial
        code, _ = api.stop()
        assert code == 0, api.output
    assert "callqueue api" in api.output and "Carrier" not in api.output

    table = run_cli(["status"], env, tmp_path)
    assert "calls queued" in table and "queued high" in table and "live calls / limit" in table
    data = json.loads(run_cli(["status", "--json"], env, tmp_path))
    assert data["counts"]["queued"] == 3
    assert data["queued_by_priority"] == {"urgent": 0, "high": 1, "normal": 0, "low": 2}


def test_busy_port_is_a_clear_error(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, PORT=str(port))
        done = subprocess.run(
            [sys.executable, "-m", "callqueue.cli", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert "cannot listen" in done.stderr and str(port) in done.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = clean_env(MAX_CONCURRENT_CALLS="lots")
    done = subprocess.run(
        [sys.executable, "-m", "callqueue.cli", "up"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "MAX_CONCURRENT_CALLS" in done.stderr


def test_demo(tmp_path: Path) -> None:
    args = ["demo", "--calls", "30", "--rate", "60", "--concurrency", "15"]
    output = run_cli([*args, "--ring", "0-0.1", "--talk", "0.1-0.3"], clean_env(), tmp_path)
    assert "demo summary" in output
    assert "calls completed / failed" in output
    assert "peak live calls / limit" in output and "/ 15" in output
    assert "dial rate: peak / limit" in output and "/ 60" in output


def test_wait_until_reports_what_it_waited_for() -> None:
    try:
        wait_until(lambda: None, 0.1, "nothing")
    except AssertionError as exc:
        assert "nothing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("wait_until did not time out")
