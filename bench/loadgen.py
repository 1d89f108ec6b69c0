"""A minimal keep-alive HTTP/1.1 client on raw asyncio sockets, to load the API under test.

httpx spends about 1.2 ms of CPU per request on this 2-core machine, as much as the server it
measures, and both share the same cores: latency figures then say more about the client than
the server. This client spends a few tens of microseconds: it sends prebuilt requests on
persistent connections and reads answers by Content-Length (what uvicorn sends for our JSON
answers; anything else is an error here, not a guess).
"""

from __future__ import annotations

import asyncio


class HttpError(RuntimeError):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's subclass neither ABC

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or HttpError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._closed)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._answer_if_complete()

    def _answer_if_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            waiter.set_exception(HttpError(f"answer without Content-Length: {head[0]}"))
            return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        self._waiter = None
        waiter.set_result((int(head[0].split(" ", 2)[1]), body))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self._closed is not None:
            raise self._closed
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def post_request(host: str, path: str, body: bytes) -> bytes:
    """The bytes of a keep-alive JSON POST."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RawClients:
    """``count`` keep-alive connections to ``host:port``."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host, self.port, self.count = host, port, count
        self.connections: list[_Connection] = []

    async def __aenter__(self) -> RawClients:
        loop = asyncio.get_running_loop()
        for _ in range(self.count):
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
            self.connections.append(conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.connections:
            conn.close()
