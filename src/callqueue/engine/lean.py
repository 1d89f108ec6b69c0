"""A lean, multiplexed path for the engine's own commands on a standalone server.

redis-py's asyncio client wraps every command in several layers (pool lock, observability
hooks, event dispatch, a retry wrapper, a stream reader and a timeout context per reply, one
connection per command in flight): on a small machine they cost more than the server's work
for a transition. The engine's scripts are a few fixed, non-blocking commands, so they go
through this path instead: **one connection per pool, shared by every caller**. Each command is
written as soon as it is made (concurrent callers pipeline on the wire, which the server reads
and answers in one go) and each reply, parsed by hiredis as it arrives, wakes the caller waiting
for it, in order. The connection is made by redis-py (same connection class: unix/TLS, auth,
database, client name, timeouts), then its transport is handed to the protocol here.

What it keeps from redis-py: connecting, RESP parsing (hiredis), error replies raised as
redis-py's exception classes. A reply that does not come within the socket timeout, or a lost
connection, fails every command waiting on that connection, and the next command makes a new
one. Connection errors and timeouts are retried like the client's own retries (``RETRIES`` more
tries with backoff): at least once, so what is sent here must be safe to repeat, as the engine's
scripts are. A cancelled caller leaves its command running on the server: its reply is read and
dropped, and nobody else's is out of step.

Only commands that answer at once and leave no state on the connection belong here: no
blocking commands (BLPOP, XREAD BLOCK: they would hold up every caller), no MULTI/WATCH/SELECT/
SUBSCRIBE. Cluster clients keep the full client path (they route by slot).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import time
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

from callqueue.engine.packing import pack

RETRIES = 3


class _Waiting:
    __slots__ = ("future", "sent")

    def __init__(self, future: asyncio.Future[Any], sent: float) -> None:
        self.future = future
        self.sent = sent


class MuxProtocol(asyncio.Protocol):
    """One server connection: commands written in order, replies handed out in order."""

    def __init__(
        self,
        transport: asyncio.Transport,
        reader: hiredis.Reader,
        timeout: float | None,
        owner: AbstractConnection,
    ) -> None:
        self.transport = transport
        self.reader = reader
        self.timeout = timeout
        self.waiting: collections.deque[_Waiting] = collections.deque()
        self.lost: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        # redis-py's connection object still owns the transport (dropping it would close the
        # transport): it lives as long as this protocol.
        self.owner = owner

    # -- sending ----------------------------------------------------------------------------
    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise RedisConnectionError(f"connection lost: {self.lost}")
        future: asyncio.Future[Any] = self._loop.create_future()
        self.waiting.append(_Waiting(future, time.monotonic()))
        self.transport.write(packed)
        if self._timer is None and self.timeout is not None:
            self._timer = self._loop.call_later(self.timeout, self._check_overdue)
        return future

    async def drained(self) -> None:
        """Returns once the transport's buffer is below its high-water mark."""
        while self._paused and self.lost is None:
            if self._drained is None or self._drained.done():
                self._drained = self._loop.create_future()
            await self._drained

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- receiving --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self.abort(RedisConnectionError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.abort(RedisConnectionError("a reply came that no command asked for"))
                return
            future = waiting.popleft().future
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(RedisConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def eof_received(self) -> bool:
        return False  # close the transport

    # -- failing ----------------------------------------------------------------------------
    def _check_overdue(self) -> None:
        self._timer = None
        if not self.waiting or self.lost is not None or self.timeout is None:
            return
        overdue_at = self.waiting[0].sent + self.timeout
        now = time.monotonic()
        if now >= overdue_at:
            self.abort(RedisTimeoutError(f"no reply within {self.timeout} s"))
        else:
            self._timer = self._loop.call_later(overdue_at - now, self._check_overdue)

    def close(self) -> None:
        """Fails what still waits and closes the connection (the client is closing)."""
        self._fail(RedisConnectionError("the client was closed"))
        self.transport.close()

    def abort(self, exc: BaseException) -> None:
        self._fail(exc)
        self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(exc)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class LeanPool(ConnectionPool):
    """The client's connection pool, with a lean, shared connection for one-shot commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backoff = ExponentialBackoff(cap=1.0, base=0.05)
        self._mux: MuxProtocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _open(self) -> MuxProtocol:
        """The shared connection, made when there is none (one maker at a time)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            mux = self._mux
            if mux is not None and mux.lost is None:
                return mux
            if mux is not None:
                await _release(mux)
            conn: AbstractConnection = self.make_connection()  # type: ignore[no-untyped-call]
            await conn.connect()  # type: ignore[no-untyped-call]
            writer = getattr(conn, "_writer", None)
            if writer is None:
                raise RedisConnectionError("connection closed while connecting")
            transport = writer.transport
            encoder = conn.encoder
            kwargs: dict[str, Any] = {
                "protocolError": InvalidResponse,
                "replyError": BaseParser.parse_error,
            }
            if encoder.decode_responses:
                kwargs["encoding"] = encoder.encoding
                kwargs["errors"] = encoder.encoding_errors
            mux = MuxProtocol(transport, hiredis.Reader(**kwargs), conn.socket_timeout, conn)
            stream = getattr(conn, "_reader", None)
            leftover = bool(stream is not None and getattr(stream, "_buffer", b""))
            transport.set_protocol(mux)
            if leftover:  # nothing was asked: anything here is out of step
                mux.abort(RedisConnectionError("unexpected data after the handshake"))
                await _release(mux)
                raise RedisConnectionError("unexpected data after the handshake")
            self._mux = mux
            return mux

    async def _once(self, args: tuple[Any, ...]) -> Any:
        mux = self._mux
        if mux is None or mux.lost is not None:
            mux = await self._open()
        try:
            future = mux.send(pack(args))
        except OSError as exc:
            mux.abort(RedisConnectionError(f"Error while writing to socket: {exc}"))
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        if mux.paused:
            await mux.drained()
        return await future

    async def execute(self, *args: Any) -> Any:
        """Runs one command; connection errors and timeouts are tried again."""
        failures = 0
        while True:
            try:
                return await self._once(args)
            except (RedisConnectionError, RedisTimeoutError, OSError, builtins.TimeoutError):
                failures += 1
                if failures > RETRIES:
                    raise
                await asyncio.sleep(self._backoff.compute(failures))

    async def disconnect(self, inuse_connections: bool = True) -> None:
        mux, self._mux = self._mux, None
        if mux is not None:
            if mux.lost is None:
                mux.close()
            await _release(mux)
        await super().disconnect(inuse_connections)


async def _release(mux: MuxProtocol) -> None:
    """Tells redis-py's connection object that its transport is closed. Left to the garbage
    collector, it would warn of an unclosed connection."""
    await mux.owner.disconnect(nowait=True)
