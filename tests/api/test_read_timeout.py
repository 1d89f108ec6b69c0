"""REQUEST_READ_TIMEOUT: a client that stalls while sending its headers or its body is answered
408 and its connection closed, on real sockets against the real server (uvicorn with the
protocol ``callqueue api`` uses). Each test waits for the server to close the connection (at
most ``WAIT_S``), never a fixed time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from api_support import SEED_CALL, SettingsFactory, served

from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import Runtime, open_runtime

TIMEOUT_S = 1.0
WAIT_S = TIMEOUT_S + 20  # the longest wait for the server to act; a failure, not a target


@asynccontextmanager
async def server(
    make_settings: SettingsFactory, **overrides: Any
) -> AsyncIterator[tuple[str, Runtime]]:
    settings = make_settings(request_read_timeout=TIMEOUT_S, **overrides)
    runtime = await open_runtime(settings)
    try:
        async with served(runtime) as url:
            yield url, runtime
    finally:
        await runtime.aclose()


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    data = await asyncio.wait_for(reader.read(), WAIT_S)  # read() returns at EOF
    return data, loop.time() - start


async def stall(url: str, sent: bytes) -> tuple[bytes, float]:
    """Sends ``sent`` on a new connection, then nothing: what the server answers until it
    closes the connection, and how long that took."""
    reader, writer = await connect(url)
    writer.write(sent)
    await writer.drain()
    try:
        return await until_closed(reader)
    finally:
        writer.close()


def head(path: str, length: int, method: str = "POST", extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def answer_of(data: bytes) -> tuple[int, dict[str, str], Any]:
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def assert_408(data: bytes, loc: list[str]) -> None:
    status, headers, body = answer_of(data)
    assert status == 408, data
    assert headers["connection"] == "close"
    (detail,) = body["detail"]
    assert detail["loc"] == loc
    assert detail["type"] == "read_timeout"
    assert "REQUEST_READ_TIMEOUT" in detail["msg"]


async def test_partial_headers_get_408_and_the_connection_closed(
    make_settings: SettingsFactory,
) -> None:
    async with server(make_settings) as (url, _):
        data, took = await stall(url, b"POST /api/calls/queue HTTP/1.1\r\nHost: t\r\nContent-Le")
        assert_408(data, [])
        assert took >= TIMEOUT_S * 0.9  # not before the timeout


async def test_a_connection_that_sends_nothing_is_closed(make_settings: SettingsFactory) -> None:
    async with server(make_settings) as (url, _):
        data, took = await stall(url, b"")
        assert data == b""  # no request began: nothing to answer
        assert took >= TIMEOUT_S * 0.9


async def test_stalled_headers_of_a_second_request_on_a_kept_alive_connection(
    make_settings: SettingsFactory,
) -> None:
    async with server(make_settings) as (url, _):
        data, _ = await stall(url, b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\nGET /api/queue/sta")
        first, _, rest = data.partition(b"HTTP/1.1 408")
        assert first.startswith(b"HTTP/1.1 ")  # the first request was answered
        assert_408(b"HTTP/1.1 408" + rest, [])


async def test_a_stalled_body_on_the_hot_path_gets_408_and_queues_nothing(
    make_settings: SettingsFactory,
) -> None:
    async with server(make_settings) as (url, runtime):
        data, took = await stall(url, head("/api/calls/queue", 200) + b'{"phon')  # 7 of 200 bytes
        assert_408(data, ["body"])
        assert took >= TIMEOUT_S * 0.9
        assert (await queue_snapshot(runtime.queue)).enqueued == 0


async def test_a_stalled_body_on_framework_routes_gets_408(
    make_settings: SettingsFactory,
) -> None:
    # A body model that FastAPI reads itself, a body read by the route, and a CSV import.
    async with server(make_settings) as (url, _):
        for path in ("/api/dnc", "/api/calls/bulk-queue", "/api/campaigns/c1/calls"):
            content_type = "text/csv" if path.endswith("/calls") else "application/json"
            request = head(path, 200).replace(b"application/json", content_type.encode())
            data, _ = await stall(url, request + b'{"numb')
            assert_408(data, ["body"])


async def test_hot_path_off_answers_a_stalled_body_the_same(
    make_settings: SettingsFactory,
) -> None:
    async with server(make_settings, otel_telemetry=True) as (url, _):
        data, _ = await stall(url, head("/api/calls/queue", 200) + b'{"phon')
        assert_408(data, ["body"])


async def test_a_body_the_app_did_not_read_must_keep_coming(
    make_settings: SettingsFactory,
) -> None:
    # The app answers without reading the body (a GET, a 401); the rest of the body is still
    # owed. A byte of it after the answer (which stops uvicorn's keep-alive timer), then
    # nothing: the connection is closed all the same.
    async with server(make_settings, api_keys="k1") as (url, _):
        for request, status in (
            (head("/api/health", 200, method="GET"), 200),
            (head("/api/calls/queue", 200), 401),  # no key: refused before the body is read
        ):
            reader, writer = await connect(url)
            writer.write(request + b'{"phon')
            await writer.drain()
            answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            got, headers, _ = answer_of(answer_head)
            assert got == status
            await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT_S)
            writer.write(b"e")
            await writer.drain()
            data, took = await until_closed(reader)
            writer.close()
            assert data == b""
            assert took >= TIMEOUT_S * 0.9


async def test_many_stalled_bodies_are_all_closed(make_settings: SettingsFactory) -> None:
    # The report's case at a smaller scale: connections that sent 7 of 200 declared bytes.
    async with server(make_settings) as (url, runtime):
        request = head("/api/calls/queue", 200) + b'{"phon'
        results = await asyncio.gather(*(stall(url, request) for _ in range(50)))
        for data, _ in results:
            assert_408(data, ["body"])
        async with httpx.AsyncClient(base_url=url) as client:  # the server still serves
            assert (await client.post("/api/calls/queue", json=SEED_CALL)).status_code == 201
        assert (await queue_snapshot(runtime.queue)).enqueued == 1


async def test_a_slow_body_that_keeps_coming_is_not_cut(make_settings: SettingsFactory) -> None:
    # The timeout runs between two parts of the body, not over the whole of it: six parts
    # sent a fifth of the timeout apart take longer than the timeout in all.
    body = json.dumps(SEED_CALL).encode()
    step = -(-len(body) // 6)
    parts = [body[i : i + step] for i in range(0, len(body), step)]
    async with server(make_settings) as (url, runtime):
        reader, writer = await connect(url)
        writer.write(head("/api/calls/queue", len(body), extra="Connection: close\r\n"))
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(TIMEOUT_S / 5)  # the client's pace, not a wait for a result
        data, _ = await until_closed(reader)
        writer.close()
        status, _, answer = answer_of(data)
        assert status == 201, data
        assert answer["call_id"] == SEED_CALL["custom_call_id"]
        assert (await queue_snapshot(runtime.queue)).enqueued == 1
