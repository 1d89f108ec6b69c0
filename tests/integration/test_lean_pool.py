"""The engine's lean command path: replies, errors, lost connections and cancellation."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from callqueue.engine.connection import connect
from callqueue.engine.lean import LeanPool


async def test_replies_errors_and_a_killed_connection(redis_url: str, unique_name: str) -> None:
    client = connect(redis_url)
    try:
        pool = client.connection_pool
        assert isinstance(pool, LeanPool)
        key = f"{unique_name}:k"
        assert await pool.execute("SET", key, "v") == b"OK"
        assert await pool.execute("GET", key) == b"v"
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pool.execute("LPUSH", key, "x")
        assert await pool.execute("GET", key) == b"v"  # the connection is still in step
        # The server drops every connection of this client: the next command reconnects.
        name = f"{unique_name}-lean"
        await pool.execute("CLIENT", "SETNAME", name)
        await client.client_kill_filter(_type="normal", skipme=True)
        assert await pool.execute("GET", key) == b"v"
    finally:
        await client.aclose()


async def test_a_cancelled_command_never_leaves_its_reply_behind(
    redis_url: str, unique_name: str
) -> None:
    client = connect(redis_url)
    try:
        pool = client.connection_pool
        assert isinstance(pool, LeanPool)
        key = f"{unique_name}:list"
        # BLPOP blocks on the server; cancelling it leaves a reply to come on that connection.
        blocked = asyncio.create_task(pool.execute("BLPOP", key, 2))
        await asyncio.sleep(0.1)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        await client.rpush(key, "late")  # would answer the cancelled BLPOP, were it kept
        await pool.execute("SET", f"{unique_name}:k", "v")
        for _ in range(5):  # every idle connection answers its own command
            assert await pool.execute("GET", f"{unique_name}:k") == b"v"
        assert await client.lrange(key, 0, -1) == [b"late"]
    finally:
        await client.aclose()
