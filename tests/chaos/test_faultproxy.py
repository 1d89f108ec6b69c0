"""The fault proxy against a real echo server: it forwards, delays, drops (FIN) and resets
(RST) as asked, and records what it did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from callqueue.testing.faultproxy import FaultProxy, FaultProxyProcess


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def round_trip(port: int, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    data = await reader.readexactly(len(payload))
    took = time.monotonic() - started
    writer.close()
    return data, took


async def test_forwards_and_adds_latency_both_ways(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert (await round_trip(proxy.port))[0] == b"ping"
        proxy.set_latency(0.05)
        data, took = await round_trip(proxy.port, b"slow")
        assert data == b"slow" and took >= 0.1  # 50 ms there, 50 ms back
        assert [f.kind for f in proxy.faults] == ["latency"]


async def test_drop_closes_with_a_fin_and_reset_aborts_with_an_rst(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        assert proxy.drop_all() == 1
        assert await reader.read(10) == b""  # an orderly end of stream
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"y")
        assert await reader.readexactly(1) == b"y"
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        writer.close()
        assert [(f.kind, f.connections) for f in proxy.faults] == [("drop", 1), ("reset", 1)]


async def test_refusing_resets_new_connections_until_switched_off(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.refuse(True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        writer.close()
        proxy.refuse(False)
        assert (await round_trip(proxy.port))[0] == b"ping"


async def test_the_proxy_in_its_own_process_takes_the_same_commands(echo_port: int) -> None:
    async with FaultProxyProcess("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"z")
        assert await reader.readexactly(1) == b"z"
        fault = await proxy.reset_all()
        assert (fault.kind, fault.connections) == ("reset", 1)
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        writer.close()
        await proxy.set_latency(0.05)
        assert (await round_trip(proxy.port))[1] >= 0.1
        assert [f.kind for f in proxy.faults] == ["reset", "latency"]
