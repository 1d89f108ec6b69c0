"""The event writer never drops a carrier event: Redis down, Redis read-only (a failover), a bad
event among good ones, and a stop with events unwritten (the spool)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from engine_support import own_number, spec
from procs import wait_for

from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect
from callqueue.engine.event_writer import EventWriter, event_from_json, event_to_json
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue, EndFacts, EventCall
from callqueue.models import CallStatus, Outcome


async def queue_with_live_calls(url: str, name: str, n: int) -> tuple[Any, CallQueue]:
    client = connect(url)
    q = CallQueue(client, name, QueueOptions(rate_per_second=0, one_call_per_number=False))
    await q.enqueue_many([spec(f"c{i}", phone_number=own_number(i)) for i in range(n)])
    assert len((await q.claim(n)).calls) == n
    return client, q


def ended(q: CallQueue, i: int) -> EventCall:
    return q.event_call(f"c{i}", 1, "ended", end=EndFacts(Outcome.COMPLETED, duration_s=2.0))


async def statuses(q: CallQueue, n: int) -> list[CallStatus | None]:
    return [r.status if r else None for r in [await q.get(f"c{i}") for i in range(n)]]


async def test_events_wait_out_a_redis_crash(own_server: EmbeddedServer, unique_name: str) -> None:
    client, q = await queue_with_live_calls(own_server.url, unique_name, 20)
    writer = EventWriter(q)
    writer.start()
    try:
        own_server.kill()
        # redis-py's ConnectionError is not Python's: these used to be logged and dropped.
        futures = [writer.submit(ended(q, i)) for i in range(20)]
        await wait_for(lambda: _tried(writer), 5, "the writer to meet the dead server")
        assert not any(f.done() for f in futures)
        await asyncio.to_thread(own_server.start)
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert all(r.applied for r in results)
        assert await statuses(q, 20) == [CallStatus.COMPLETED] * 20
    finally:
        await writer.aclose(1)
        await client.aclose()


async def _tried(writer: EventWriter) -> bool:
    return writer.unwritten > 0 and writer._pending.empty()  # the batch is on its way


async def test_events_wait_out_a_read_only_server(
    own_server: EmbeddedServer, unique_name: str
) -> None:
    """A demoted master answers READONLY (a ResponseError): the batch is sent again once the
    server takes writes, as after a failover."""
    client, q = await queue_with_live_calls(own_server.url, unique_name, 5)
    admin = connect(own_server.url)
    writer = EventWriter(q)
    writer.start()
    try:
        await admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # nobody there
        futures = [writer.submit(ended(q, i)) for i in range(5)]
        await wait_for(lambda: _tried(writer), 5, "the writer to meet READONLY")
        assert not any(f.done() for f in futures)
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert all(r.applied for r in results)
        assert await statuses(q, 5) == [CallStatus.COMPLETED] * 5
    finally:
        await writer.aclose(1)
        await admin.aclose()
        await client.aclose()


async def test_a_bad_event_is_kept_and_holds_back_no_other(
    redis_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, q = await queue_with_live_calls(redis_url, unique_name, 4)
    await client.delete(q.keys.call("c2"))
    await client.set(q.keys.call("c2"), "not a hash")  # every script touching it fails
    writer = EventWriter(q, retry_failed_s=0.1)
    writer.start()
    try:
        with caplog.at_level(logging.ERROR, logger="callqueue.engine.event_writer"):
            futures = [writer.submit(ended(q, i)) for i in range(4)]
            done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        assert [isinstance(r, Exception) for r in done] == [False, False, True, False]
        for i in (0, 1, 3):
            record = await q.get(f"c{i}")
            assert record is not None and record.status == CallStatus.COMPLETED
        assert any("c2 attempt 1 not applied" in r.getMessage() for r in caplog.records)
        assert writer.unwritten == 1  # kept, tried again
        tries = len([r for r in caplog.records if "c2 attempt 1" in r.getMessage()])
        await wait_for(lambda: _logged_more(caplog, tries), 5, "the kept event to be tried again")
        await client.delete(q.keys.call("c2"))  # whatever was wrong is mended
        await wait_for(lambda: _none_left(writer), 5, "the kept event to go through")
    finally:
        await writer.aclose(1)
        await client.aclose()


async def _logged_more(caplog: pytest.LogCaptureFixture, before: int) -> bool:
    return len([r for r in caplog.records if "c2 attempt 1" in r.getMessage()]) > before


async def _none_left(writer: EventWriter) -> bool:
    return writer.unwritten == 0


async def test_unwritten_events_are_spooled_and_replayed(
    own_server: EmbeddedServer, unique_name: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool" / "events.jsonl"
    client, q = await queue_with_live_calls(own_server.url, unique_name, 6)
    writer = EventWriter(q, spool=spool)
    writer.start()
    own_server.kill()
    for i in range(6):
        writer.submit(ended(q, i))
    await writer.aclose(0.3)  # Redis is away: nothing can be written before the stop
    lines = spool.read_bytes().splitlines()
    assert sorted(event_from_json(line).call_id for line in lines) == [f"c{i}" for i in range(6)]
    await client.aclose()

    await asyncio.to_thread(own_server.start)
    client = connect(own_server.url)
    q = CallQueue(client, unique_name, q.options)
    replay = EventWriter(q, spool=spool)
    replay.start()
    try:
        assert replay.replayed == 6
        assert not spool.exists()
        await replay.flush(10)
        assert await statuses(q, 6) == [CallStatus.COMPLETED] * 6
    finally:
        await replay.aclose(1)
        await client.aclose()


def test_spooled_events_keep_every_fact() -> None:
    event = EventCall(
        "c1", 3, "ended", "tok", "cid",
        EndFacts(Outcome.BUSY, "cid", "USER_BUSY", 0.0, 0.0, None, 1_700_000_000_000), 12,
        ("cid", "req"),
    )  # fmt: skip
    assert event_from_json(event_to_json(event)) == event
