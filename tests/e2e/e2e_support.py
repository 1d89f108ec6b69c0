"""Running ``callqueue`` commands as processes, and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from callqueue.config import Settings
from callqueue.engine.connection import connect
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import BatchCounts, QueueSnapshot, batch_counts, queue_snapshot
from waiting import until as until  # the e2e tests' async wait, shared with the other suites

T = TypeVar("T")

#: Fast simulated calls: ring up to 0.1 s, talk 0.1-0.3 s; retries after 0.1-0.3 s; an attempt
#: with no word from the carrier counts as lost after 1 + 1 + 0 s.
FAST_CALLS = {
    "SIM_RING_SECONDS": "0-0.1",
    "SIM_TALK_SECONDS": "0.1-0.3",
    "RING_TIMEOUT": "1",
    "DEFAULT_MAX_DURATION": "1",
    "CALL_GRACE_SECONDS": "0",
    "RETRY_BASE_DELAY": "0.1",
    "RETRY_MAX_DELAY": "0.3",
    "LOG_LEVEL": "WARNING",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any callqueue setting, plus ``values``."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env.update(values)
    return env


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Calls ``probe`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Proc:
    """A ``callqueue`` subprocess with its output in files (no pipe to fill up)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "callqueue.cli", *args], env=env, cwd=cwd,
                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def stop(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM, then (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(f"no exit {timeout} s after SIGTERM:\n{self.output}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@contextmanager
def running(args: list[str], env: dict[str, str], cwd: Path, name: str) -> Iterator[Proc]:
    proc = Proc(args, env, cwd, name)
    try:
        yield proc
    finally:
        proc.kill()


def wait_healthy(base_url: str, proc: Proc, timeout: float = 20.0) -> None:
    def probe() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"exited with {proc.popen.returncode}:\n{proc.output}")
        return httpx.get(f"{base_url}/api/health", timeout=2).status_code == 200

    wait_until(probe, timeout, f"{base_url}/api/health")


def _read(redis_url: str, queue_name: str, reader: Callable[[CallQueue], Any]) -> Any:
    async def go() -> Any:
        client = connect(redis_url)
        try:
            return await reader(CallQueue(client, queue_name))
        finally:
            await client.aclose()

    return asyncio.run(go())


def read_batch(redis_url: str, queue_name: str, batch_id: str) -> BatchCounts | None:
    result: BatchCounts | None = _read(redis_url, queue_name, lambda q: batch_counts(q, batch_id))
    return result


def read_snapshot(redis_url: str, queue_name: str) -> QueueSnapshot:
    result: QueueSnapshot = _read(redis_url, queue_name, queue_snapshot)
    return result
