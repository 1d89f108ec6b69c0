"""A REDIS_URL the service cannot use is a one-line configuration error naming it, whatever
the command, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import clean_env, free_port

# Every command that opens the queue, with an http URL; the other kinds with one command.
CASES = [(command, "http://127.0.0.1:6379") for command in ("up", "api", "worker", "status")]
CASES += [("status", "localhost:6379"), ("status", "ftp://example.com/0")]


def run(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callqueue.cli", command], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(("command", "url"), CASES)
def test_a_url_of_another_kind_is_one_line_naming_redis_url(
    tmp_path: Path, command: str, url: str
) -> None:
    env = clean_env(REDIS_URL=url, PORT=str(free_port()))
    done = run(command, env, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("REDIS_URL:") and url in lines[0]
    assert "redis://" in lines[0]  # it says what would do


def test_an_unreachable_server_is_one_line_too(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    done = run("status", clean_env(REDIS_URL=url), tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("REDIS_URL:") and url in lines[0], output
