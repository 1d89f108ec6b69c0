"""A helper process of the test tools (``python -m <module> ...``), driven one line at a time
over its standard input and output; its input ending tells it to stop."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

__all__ = ["AsyncStartStop", "Child", "run", "stdin_lines"]


class Child:
    """``python -m module *args`` with pipes; :meth:`start` returns its first line."""

    def __init__(self, module: str, *args: str) -> None:
        self.command = [sys.executable, "-m", module, *args]
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return await self.line()

    async def line(self, timeout_s: float = 30.0) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        raw = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
        if not raw:
            code = await self._proc.wait()
            raise RuntimeError(f"{' '.join(self.command[2:])} exited with code {code}")
        return raw.decode().strip()

    async def ask(self, line: str) -> str:
        """Sends one line and returns the answer line."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        await self._proc.stdin.drain()
        return await self.line()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class AsyncStartStop:
    """``async with`` for a tool with ``start`` (returning itself) and ``aclose``."""

    async def start(self) -> Self:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def stdin_lines() -> asyncio.StreamReader:
    """This process's standard input as a stream (in a helper process's ``main``)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


_runner: Any = asyncio.run
with contextlib.suppress(ImportError):  # uvloop is a dependency where it exists
    import uvloop

    _runner = uvloop.run


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a helper process's ``main`` on uvloop where it exists."""
    _runner(main)
