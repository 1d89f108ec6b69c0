"""The dispatcher under faults it must see and say: a worker cut off from Redis ends the calls
of its own process before anyone may take them over (the fence), and a carrier that cannot be
reached stops dispatch with a reason until it answers again."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from engine_support import own_number, spec
from procs import wait_for

from callqueue.carriers.plivo import PlivoCarrier, PlivoConfig
from callqueue.carriers.simulator import SimProfile, SimulatedCarrier, read_ledger
from callqueue.dispatcher import CARRIER_FAULTS_TO_BLOCK, Dispatcher
from callqueue.embedded import EmbeddedServer
from callqueue.engine.connection import connect
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.options import QueueOptions
from callqueue.engine.queue import CallQueue
from callqueue.models import CallStatus, Outcome, RetryPolicy
from callqueue.testing import FakePlivo

SLOW_RETRY = RetryPolicy(base_delay_s=60, max_delay_s=60, jitter=0)


async def test_a_worker_cut_off_from_redis_ends_its_own_calls(
    own_server: EmbeddedServer, unique_name: str, tmp_path: Path
) -> None:
    client = connect(own_server.url)
    q = CallQueue(
        client,
        unique_name,
        QueueOptions(rate_per_second=0, worker_ttl_s=1.0, retry=SLOW_RETRY),
    )
    await q.enqueue_many([spec(f"c{i}", phone_number=own_number(i)) for i in range(4)])
    writer = EventWriter(q)
    ledger = tmp_path / "ledger"
    talk_long = SimProfile(ring_s=(0, 0), talk_s=(600, 600), mix={Outcome.COMPLETED: 1.0})
    carrier = SimulatedCarrier(writer, talk_long, ledger)
    d = Dispatcher(q, carrier, writer, concurrency=4)
    await d.start()
    try:

        async def talking() -> bool:
            return carrier.live_calls == 4 and all(
                r is not None and r.status == CallStatus.IN_PROGRESS
                for r in [await q.get(f"c{i}") for i in range(4)]
            )

        await wait_for(talking, 10, "four calls in progress")
        own_server.kill()

        async def fenced() -> bool:
            return d.fenced >= 1 and carrier.live_calls == 0

        # 0.8 of the 1 s ttl after the last heartbeat got through.
        await wait_for(fenced, 5, "the worker to end the calls of its process")
        await asyncio.to_thread(own_server.start)

        async def reported() -> bool:
            records = [await q.get(f"c{i}") for i in range(4)]
            return all(r is not None and r.attempts[-1].outcome is not None for r in records)

        await wait_for(reported, 20, "the cut calls to be recorded once Redis is back")
        for i in range(4):
            record = await q.get(f"c{i}")
            assert record is not None
            assert record.attempts[-1].outcome == Outcome.FAILED
            assert record.attempts[-1].hangup_cause == "WORKER_FENCED"
        ends = [r for r in read_ledger(ledger) if r["ev"] == "end"]
        assert sorted(r["call"] for r in ends) == [f"c{i}" for i in range(4)]
        assert {r["outcome"] for r in ends} == {"failed"}
    finally:
        await d.stop(2)
        await carrier.aclose()
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_carrier_stops_dispatch_until_it_answers(
    redis_url: str, unique_name: str
) -> None:
    client = connect(redis_url)
    q = CallQueue(client, unique_name, QueueOptions(rate_per_second=0, one_call_per_number=False))
    await q.enqueue_many([spec(f"c{i}", phone_number=own_number(i)) for i in range(40)])
    port = _free_port()  # nothing listens here yet: the carrier is down
    auth_id, token = "MAFAKEACCOUNT0000001", "token"
    carrier = PlivoCarrier(
        PlivoConfig(
            auth_id=auth_id,
            auth_token=token,
            number="+14155550100",
            public_url="http://127.0.0.1:9",
            api_url=f"http://127.0.0.1:{port}",
            timeout_s=2.0,
        )
    )
    writer = EventWriter(q)
    d = Dispatcher(q, carrier, writer, concurrency=8)
    await d.start()
    try:

        async def blocked() -> bool:
            return "carrier" in await q.problems()

        await wait_for(blocked, 10, "dispatch to stop with the carrier's fault as its reason")
        reason = (await q.problems())["carrier"]
        assert "Plivo" in reason and "unreachable" in reason
        # Blocked, it does not spin: a few dials at most, then one probe at a time with backoff
        # (2 s, 4 s, ...), so in the next 1.5 s at most one more call is given back.
        released = await _released(q)
        assert released <= 8 + 1  # the dials in flight when it blocked, and maybe one probe
        await asyncio.sleep(1.5)  # a span of time to count in, not a wait for something
        assert await _released(q) <= released + 1

        async with FakePlivo(auth_id, token, port=port) as fake:

            async def resumed() -> bool:
                return "carrier" not in await q.problems() and len(fake.call_requests) >= 10

            await wait_for(resumed, 15, "dispatch to resume once the carrier answers")
        assert released >= CARRIER_FAULTS_TO_BLOCK
    finally:
        await d.stop(2)
        await carrier.aclose()
        await client.aclose()


async def _released(q: CallQueue) -> int:
    return int(await q.client.hget(q.keys.stats, "released") or 0)
