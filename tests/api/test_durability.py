"""ENQUEUE_DURABILITY through the API: an enqueue answers 201 only once its write is fsynced to
the append-only file (aof) or applied by a replica (replica), and 503 when that is not
confirmed in time, after which the same request again is safe. Real servers: a primary with a
real replica, servers with and without an append-only file."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from api_support import SettingsFactory, app_client, seed_call

from callqueue.config import ConfigError, Settings
from callqueue.embedded import EmbeddedServer
from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import open_runtime
from callqueue.testing.replicas import frozen, start_replica


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, ...]]:
    """A primary (AOF every second, as `callqueue up` runs) with one replica, in sync."""
    primary = EmbeddedServer(tmp_path_factory.mktemp("primary")).start()
    try:
        replica = start_replica(primary, tmp_path_factory.mktemp("replica"))
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()


@pytest.fixture(scope="module")
def fsync_always(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server that fsyncs its append-only file before it answers (what aof needs)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("always"), extra={"appendfsync": "always"})
    with server:
        yield server


def short_wait(primary: EmbeddedServer) -> dict[str, Any]:
    """Settings of replica mode on ``primary`` with a wait short enough to see it run out."""
    return {
        "redis_url": primary.url,
        "enqueue_durability": "replica",
        "enqueue_durability_timeout": 1.0,
    }


async def refusal(settings: Settings) -> str:
    """The configuration error start-up stops with: one line."""
    with pytest.raises(ConfigError) as refused:
        await open_runtime(settings)
    message = str(refused.value)
    assert "\n" not in message
    return message


def sync_client(server: EmbeddedServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, decode_responses=True)


def command_calls(server: EmbeddedServer, name: str) -> int:
    with sync_client(server) as c:
        stats: dict[str, Any] = c.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


def caught_up(primary: EmbeddedServer, replica: EmbeddedServer) -> bool:
    with sync_client(primary) as p, sync_client(replica) as r:
        offset = p.info("replication")["master_repl_offset"]
        return bool(r.info("replication").get("slave_repl_offset") == offset)


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def aof_bytes(server: EmbeddedServer) -> bytes:
    """Everything in the server's append-only files on disk (Valkey keeps a directory of
    base and increment files)."""
    files = sorted((server.data_dir / "appendonlydir").glob("*.aof"))
    assert files, f"no append-only file under {server.data_dir}"
    return b"".join(path.read_bytes() for path in files)


# -- replica ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hot", [True, False])
async def test_replica_mode_answers_once_the_replica_has_the_calls(
    make_settings: SettingsFactory, replicated: tuple[EmbeddedServer, ...], hot: bool
) -> None:
    primary, replica = replicated
    # A wait that cannot run out on a busy machine: this test is about what a 201 means.
    settings = {**short_wait(primary), "enqueue_durability_timeout": 5}
    waits = command_calls(primary, "wait")
    async with app_client(make_settings(**settings), hot) as (client, runtime):
        call_id = f"dur-{uuid.uuid4().hex[:8]}"
        reply = await client.post("/api/calls/queue", json=seed_call(custom_call_id=call_id))
        assert reply.status_code == 201, reply.text
        with sync_client(replica) as r:  # right after the answer: no waiting here
            assert r.hget(runtime.queue.keys.call(call_id), "st") == "queued"
        assert command_calls(primary, "wait") == waits + 1  # one wait for the one script

        calls = [{"phone_number": f"+91981234{i:04d}"} for i in range(2500)]
        bulk = await client.post("/api/calls/bulk-queue", json={"calls": calls})
        assert bulk.status_code == 201, bulk.text
        ids = bulk.json()["call_ids"]
        with sync_client(replica) as r, r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hget(runtime.queue.keys.call(i), "st")
            assert pipe.execute() == ["queued"] * 2500
        # One wait per 1,000-call script, not per call.
        assert command_calls(primary, "wait") == waits + 1 + 3


@pytest.mark.parametrize("hot", [True, False])
async def test_replica_not_confirmed_is_503_and_the_same_request_again_is_safe(
    make_settings: SettingsFactory, replicated: tuple[EmbeddedServer, ...], hot: bool
) -> None:
    primary, replica = replicated
    settings = short_wait(primary)
    async with app_client(make_settings(**settings), hot) as (client, runtime):
        call_id = f"dur-{uuid.uuid4().hex[:8]}"
        body = seed_call(custom_call_id=call_id)
        batch = {"batch_id": f"b-{call_id}", "calls": [{"phone_number": "+919812340001"}]}
        with frozen(replica):
            reply = await client.post("/api/calls/queue", json=body)
            bulk = await client.post("/api/calls/bulk-queue", json=batch)
        assert (reply.status_code, reply.headers.get("retry-after")) == (503, "1"), reply.text
        [detail] = reply.json()["detail"]
        assert detail["type"] == "not_durable"
        assert "not confirmed on a replica within 1 s" in detail["msg"]
        assert f"custom_call_id {call_id!r}" in detail["msg"]
        assert bulk.status_code == 503, bulk.text
        assert f"batch_id {batch['batch_id']!r}" in bulk.json()["detail"][0]["msg"]
        # It was queued all the same (on the primary), just not known to be on the replica.
        record = await runtime.queue.get(call_id)
        assert record is not None

        wait_until(lambda: caught_up(primary, replica), 10, "the replica to catch up")
        again = await client.post("/api/calls/queue", json=body)
        assert again.status_code == 200 and again.json()["created"] is False, again.text
        bulk_again = await client.post("/api/calls/bulk-queue", json=batch)
        assert bulk_again.status_code == 200 and bulk_again.json()["duplicates"] == 1
        snap = await queue_snapshot(runtime.queue)
        assert snap.enqueued == 2  # each call once, however many answers


async def test_csv_import_not_confirmed_says_to_post_the_file_again(
    make_settings: SettingsFactory, replicated: tuple[EmbeddedServer, ...]
) -> None:
    primary, replica = replicated
    settings = short_wait(primary)
    csv = {"content": b"phone\n+919812340002\n", "headers": {"content-type": "text/csv"}}
    async with app_client(make_settings(**settings)) as (client, runtime):
        with frozen(replica):
            reply = await client.post("/api/campaigns/spring/calls", **csv)
        assert reply.status_code == 503, reply.text
        [detail] = reply.json()["detail"]
        assert detail["type"] == "not_durable" and "post the same file again" in detail["msg"]
        wait_until(lambda: caught_up(primary, replica), 10, "the replica to catch up")
        again = await client.post("/api/campaigns/spring/calls", **csv)
        assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
        assert (await queue_snapshot(runtime.queue)).enqueued == 1


async def test_replica_mode_is_refused_without_a_replica(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    message = await refusal(make_settings(redis_url=redis_url, enqueue_durability="replica"))
    assert message.startswith("ENQUEUE_DURABILITY=replica: the server has no replica connected")


# -- aof --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hot", [True, False])
async def test_aof_mode_answers_once_the_call_is_in_the_append_only_file(
    make_settings: SettingsFactory, fsync_always: EmbeddedServer, hot: bool
) -> None:
    waits = command_calls(fsync_always, "waitaof")
    settings = {
        "redis_url": fsync_always.url,
        "enqueue_durability": "aof",
        "enqueue_durability_timeout": 5,
    }
    async with app_client(make_settings(**settings), hot) as (client, _):
        waits = command_calls(fsync_always, "waitaof")  # after the start-up check's probe
        for _ in range(3):
            call_id = f"dur-{uuid.uuid4().hex}"
            reply = await client.post("/api/calls/queue", json=seed_call(custom_call_id=call_id))
            assert reply.status_code == 201, reply.text
            assert call_id.encode() in aof_bytes(fsync_always)
        assert command_calls(fsync_always, "waitaof") == waits + 3


async def test_aof_mode_is_refused_without_an_append_only_file(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with EmbeddedServer(tmp_path, appendonly=False) as server:
        message = await refusal(make_settings(redis_url=server.url, enqueue_durability="aof"))
    assert message == (
        "ENQUEUE_DURABILITY=aof: needs the server's append-only file (appendonly yes); it is off"
    )


async def test_aof_mode_is_refused_when_the_server_fsyncs_every_second(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    message = await refusal(make_settings(redis_url=redis_url, enqueue_durability="aof"))
    assert message.startswith("ENQUEUE_DURABILITY=aof: needs appendfsync always on the server")
    assert "(it has everysec)" in message


async def test_aof_mode_on_the_embedded_server_makes_it_fsync_before_answering(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=None,
        data_dir=tmp_path / "data",
        enqueue_durability="aof",
        enqueue_durability_timeout=5,
    )
    runtime = await open_runtime(settings)
    try:
        assert runtime.server is not None
        assert await runtime.client.config_get("appendfsync") == {"appendfsync": "always"}
        async with app_client(settings) as (client, _):
            reply = await client.post("/api/calls/queue", json=seed_call())
            assert reply.status_code == 201, reply.text
        assert b"call-456" in aof_bytes(runtime.server)
    finally:
        await runtime.aclose()


REDIS_7_0 = Path("/usr/bin/redis-server")


@pytest.mark.skipif(not REDIS_7_0.exists(), reason="no system redis-server to try")
async def test_aof_mode_is_refused_by_a_server_without_waitaof(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    server = EmbeddedServer(tmp_path, binary=REDIS_7_0, extra={"appendfsync": "always"})
    with server:
        with sync_client(server) as c:
            version = c.info("server")["redis_version"]
        if tuple(int(p) for p in version.split(".")[:2]) >= (7, 2):
            pytest.skip(f"the system redis-server {version} has WAITAOF")
        message = await refusal(make_settings(redis_url=server.url, enqueue_durability="aof"))
    assert message.startswith("ENQUEUE_DURABILITY=aof: needs WAITAOF (Redis or Valkey 7.2")
    assert f"({version})" in message


@pytest.mark.skipif(not REDIS_7_0.exists(), reason="no system redis-server to try")
async def test_replica_mode_works_on_a_server_without_waitaof(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """WAIT, not WAITAOF 0 1: replica mode needs nothing Redis 7.0 lacks."""
    with EmbeddedServer(tmp_path / "primary", binary=REDIS_7_0) as primary:
        replica = start_replica(primary, tmp_path / "replica", binary=REDIS_7_0)
        try:
            settings = make_settings(
                redis_url=primary.url, enqueue_durability="replica", enqueue_durability_timeout=5
            )
            async with app_client(settings) as (client, runtime):
                reply = await client.post("/api/calls/queue", json=seed_call())
                assert reply.status_code == 201, reply.text
                with sync_client(replica) as r:
                    assert r.hget(runtime.queue.keys.call("call-456"), "st") == "queued"
            assert command_calls(primary, "wait") == 1
        finally:
            replica.stop()


# -- none ---------------------------------------------------------------------------------------


async def test_none_mode_sends_no_wait(
    make_settings: SettingsFactory, replicated: tuple[EmbeddedServer, ...]
) -> None:
    primary, _ = replicated
    before = command_calls(primary, "wait"), command_calls(primary, "waitaof")
    async with app_client(make_settings(redis_url=primary.url)) as (client, _):
        reply = await client.post("/api/calls/queue", json=seed_call())
        assert reply.status_code == 201
        calls = [{"phone_number": "+919812340003"}]
        bulk = await client.post("/api/calls/bulk-queue", json={"calls": calls})
        assert bulk.status_code == 201
    assert (command_calls(primary, "wait"), command_calls(primary, "waitaof")) == before
