"""Group commit for single enqueues: concurrent ``CallQueue.enqueue`` calls share scripts.

Under load (an API process answering many ``POST /api/calls/queue`` at once) most of a single
enqueue's cost is fixed per script run, on the client and on the server: one request to pack,
write and read, one script start. Here a call goes out at once while fewer than
``IN_FLIGHT`` scripts are unanswered, so an idle queue adds no wait; otherwise it joins the
next group, which goes out as one script as soon as one of those answers. Each caller gets its
own row's answer, exactly as if it had run alone: the script treats the rows of a group in
order, so the same call id twice is one call, the second answered as a replay. A failed script
fails every caller of its group with the same error, as each would have failed alone; what
one caller's own input can get wrong (its arguments) is checked before it joins a group, so a
bad call fails alone. With ``ENQUEUE_DURABILITY`` on, a group's script is followed by its wait
(``durability.py``): one fsync or replica round trip per group, and a group whose write was not
confirmed fails each of its callers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

#: Scripts sent and not answered before calls start waiting to go out together. Two keeps the
#: server busy while the client packs the next group.
IN_FLIGHT = 2
#: Rows in one group: a script run of this size keeps the server's other clients waiting for
#: about a millisecond at most.
GROUP_MAX = 200

Item = TypeVar("Item")  # one call, ready to send (its script arguments)
Result = TypeVar("Result")  # what its caller gets back


class SingleEnqueues(Generic[Item, Result]):
    """Sends single enqueues alone while the server keeps up, in groups when it does not.

    ``send`` runs one script for a group and answers one result per item, in order. Items of
    different groups keys (batch ids: a script has one) never share a script."""

    def __init__(self, send: Callable[[Sequence[Item]], Awaitable[list[Result]]]) -> None:
        self._send = send
        self._in_flight = 0
        self._waiting: list[tuple[Item, str | None, asyncio.Future[Result]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def submit(self, item: Item, group_key: str | None = None) -> Result:
        if self._in_flight < IN_FLIGHT and not self._waiting:
            self._in_flight += 1
            try:
                return (await self._send([item]))[0]
            finally:
                self._in_flight -= 1
                self._next()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, group_key, future))
        return await future

    def _next(self) -> None:
        """Sends the next group, if calls are waiting and a script slot is free."""
        while self._waiting and self._in_flight < IN_FLIGHT:
            group = self._take_group()
            if not group:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._ran, group=group))

    def _take_group(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The oldest waiting calls of one group key (callers that gave up are dropped)."""
        key = self._waiting[0][1]
        group: list[tuple[Item, asyncio.Future[Result]]] = []
        rest: list[tuple[Item, str | None, asyncio.Future[Result]]] = []
        for waiting in self._waiting:
            item, item_key, future = waiting
            if future.done():
                continue
            if item_key == key and len(group) < GROUP_MAX:
                group.append((item, future))
            else:
                rest.append(waiting)
        self._waiting = rest
        return group

    async def _run(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        results = await self._send([item for item, _ in group])
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _ran(
        self, task: asyncio.Task[None], group: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        """After a group's task, however it ended (even cancelled before it started): each
        caller still waiting gets the failure, and the slot goes to the next group."""
        self._tasks.discard(task)
        self._in_flight -= 1
        failure = None if task.cancelled() else task.exception()
        for _, future in group:
            if future.done():
                continue
            if failure is None:  # cancelled, or ended without answering this caller
                future.cancel()
            else:
                future.set_exception(failure)
        self._next()
