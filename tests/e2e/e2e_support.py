"""Running ``callqueue`` commands as processes, and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

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


# ------------------------------------------------------------------- captured carrier callbacks


@dataclass(frozen=True)
class Captured:
    """One callback a carrier sent, as it arrived: replayed to the app, whole or re-shaped,
    with its own signature headers."""

    path: str  # path and query, as called
    headers: dict[str, str]
    form: dict[str, str]

    @property
    def call_id(self) -> str:
        return parse_qs(urlsplit(self.path).query)["call_id"][0]


class CallbackCatcher:
    """Stands where PUBLIC_URL points, in place of a proxy in front of the app: keeps every
    carrier callback and answers 200, so nothing reaches the app until a test replays it."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []

    def app(self) -> Starlette:
        async def keep(request: Request) -> Response:
            form = await request.form()
            self.requests.append(
                Captured(
                    f"{request.url.path}?{request.url.query}",
                    dict(request.headers),
                    {name: str(value) for name, value in form.multi_items()},
                )
            )
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/{path:path}", keep, methods=["POST"])])

    def find(self, call_id: str, path_part: str, **fields: str) -> Captured | None:
        """The first callback about ``call_id`` to a path holding ``path_part`` whose form
        has ``fields``."""
        for seen in self.requests:
            wanted = all(seen.form.get(k) == v for k, v in fields.items())
            if wanted and seen.call_id == call_id and path_part in seen.path:
                return seen
        return None


def fold(form: Mapping[str, str], name: str) -> dict[str, str]:
    """``form`` with the field ``name`` run into the value of the field sorted before it.
    Plivo and Twilio sign the fields sorted by name as ``name`` + ``value`` with no separator,
    so the signed text, and the captured signature, stay the same."""
    names = sorted(form)
    before = names[names.index(name) - 1]
    reshaped = {k: v for k, v in form.items() if k != name}
    reshaped[before] = form[before] + name + form[name]
    return reshaped


def folds_touching(form: Mapping[str, str], fields: tuple[str, ...]) -> list[str]:
    """The fields of ``form`` whose folding changes what the engine reads: one of ``fields``
    folded away, or a field folded into one of them."""
    names = sorted(form)
    return [n for i, n in enumerate(names) if i and (n in fields or names[i - 1] in fields)]


#: The signed text of a captured callback sent with ``form`` (the carrier's scheme).
SignedText = Callable[[Captured, Mapping[str, str]], str]


class Replays:
    """Sends captured callbacks to the app with their own signature headers (those whose
    name starts with ``signature``), genuine or re-shaped."""

    def __init__(self, http: httpx.AsyncClient, signature: str, signed_text: SignedText) -> None:
        self.http, self.signature, self.signed_text = http, signature, signed_text

    async def send(self, seen: Captured, form: Mapping[str, str]) -> httpx.Response:
        headers = {k: v for k, v in seen.headers.items() if k.startswith(self.signature)}
        return await self.http.post(seen.path, data=dict(form), headers=headers)

    async def refuse_every_fold(self, captured: list[Captured], fields: tuple[str, ...]) -> int:
        """Sends each fold of each callback that changes what the engine reads (``fields``),
        checks it kept the signature and got 400 naming a body field; how many were sent."""
        tried = 0
        for seen in captured:
            for name in folds_touching(seen.form, fields):
                reshaped = fold(seen.form, name)
                # The captured signature still holds: only the field checks can refuse it.
                assert self.signed_text(seen, reshaped) == self.signed_text(seen, seen.form)
                reply = await self.send(seen, reshaped)
                assert reply.status_code == 400, (seen.path, name, reply.text)
                assert reply.json()["detail"][0]["loc"][0] == "body"
                tried += 1
        return tried

    async def accept_all(self, captured: list[Captured]) -> None:
        for seen in captured:
            reply = await self.send(seen, seen.form)
            assert reply.status_code == 200, (seen.path, reply.text)


async def queue_person_and_machine(http: httpx.AsyncClient, person: str, machine: str) -> None:
    """Queues call ``person`` to a number a person answers and ``machine`` (machine detection
    on) to one a machine answers; no retries."""
    for call_id, phone in (("person", person), ("machine", machine)):
        config = {"machine_detection": "true"} if call_id == "machine" else {}
        reply = await http.post(
            "/api/calls/queue",
            json={"phone_number": phone, "custom_call_id": call_id, "max_retries": 0,
                  "call_config": config},
        )  # fmt: skip
        assert reply.status_code == 201, reply.text


async def call_views(http: httpx.AsyncClient) -> dict[str, Any]:
    """``/api/calls/{id}/status`` of the person's and the machine's calls."""
    views = {}
    for call_id in ("person", "machine"):
        reply = await http.get(f"/api/calls/{call_id}/status")
        assert reply.status_code == 200, reply.text
        views[call_id] = reply.json()
    return views


def assert_person_and_machine_settled(views: dict[str, Any], carrier_call_id: str) -> None:
    person, machine = views["person"], views["machine"]
    assert person["status"] == "completed", person
    assert [a["outcome"] for a in person["attempts"]] == ["completed"]
    assert person["attempts"][0]["carrier_call_id"] == carrier_call_id
    assert [a["outcome"] for a in machine["attempts"]] == ["machine"], machine
