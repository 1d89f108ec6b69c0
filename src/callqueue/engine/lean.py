"""A lean path for the engine's own commands on a standalone server.

redis-py's asyncio client wraps every command in several layers (pool lock, observability
hooks, event dispatch, a retry wrapper, a task per socket write for its timeout): on a small
machine they cost more than the server's work for a transition. The engine's scripts are a few
fixed commands, so they go through this path instead: a connection taken from the client's own
pool (same connection class: hiredis packing and parsing, unix/TLS, auth, timeouts), one write,
one read, the connection handed back.

What it keeps from redis-py: connecting (with the client's options), RESP parsing, error
replies raised as ``ResponseError``, a connection whose reply was not read in full (error,
timeout, cancellation) closed rather than reused. Connection errors and timeouts are retried
like the client's own retries (``RETRIES`` more tries with backoff): at least once, so what is
sent here must be safe to repeat, as the engine's scripts are. Cluster clients keep the full
client path (they route by slot).
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RETRIES = 3


class LeanPool(ConnectionPool):
    """The client's connection pool, with a lean way to run one command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backoff = ExponentialBackoff(cap=1.0, base=0.05)

    def _take(self) -> AbstractConnection:
        # Single-threaded event loop, no await between check and use: no lock needed.
        conn: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        return conn

    def _give_back(self, conn: AbstractConnection) -> None:
        self._in_use_connections.discard(conn)
        self._available_connections.append(conn)

    async def _once(self, args: tuple[Any, ...]) -> Any:
        conn = self._take()
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
            await self._write(conn, conn.pack_command(*args))
            reply = await conn.read_response()
        except BaseException:
            await conn.disconnect(nowait=True)  # a reply may be pending: never reuse it
            self._give_back(conn)
            raise
        self._give_back(conn)
        return reply

    @staticmethod
    async def _write(conn: AbstractConnection, packed: list[bytes]) -> None:
        writer = getattr(conn, "_writer", None)  # the stream redis-py itself writes to
        if writer is None:
            raise RedisConnectionError("connection closed")
        try:
            writer.writelines(packed)
            if conn.socket_timeout:
                async with asyncio.timeout(conn.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()
        except builtins.TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc

    async def execute(self, *args: Any) -> Any:
        """Runs one command; connection errors and timeouts are tried again."""
        failures = 0
        while True:
            try:
                return await self._once(args)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                failures += 1
                if failures > RETRIES:
                    raise
                await asyncio.sleep(self._backoff.compute(failures))
