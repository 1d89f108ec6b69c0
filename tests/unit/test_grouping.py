"""Group commit of single enqueues (engine/grouping.py), against a scripted stand-in for the
script call: who goes out alone, who goes out together, and what each caller gets back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from callqueue.engine import grouping
from callqueue.engine.grouping import SingleEnqueues
from callqueue.models import CallSpec, CallStatus, EnqueueResult, EnqueueState


def call(i: int, batch_id: str | None = None) -> CallSpec:
    return CallSpec(call_id=f"c{i}", phone_number="+919123456789", batch_id=batch_id)


async def submit(singles: SingleEnqueues[CallSpec, EnqueueResult], spec: CallSpec) -> EnqueueResult:
    return await singles.submit(spec, spec.batch_id)


class Server:
    """Answers each script only when the test lets it (``release``), recording every group."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.fail_next: Exception | None = None
        self.new_group = asyncio.Event()

    async def send(self, specs: Sequence[CallSpec]) -> list[EnqueueResult]:
        self.groups.append([s.call_id for s in specs])
        self.new_group.set()
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [EnqueueResult(s.call_id, EnqueueState.CREATED, CallStatus.QUEUED) for s in specs]

    async def sent(self, count: int) -> None:
        """Waits until ``count`` scripts have been sent in all."""

        async def until() -> None:
            while len(self.groups) < count:
                self.new_group.clear()
                await self.new_group.wait()

        await asyncio.wait_for(until(), 2)

    def release(self, index: int) -> None:
        self.gates[index].set()


async def test_an_idle_queue_sends_each_call_at_once() -> None:
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    for i in range(3):
        task = asyncio.create_task(submit(singles, call(i)))
        await server.sent(i + 1)
        server.release(i)
        assert (await task).call_id == f"c{i}"
    assert server.groups == [["c0"], ["c1"], ["c2"]]


async def test_callers_wait_for_a_free_script_then_go_out_together_in_order() -> None:
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    tasks = [asyncio.create_task(submit(singles, call(i))) for i in range(10)]
    await server.sent(grouping.IN_FLIGHT)
    assert server.groups == [[f"c{i}"] for i in range(grouping.IN_FLIGHT)]
    server.release(0)  # one slot frees: everyone waiting goes out as one script
    await server.sent(grouping.IN_FLIGHT + 1)
    assert server.groups[-1] == [f"c{i}" for i in range(grouping.IN_FLIGHT, 10)]
    for i in range(1, len(server.gates)):
        server.release(i)
    results = await asyncio.gather(*tasks)
    assert [r.call_id for r in results] == [f"c{i}" for i in range(10)]


async def test_a_group_is_capped_and_never_mixes_batch_ids() -> None:
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    busy = [
        asyncio.create_task(submit(singles, call(-i))) for i in range(1, grouping.IN_FLIGHT + 1)
    ]
    await server.sent(grouping.IN_FLIGHT)
    many = grouping.GROUP_MAX + 5
    waiting = [
        asyncio.create_task(submit(singles, call(i, "b1" if i % 2 else None))) for i in range(many)
    ]
    await asyncio.sleep(0)

    async def drain() -> None:  # answers every script sent, until every caller has its answer
        while not all(t.done() for t in waiting):
            for gate in server.gates:
                gate.set()
            await asyncio.sleep(0)

    await asyncio.wait_for(drain(), 5)
    await asyncio.gather(*busy, *waiting)
    groups = server.groups[grouping.IN_FLIGHT :]
    assert sorted(c for g in groups for c in g) == sorted(f"c{i}" for i in range(many))
    for g in groups:
        assert len(g) <= grouping.GROUP_MAX
        assert len({int(c[1:]) % 2 for c in g}) == 1, g  # one batch id per script


async def test_a_failed_script_fails_each_caller_of_its_group() -> None:
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    first = [asyncio.create_task(submit(singles, call(i))) for i in range(grouping.IN_FLIGHT)]
    await server.sent(grouping.IN_FLIGHT)
    group = [asyncio.create_task(submit(singles, call(i))) for i in range(10, 14)]
    server.release(0)
    await server.sent(grouping.IN_FLIGHT + 1)
    server.fail_next = ConnectionError("server went away")
    server.release(grouping.IN_FLIGHT)
    for task in group:
        with pytest.raises(ConnectionError, match="server went away"):
            await task
    for i in range(1, grouping.IN_FLIGHT):
        server.release(i)
    assert [r.call_id for r in await asyncio.gather(*first)] == [
        f"c{i}" for i in range(grouping.IN_FLIGHT)
    ]
    # Nothing is stuck: the next call goes out at once.
    later = asyncio.create_task(submit(singles, call(99)))
    await server.sent(grouping.IN_FLIGHT + 2)
    server.release(grouping.IN_FLIGHT + 1)
    assert (await later).call_id == "c99"


async def test_a_caller_that_gives_up_while_waiting_is_not_sent() -> None:
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    first = [asyncio.create_task(submit(singles, call(i))) for i in range(grouping.IN_FLIGHT)]
    await server.sent(grouping.IN_FLIGHT)
    stays = asyncio.create_task(submit(singles, call(10)))
    leaves = asyncio.create_task(submit(singles, call(11)))
    await asyncio.sleep(0)
    leaves.cancel()
    await asyncio.sleep(0)
    server.release(0)
    await server.sent(grouping.IN_FLIGHT + 1)
    assert server.groups[-1] == ["c10"]
    for gate in server.gates:
        gate.set()
    assert (await stays).call_id == "c10"
    assert leaves.cancelled()
    await asyncio.gather(*first)


async def test_a_group_whose_task_never_ran_or_answered_short_frees_its_callers() -> None:
    answered: list[int] = []

    async def short(items: Sequence[CallSpec]) -> list[EnqueueResult]:
        answered.append(len(items))
        if len(items) > 1:
            return []  # fewer answers than calls: a bug, never a hang
        await asyncio.sleep(0)
        return [EnqueueResult(items[0].call_id, EnqueueState.CREATED, CallStatus.QUEUED)]

    singles = SingleEnqueues[CallSpec, EnqueueResult](short)
    tasks = [asyncio.create_task(submit(singles, call(i))) for i in range(6)]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    assert [isinstance(r, EnqueueResult) for r in results[: grouping.IN_FLIGHT]] == [True] * 2
    assert all(isinstance(r, ValueError) for r in results[grouping.IN_FLIGHT :]), results
    assert singles._in_flight == 0

    # A group's task cancelled (a loop shutting down): its callers are cancelled and the slot
    # comes back.
    server = Server()
    singles = SingleEnqueues[CallSpec, EnqueueResult](server.send)
    first = [asyncio.create_task(submit(singles, call(i))) for i in range(grouping.IN_FLIGHT)]
    await server.sent(grouping.IN_FLIGHT)
    waiting = [asyncio.create_task(submit(singles, call(i))) for i in range(10, 13)]
    await asyncio.sleep(0)
    server.release(0)
    await first[0]
    (group_task,) = singles._tasks
    group_task.cancel()
    for task in waiting:
        with pytest.raises(asyncio.CancelledError):
            await task
    server.release(1)
    await first[1]
    assert singles._in_flight == 0 and not singles._tasks
