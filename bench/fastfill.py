"""Fast set-up of huge backlogs: the library's own ``enqueue_many`` command, replayed.

Building and packing the ~7,000 arguments of each 1,000-call batch is most of the client-side
cost of ``CallQueue.enqueue_many``. For the 1,000,000-call backlog (set-up, not a measured
figure) this module captures the exact command ``enqueue_many`` sends for one 1,000-call batch
(through a stand-in client, so only the public API is used), and replays it over a plain socket
with the call ids and numbers substituted, several batches in flight, which leaves Redis as the
only limit.
Redis runs the same enqueue function with the same arguments, so the stored calls are identical
to the library's; every reply is checked, and :func:`fast_fill` verifies samples with
``CallQueue.get``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, cast

import hiredis

from bench.common import make_spec, make_specs, number_for
from callqueue.engine.connection import AsyncClient
from callqueue.engine.queue import CallQueue
from callqueue.models import CallStatus

BATCH = 1_000
IN_FLIGHT = 4
# Where the template differs from call to call: its id, and its number (number_for("call", i)
# ends with i in 7 digits).
_NUMBER_HEAD = number_for("call", 0)[:-7].encode()
_SPLIT = re.compile(rb"call-(\d{7})|" + re.escape(_NUMBER_HEAD) + rb"(\d{7})")


class _Capture:
    """Stands in for the redis client: records the enqueue FCALL (the one the batch's calls go
    in), answers as if every call was new."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.commands: list[tuple[Any, ...]] = []

    async def execute_command(self, *args: Any) -> list[Any]:
        if not str(args[1]).endswith("_enqueue"):
            return [0]  # the time-zone record (zones.lua): fast_fill makes it on the real queue
        self.commands.append(args)
        return [b"ok", b"q" * self.size, 1]


def _resp(args: Sequence[Any]) -> bytes:
    """RESP encoding of a command, as redis-py encodes its arguments."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot encode {type(arg).__name__}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Template:
    """The wire bytes of one ``enqueue_many`` batch, split at every call id."""

    def __init__(
        self, size: int, segments: list[bytes], ids: list[int], kinds: list[bytes]
    ) -> None:
        self.size = size
        self.segments = segments
        self.ids = ids  # the template call number at each split point
        self.kinds = kinds  # what goes there: b"call-" (its id) or the number's head

    @classmethod
    async def capture(cls, queue: CallQueue, size: int) -> _Template:
        """What ``queue.enqueue_many`` sends for calls 0 .. size-1 in one batch."""
        capture = _Capture(size)
        # The stand-in answers what the engine asks of the client on this path.
        twin = CallQueue(cast("AsyncClient", capture), queue.name, queue.options)
        try:
            await twin.enqueue_many(make_specs(0, size), batch_size=size)
        except Exception as exc:
            raise RuntimeError(
                f"cannot capture enqueue_many's command ({exc!r}); bench/fastfill.py needs updating"
            ) from exc
        if len(capture.commands) != 1:
            raise RuntimeError(
                f"enqueue_many sent {len(capture.commands)} commands for one batch; "
                "bench/fastfill.py needs updating"
            )
        wire = _resp(capture.commands[0])
        segments, ids, kinds, pos = [], [], [], 0
        for match in _SPLIT.finditer(wire):
            segments.append(wire[pos : match.start()])
            ids.append(int(match.group(1) or match.group(2)))
            kinds.append(b"call-" if match.group(1) else _NUMBER_HEAD)
            pos = match.end()
        segments.append(wire[pos:])
        if sorted(set(ids)) != list(range(size)):
            raise RuntimeError("the captured enqueue command does not name every call id")
        return cls(size, segments, ids, kinds)

    def render(self, first: int) -> bytes:
        """The command for calls ``first`` .. ``first + size - 1``."""
        parts = [self.segments[0]]
        for i, kind, segment in zip(self.ids, self.kinds, self.segments[1:], strict=True):
            parts.append(kind + b"%07d" % (first + i))
            parts.append(segment)
        return b"".join(parts)


async def fast_fill(queue: CallQueue, host: str, port: int, n: int) -> None:
    """Queues seed calls ``call-0000000`` .. ``n - 1`` (fewer than 10,000,000)."""
    if not 0 < n < 10_000_000:
        raise ValueError("n must be between 1 and 9,999,999")
    templates: dict[int, _Template] = {}
    await queue.register_zones(make_spec(0).time_zones)
    reader, writer = await asyncio.open_connection(host, port)
    parser = hiredis.Reader()
    created = 0

    async def reply(size: int) -> None:
        nonlocal created
        while (answer := parser.gets()) is False:
            data = await reader.read(1 << 16)
            if not data:
                raise RuntimeError("the server closed the connection")
            parser.feed(data)
        if isinstance(answer, Exception) or not isinstance(answer, list) or answer[0] != b"ok":
            raise RuntimeError(f"enqueue failed: {answer!r}")
        codes = answer[1]  # one letter per call: q = created and queued
        if len(codes) != size:
            raise RuntimeError(f"enqueue answered for {len(codes)} of {size} calls")
        created += codes.count(b"q")

    try:
        pending: list[int] = []
        for first in range(0, n, BATCH):
            size = min(BATCH, n - first)
            if size not in templates:
                templates[size] = await _Template.capture(queue, size)
            writer.write(templates[size].render(first))
            pending.append(size)
            if len(pending) >= IN_FLIGHT:
                await writer.drain()
                await reply(pending.pop(0))
        await writer.drain()
        for size in pending:
            await reply(size)
    finally:
        writer.close()
        await writer.wait_closed()
    if created != n:
        raise RuntimeError(f"{created} calls created, expected {n}")
    for i in sorted({0, n // 2, n - 1}):
        record = await queue.get(f"call-{i:07d}")
        if record is None or record.spec != make_spec(i) or record.status != CallStatus.QUEUED:
            raise RuntimeError(f"call-{i:07d} was not stored as enqueue_many stores it: {record}")
