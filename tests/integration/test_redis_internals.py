"""The private parts of redis-py that engine/lean.py and engine/packing.py stand on, checked with
the shapes they are used in. pyproject pins redis-py below its next major version; a minor
release may still move one of these, and this file is where that shows, by name, instead of as
a confusing failure deep in the engine."""

from __future__ import annotations

import asyncio
import inspect

import hiredis
import pytest
import redis.asyncio.connection as redis_connection
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import NoScriptError, ResponseError

from callqueue.engine.packing import CONNECTION_CLASSES, FastConnection, pack


def test_the_reply_error_parser_lean_hands_to_hiredis() -> None:

    assert isinstance(BaseParser.parse_error("ERR no such thing"), ResponseError)
    assert isinstance(BaseParser.parse_error("NOSCRIPT No matching script"), NoScriptError)


def test_the_pool_makes_connections_with_no_arguments_and_a_replaceable_class() -> None:
    assert list(inspect.signature(ConnectionPool.make_connection).parameters) == ["self"]
    assert "inuse_connections" in inspect.signature(ConnectionPool.disconnect).parameters
    pool = ConnectionPool.from_url("redis://127.0.0.1:9")
    pool.connection_class = FastConnection  # engine/connection.py swaps the class like this
    assert isinstance(pool.make_connection(), FastConnection)  # type: ignore[no-untyped-call]


def test_connections_pack_every_command_through_pack_command() -> None:
    """packing.py overrides pack_command: every way out of a connection must go through it."""
    assert "self.pack_command(" in inspect.getsource(AbstractConnection.send_command)
    assert "self.pack_command(" in inspect.getsource(AbstractConnection.pack_commands)
    for name in ("Connection", "SSLConnection", "UnixDomainSocketConnection"):
        base = getattr(redis_connection, name)
        assert issubclass(base, AbstractConnection)
        assert any(issubclass(cls, base) for cls in CONNECTION_CLASSES.values()), name
    conn = FastConnection()
    packed = b"".join(conn.pack_commands([("SET", "k", "v"), ("GET", "k")]))
    assert packed == pack(("SET", "k", "v")) + pack(("GET", "k"))
    assert packed == hiredis.pack_command(("SET", "k", "v")) + hiredis.pack_command(("GET", "k"))


@pytest.mark.parametrize("decode", [False, True])
async def test_a_connected_connection_has_what_lean_takes_over(
    redis_url: str, decode: bool
) -> None:
    pool = ConnectionPool.from_url(redis_url, decode_responses=decode, socket_timeout=3.0)
    conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    await conn.connect()  # type: ignore[no-untyped-call]
    try:
        writer = conn._writer
        assert isinstance(writer, asyncio.StreamWriter)
        assert isinstance(writer.transport, asyncio.Transport)
        reader = conn._reader
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(reader._buffer, bytearray)  # type: ignore[attr-defined]
        assert conn.socket_timeout == 3.0
        encoder = conn.encoder
        assert encoder.decode_responses is decode
        assert isinstance(encoder.encoding, str) and isinstance(encoder.encoding_errors, str)
    finally:
        await conn.disconnect()
        await pool.disconnect(inuse_connections=True)
