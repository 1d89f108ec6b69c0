"""A TCP proxy that injects network faults between a service and what it talks to (Redis, a
carrier's API), for chaos tests.

::

    async with FaultProxy("127.0.0.1", redis_port) as proxy:
        ...                            # point the service at proxy.port instead
        proxy.set_latency(0.005)       # every chunk, both ways, 5 ms late (order is kept)
        proxy.drop_all()               # close every connection (FIN both ways)
        proxy.reset_all()              # abort every connection (RST: SO_LINGER 0)
        proxy.refuse(True)             # new connections are reset as soon as they arrive
        proxy.faults                   # what was injected, when (wall clock) and to how many

:class:`FaultProxy` runs in the caller's event loop. :class:`FaultProxyProcess` runs the same
proxy in a process of its own (``python -m callqueue.testing.faultproxy HOST:PORT``, driven
by one command a line on its standard input), as toxiproxy runs beside a test: the traffic it
carries then takes nothing from the test's own loop, whose timing a chaos test measures.
toxiproxy itself is a Go binary; this is the part of it the chaos tests need, with a schedule
the test drives step by step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import struct
import time
from dataclasses import asdict, dataclass
from typing import Self

import orjson

from callqueue.testing.child import AsyncStartStop, Child, run, stdin_lines

__all__ = ["FaultProxy", "FaultProxyProcess", "InjectedFault"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# l_onoff=1, l_linger=0: close() sends RST and drops unsent data, as a crashed peer would.
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One fault as injected: ``at`` is wall-clock time (``time.time()``), ``connections``
    how many open connections it hit (0 for a setting such as latency)."""

    at: float
    kind: str
    connections: int
    detail: str = ""


class _Pipe:
    """One client connection and its upstream connection, copied both ways."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._proxy = proxy
        self._writers = (client[1], upstream[1])
        self._tasks = [
            asyncio.create_task(self._copy(client[0], upstream[1])),
            asyncio.create_task(self._copy(upstream[0], client[1])),
        ]

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forwards chunks in order, each no earlier than ``latency_s`` after it arrived."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await pending.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                pending.put_nowait((loop.time() + self._proxy.latency_s, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
        # One side is done: once both are, close (a peer that closed its half keeps the other
        # open only as long as the proxy does).
        if all(t.done() or t is asyncio.current_task() for t in self._tasks):
            self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        for writer in self._writers:
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                writer.transport.abort()
            else:
                writer.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()


class FaultProxy(AsyncStartStop):
    """Listens on ``host``:``port`` (0: a free port) and forwards each connection to
    ``upstream_host``:``upstream_port``, with the faults the caller switches on."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self._port = port
        self.latency_s = 0.0
        self.refusing = False
        self.faults: list[InjectedFault] = []
        self.connections_total = 0
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pipe in list(self._pipes):
            pipe.close(reset=False)
        # Closing a pipe ends its handler; a handler cancelled instead would be reported by
        # asyncio's stream protocol as an error.
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- faults ---------------------------------------------------------------------------------
    def set_latency(self, seconds: float) -> None:
        """Delays every chunk, both ways, by ``seconds`` from now on (0: none)."""
        self.latency_s = seconds
        self._note("latency", 0, f"{seconds * 1000:g} ms each way")

    def drop_all(self) -> int:
        """Closes every open connection, both ends, with a FIN; returns how many."""
        return self._close_all("drop", reset=False)

    def reset_all(self) -> int:
        """Aborts every open connection, both ends, with an RST; returns how many."""
        return self._close_all("reset", reset=True)

    def refuse(self, on: bool) -> None:
        """While on, a new connection is reset as soon as it is accepted (a port that is
        there but serves nothing, as during a restart)."""
        self.refusing = on
        self._note("refuse" if on else "accept", 0)

    def _close_all(self, kind: str, *, reset: bool) -> int:
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.close(reset=reset)
        self._pipes.clear()
        self._note(kind, len(pipes))
        return len(pipes)

    def _note(self, kind: str, connections: int, detail: str = "") -> None:
        self.faults.append(InjectedFault(time.time(), kind, connections, detail))
        log.info("fault proxy %s: %s (%d connections) %s", self._port, kind, connections, detail)

    # -- connections ----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self.refusing:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()
            return
        try:
            upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pipe = _Pipe(self, (reader, writer), upstream)
        self._pipes.add(pipe)
        try:
            await pipe.wait()
        finally:
            self._pipes.discard(pipe)


# -- in a process of its own --------------------------------------------------------------------


class FaultProxyProcess(AsyncStartStop):
    """:class:`FaultProxy` in a child process; the same faults, as coroutines."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.faults: list[InjectedFault] = []
        self._child = Child(__name__, f"{upstream_host}:{upstream_port}")

    async def start(self) -> Self:
        self.port = int((await self._child.start()).removeprefix("listening "))
        return self

    async def aclose(self) -> None:
        await self._child.aclose()

    async def _command(self, line: str) -> InjectedFault:
        fault = InjectedFault(**orjson.loads(await self._child.ask(line)))
        self.faults.append(fault)
        return fault

    async def set_latency(self, seconds: float) -> InjectedFault:
        return await self._command(f"latency {seconds}")

    async def drop_all(self) -> InjectedFault:
        return await self._command("drop")

    async def reset_all(self) -> InjectedFault:
        return await self._command("reset")

    async def refuse(self, on: bool) -> InjectedFault:
        return await self._command(f"refuse {'on' if on else 'off'}")


async def _serve_commands(upstream: tuple[str, int]) -> None:
    commands = await stdin_lines()
    async with FaultProxy(*upstream) as proxy:
        print(f"listening {proxy.port}", flush=True)
        while line := (await commands.readline()).decode().split():
            verb, args = line[0], line[1:]
            if verb == "latency":
                proxy.set_latency(float(args[0]))
            elif verb == "drop":
                proxy.drop_all()
            elif verb == "reset":
                proxy.reset_all()
            elif verb == "refuse":
                proxy.refuse(args[0] == "on")
            else:
                raise SystemExit(f"unknown command {verb!r}")
            print(orjson.dumps(asdict(proxy.faults[-1])).decode(), flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m callqueue.testing.faultproxy HOST:PORT``: prints ``listening PORT``, then
    reads commands (``latency SECONDS``, ``drop``, ``reset``, ``refuse on|off``) and answers
    each with the fault it injected, as one JSON line; stops at the end of its input."""
    parser = argparse.ArgumentParser(prog="python -m callqueue.testing.faultproxy")
    parser.add_argument("upstream", help="HOST:PORT to forward to")
    host, _, port = parser.parse_args(argv).upstream.rpartition(":")
    run(_serve_commands((host, int(port))))


if __name__ == "__main__":
    main()
