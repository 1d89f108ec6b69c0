"""The engine's lean, multiplexed command path: replies, errors, order, lost connections,
cancellation and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callqueue.engine.connection import connect
from callqueue.engine.lean import LeanPool


async def test_replies_errors_and_a_killed_connection(redis_url: str, unique_name: str) -> None:
    client = connect(redis_url)
    try:
        assert isinstance(client, Redis)  # a single server's URL
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


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[LeanPool]:
    client = connect(redis_url)
    try:
        assert isinstance(client, Redis)  # a single server's URL
        lean = client.connection_pool
        assert isinstance(lean, LeanPool)
        yield lean
    finally:
        await client.aclose()


# WAIT for a replica that does not exist: the server answers this connection after the
# timeout (ms) and serves everyone else meanwhile: a slow reply, without a busy server.
def slow_reply(ms: int) -> tuple[object, ...]:
    return ("WAIT", 1, ms)


async def test_concurrent_commands_share_one_connection_in_order(
    pool: LeanPool, unique_name: str
) -> None:
    key = f"{unique_name}:n"
    replies = await asyncio.gather(*(pool.execute("INCR", key) for _ in range(300)))
    assert sorted(replies) == list(range(1, 301))  # each caller got its own reply
    assert replies == list(range(1, 301))  # in the order they were sent
    ids = set(await asyncio.gather(*(pool.execute("CLIENT", "ID") for _ in range(50))))
    assert len(ids) == 1  # one connection carried them all


async def test_a_cancelled_command_leaves_nobody_out_of_step(
    pool: LeanPool, unique_name: str
) -> None:
    await pool.execute("SET", f"{unique_name}:k", "v")
    slow = asyncio.create_task(pool.execute(*slow_reply(300)))
    behind = asyncio.create_task(pool.execute("GET", f"{unique_name}:k"))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await behind == b"v"  # the cancelled command's reply was read and dropped
    for _ in range(5):
        assert await pool.execute("GET", f"{unique_name}:k") == b"v"


async def test_a_reply_overdue_fails_its_connection_and_the_next_command_reconnects(
    redis_url: str, unique_name: str
) -> None:
    client = connect(redis_url, socket_timeout=0.2)
    try:
        assert isinstance(client, Redis)  # a single server's URL
        pool = client.connection_pool
        assert isinstance(pool, LeanPool)
        first_id = await pool.execute("CLIENT", "ID")
        with pytest.raises(RedisTimeoutError):
            await pool._once(slow_reply(600))  # one try, without the retries
        await pool.execute("SET", f"{unique_name}:k", "v")
        assert await pool.execute("GET", f"{unique_name}:k") == b"v"
        assert await pool.execute("CLIENT", "ID") != first_id
    finally:
        await client.aclose()
