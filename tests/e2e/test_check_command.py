"""`callqueue check` as a process: the simulator on the session server, Plivo (the local fake)
with right and wrong credentials, an agent server up and down, PUBLIC_URL reachable (a real
`callqueue api` process) and not, an unreachable Redis, a carrier without credentials.

With the simulator the agent and PUBLIC_URL checks are informational: shown, red when they
fail, but the command still exits 0. With a real carrier every check is required."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import clean_env, free_port, running, wait_healthy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callqueue.testing import FakePlivo, serve_asgi

AUTH_ID, TOKEN, NUMBER = "MACHECKACCOUNT000001", "check-token", "+14155550100"
CHECKS = ["redis", "library", "carrier", "agent", "public_url"]


def agent_app() -> Starlette:
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/health", health)])


def run_check(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "callqueue.cli", "check", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


async def check_async(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """The command, without blocking this loop (which serves the fakes it talks to)."""
    return await asyncio.to_thread(run_check, env, cwd, *args)


def lines(output: str) -> dict[str, str]:
    """Check name -> its printed line."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("✓", "✗") and parts[1] in CHECKS:
            found[parts[1]] = line
    assert list(found) == CHECKS, output
    return found


def ok(line: str) -> bool:
    return line.startswith("✓")


@pytest.fixture(scope="module")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `callqueue api` process (what PUBLIC_URL points at) on the session server."""
    cwd = tmp_path_factory.mktemp("check-api")
    queue, port = "chk" + secrets.token_hex(4), free_port()
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=queue, PORT=str(port), LOG_LEVEL="WARNING")
    with running(["api"], env, cwd, "api") as api:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, api)
        yield {"QUEUE_NAME": queue, "PUBLIC_URL": base}


def plivo_env(
    redis_url: str, service: dict[str, str], plivo: FakePlivo, agent: str, **extra: str
) -> dict[str, str]:
    return clean_env(
        **{
            "REDIS_URL": redis_url,
            "CARRIER": "plivo",
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": TOKEN,
            "PLIVO_NUMBER": NUMBER,
            "PLIVO_API_URL": plivo.url,
            "AGENT_SERVER_URL": agent,
            "LOG_LEVEL": "WARNING",
            **service,
            **extra,
        }
    )


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_simulator_passes_with_the_agent_informational(
    redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    env = clean_env(
        REDIS_URL=redis_url, QUEUE_NAME=unique_name, AGENT_SERVER_URL=down_url(), LOG_LEVEL="INFO"
    )
    code, output = run_check(env, tmp_path)
    assert code == 0, output
    found = lines(output)
    assert all(ok(found[n]) for n in ("redis", "library", "carrier", "public_url")), output
    assert "simulated carrier, no credentials needed" in found["carrier"]
    assert redis_url in found["redis"] and "valkey" in found["redis"]
    assert not ok(found["agent"]) and "not required with the simulated carrier" in found["agent"]
    assert "all required checks passed" in output

    code, output = run_check(env, tmp_path, "--json")
    assert code == 0
    report = json.loads(output)  # nothing but the JSON on stdout, even at LOG_LEVEL=INFO
    assert report["ok"] is True
    by_name: dict[str, dict[str, Any]] = {c["name"]: c for c in report["checks"]}
    assert list(by_name) == CHECKS
    assert by_name["agent"] == {**by_name["agent"], "ok": False, "required": False}
    assert by_name["library"]["ok"] and by_name["library"]["detail"].startswith("function library")


async def test_plivo_right_credentials_agent_up_and_public_url_pass(
    redis_url: str, service: dict[str, str], tmp_path: Path
) -> None:
    async with (
        FakePlivo(AUTH_ID, TOKEN) as plivo,
        serve_asgi(agent_app(), port=free_port()) as agent,
    ):
        code, output = await check_async(plivo_env(redis_url, service, plivo, agent), tmp_path)
        assert code == 0, output
        found = lines(output)
        assert all(ok(line) for line in found.values()), output
        assert "credentials accepted" in found["carrier"] and plivo.url in found["carrier"]
        assert f"{agent}/health: 200" in found["agent"]
        assert "callqueue reachable (service ok)" in found["public_url"]
        # A loopback PUBLIC_URL passes from here, with a word that Plivo cannot reach it.
        assert "cannot be reached by plivo" in found["public_url"]
        lookups = [r for r in plivo.api_requests if r.method == "GET"]
        assert [r.status for r in lookups] == [200]


async def test_plivo_wrong_credentials_fail_with_the_reason(
    redis_url: str, service: dict[str, str], tmp_path: Path
) -> None:
    async with (
        FakePlivo(AUTH_ID, "the-real-token") as plivo,
        serve_asgi(agent_app(), port=free_port()) as agent,
    ):
        env = plivo_env(redis_url, service, plivo, agent)
        code, output = await check_async(env, tmp_path)
        assert code == 1, output
        found = lines(output)
        assert not ok(found["carrier"])
        assert "401" in found["carrier"] and "Authentication credentials invalid" in output
        assert all(ok(found[n]) for n in ("redis", "library", "agent", "public_url")), output
        assert "1 required check(s) failed: carrier" in output

        code, output = await check_async(env, tmp_path, "--json")
        assert code == 1
        report = json.loads(output)
        assert report["ok"] is False
        assert [c["name"] for c in report["checks"] if not c["ok"]] == ["carrier"]


async def test_agent_down_and_public_url_unreachable_fail_with_a_real_carrier(
    redis_url: str, service: dict[str, str], tmp_path: Path
) -> None:
    async with FakePlivo(AUTH_ID, TOKEN) as plivo:
        agent, public = down_url(), down_url()
        env = plivo_env(redis_url, service, plivo, agent, PUBLIC_URL=public)
        simulator = clean_env(
            REDIS_URL=redis_url,
            AGENT_SERVER_URL=agent,
            PUBLIC_URL=public,
            QUEUE_NAME=service["QUEUE_NAME"],
        )
        (code, output), (sim_code, sim_output) = await asyncio.gather(
            check_async(env, tmp_path), check_async(simulator, tmp_path)
        )
    assert code == 1, output
    found = lines(output)
    assert ok(found["carrier"]) and ok(found["redis"]), output
    assert not ok(found["agent"]) and f"GET {agent}/health: unreachable" in found["agent"]
    assert not ok(found["public_url"])
    assert f"GET {public}/api/health: unreachable from here" in found["public_url"]
    assert "2 required check(s) failed: agent, public_url" in output
    # The same with the simulator: shown in red, not required.
    assert sim_code == 0, sim_output
    sim_found = lines(sim_output)
    assert not ok(sim_found["public_url"]) and not ok(sim_found["agent"])
    assert "not required with the simulated carrier" in sim_found["public_url"]


async def test_public_url_of_another_queue_and_a_missing_one(
    redis_url: str, service: dict[str, str], tmp_path: Path
) -> None:
    async with (
        FakePlivo(AUTH_ID, TOKEN) as plivo,
        serve_asgi(agent_app(), port=free_port()) as agent,
    ):
        other = plivo_env(redis_url, service, plivo, agent, QUEUE_NAME="some-other-queue")
        missing = plivo_env(redis_url, service, plivo, agent)
        del missing["PUBLIC_URL"]
        (code, output), (missing_code, missing_output) = await asyncio.gather(
            check_async(other, tmp_path), check_async(missing, tmp_path)
        )
    assert code == 1
    assert f"queue {service['QUEUE_NAME']!r}, not 'some-other-queue'" in lines(output)["public_url"]
    assert missing_code == 1
    found = lines(missing_output)
    assert "PUBLIC_URL is not set" in found["public_url"]
    assert ok(found["carrier"]), missing_output  # credentials are checked without PUBLIC_URL


def test_unreachable_redis_and_a_carrier_without_settings(tmp_path: Path) -> None:
    env = clean_env(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}", CARRIER="twilio", AGENT_SERVER_URL=down_url()
    )
    code, output = run_check(env, tmp_path)
    assert code == 1
    found = lines(output)
    assert not ok(found["redis"]) and "Connection refused" in found["redis"]
    assert found["library"].endswith("not tried: no Redis")
    assert not ok(found["carrier"]) and "twilio" in found["carrier"]
