"""The engine's Lua, loaded once as a Redis Function library and called with FCALL.

Each transition is one file in ``lua/`` (header: purpose, KEYS, ARGV, returns); they are
wrapped as functions of one library together with ``_lib.lua`` and the transition table from
``callqueue.models.TRANSITIONS`` (the single source of truth for allowed moves). A library is
loaded once per server, so its helpers cost nothing per call, unlike EVALSHA scripts that would
redefine them on every run. The library and function names carry a hash of the code, so
processes of two versions can share a server during a rolling upgrade. A server that lost the
library (restart without persistence, failover to a fresh replica) gets it again on the first
"function not found".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import ResponseError

from callqueue.engine.lean import LeanPool
from callqueue.models import TRANSITIONS

ScriptArg = str | int | float | bytes

NAMES = (
    "enqueue", "claim", "event", "release", "cancel", "reap", "control", "dnc", "campaign", "zones",
    "hooks", "recheck",
)  # fmt: skip
#: Shared helpers, in this order, before the transitions: the calling-window arithmetic
#: (``_window``, self-contained), the index of calls a window parked (``_park``, self-contained)
#: and the library's own (``_lib``, which uses both).
HELPERS = ("_window", "_park", "_lib")


class ScriptError(RuntimeError):
    """A script refused a move the transition table forbids (a bug, never user input)."""


def _transition_table() -> str:
    rows = []
    for source, targets in TRANSITIONS.items():
        inner = ", ".join(f"{t.value} = true" for t in sorted(targets))
        rows.append(f"  {source.value} = {{{inner}}},")
    return "local ALLOWED = {\n" + "\n".join(rows) + "\n}\n"


def _read(name: str) -> str:
    return resources.files("callqueue.engine").joinpath("lua").joinpath(f"{name}.lua").read_text()


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "function not found" in str(exc).lower()


def _translate(name: str, exc: ResponseError) -> Exception:
    if "CQ_" in str(exc):
        return ScriptError(f"{name}: {exc}")
    return exc


class Library:
    """The function library, and a way to (re)load it on every primary."""

    def __init__(self) -> None:
        parts = [_transition_table(), *(_read(h) for h in HELPERS)]
        for name in NAMES:
            parts.append(f"local function cq_{name}(KEYS, ARGV)\n{_read(name)}\nend\n")
        body = "\n".join(parts)
        self.version = hashlib.sha1(body.encode()).hexdigest()[:10]
        self.name = f"callqueue_{self.version}"
        # Every run starts with fresh per-run state and ends by writing the counters it summed
        # (see PENDING in _lib.lua), whichever way the transition returns.
        registrations = "\n".join(
            f"redis.register_function('{self.function(n)}', function(KEYS, ARGV)\n"
            f"  invocation_start()\n  local reply = cq_{n}(KEYS, ARGV)\n  stats_flush()\n"
            f"  return reply\nend)"
            for n in NAMES
        )
        self.code = f"#!lua name={self.name}\n{body}\n{registrations}\n"

    def function(self, name: str) -> str:
        return f"cq{self.version}_{name}"

    async def load(self, client: Any) -> None:
        # redis-py sends FUNCTION LOAD to every primary of a cluster.
        await client.function_load(self.code, replace=True)


class Script:
    """One transition: ``await script(client, keys, args)``."""

    __slots__ = ("function", "library", "name")

    def __init__(self, library: Library, name: str) -> None:
        self.library = library
        self.name = name
        self.function = library.function(name)

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        pool = getattr(client, "connection_pool", None)
        run = pool.execute if isinstance(pool, LeanPool) else client.execute_command
        try:
            return await run("FCALL", self.function, len(keys), *keys, *args)
        except ResponseError as exc:
            if not _is_missing(exc):
                raise _translate(self.name, exc) from exc
        await self.library.load(client)
        return await run("FCALL", self.function, len(keys), *keys, *args)

    def queue_in(self, pipe: Any, keys: Sequence[str], args: Sequence[ScriptArg]) -> None:
        pipe.fcall(self.function, len(keys), *keys, *args)


async def run_pipeline(
    client: Any, calls: Sequence[tuple[Script, Sequence[str], Sequence[ScriptArg]]]
) -> list[Any]:
    """Runs many transitions in one round trip (each still atomic on its own). Calls that hit a
    server without the library are run again, alone, after loading it."""
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue_in(pipe, keys, args)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, result in enumerate(results):
        if _is_missing(result):
            script, keys, args = calls[i]
            results[i] = await script(client, keys, args)
        elif isinstance(result, ResponseError):
            raise _translate(calls[i][0].name, result)
        elif isinstance(result, Exception):
            raise result
    return results


class Scripts:
    """The engine's transitions, by name."""

    def __init__(self) -> None:
        self.library = Library()
        self.enqueue = Script(self.library, "enqueue")
        self.claim = Script(self.library, "claim")
        self.event = Script(self.library, "event")
        self.release = Script(self.library, "release")
        self.cancel = Script(self.library, "cancel")
        self.reap = Script(self.library, "reap")
        self.control = Script(self.library, "control")
        self.dnc = Script(self.library, "dnc")
        self.campaign = Script(self.library, "campaign")
        self.zones = Script(self.library, "zones")
        self.hooks = Script(self.library, "hooks")
        self.recheck = Script(self.library, "recheck")

    async def load_all(self, client: Any) -> None:
        await self.library.load(client)


@cache
def scripts() -> Scripts:
    return Scripts()
