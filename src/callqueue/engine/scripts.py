"""The engine's Lua, loaded once as a Redis Function library and called with FCALL.

Each transition is one file in ``lua/`` (header: purpose, KEYS, ARGV, returns); they are
wrapped as functions of one library together with ``_lib.lua`` and the transition table from
``callqueue.models.TRANSITIONS`` (the single source of truth for allowed moves). A library is
loaded once per server, so its helpers cost nothing per call, unlike EVALSHA scripts that would
redefine them on every run. The library and function names carry a hash of the code, so
processes of two versions can share a server during a rolling upgrade. A server that lost the
library (restart without persistence, failover to a fresh replica) gets it again on the first
"function not found".

Each script's KEYS and ARGV are declared once, in ``contracts.py``; building the library checks
every declaration against its script (the counts its header documents, the indexes it reads),
so a mismatch fails at start-up. The constants the Lua shares with Python (the transition
table, the status sets, the phase ranks, the names of keys it derives from the queue prefix)
are generated here from their Python source.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import ResponseError

from callqueue.engine.contracts import CONTRACTS, PER_CALL_KEYS, PHASE, Contract, ScriptArg
from callqueue.engine.keys import QueueKeys
from callqueue.engine.lean import LeanPool
from callqueue.models import LIVE_STATUSES, TERMINAL_STATUSES, TRANSITIONS

__all__ = ["Library", "Script", "ScriptArg", "ScriptError", "Scripts", "run_pipeline", "scripts"]

NAMES = tuple(CONTRACTS)
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


def _lua_str(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]*", value):
        raise ValueError(f"{value!r} cannot be a plain Lua string literal")
    return f"'{value}'"


def _lua_table(name: str, entries: Mapping[str, str | int | bool]) -> str:
    def lua(v: str | int | bool) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v) if isinstance(v, int) else _lua_str(v)

    inner = ", ".join(f"{k} = {lua(v)}" for k, v in entries.items())
    return f"local {name} = {{{inner}}}\n"


def key_suffixes() -> dict[str, str]:
    """What the Lua appends to the queue prefix (KEYS: it carries the hash tag, so every derived
    key shares the queue's slot) to name the keys it derives, taken from keys.py itself."""
    k = QueueKeys("q")

    def tail(full: str, after: str = "") -> str:
        if not (full.startswith(k.prefix) and full.endswith(after)):
            raise ValueError(f"{full!r} is not the queue prefix + a name + {after!r}")
        return full[len(k.prefix) : len(full) - len(after)]

    return {
        "call": tail(k.call("")),
        "campaign": tail(k.campaign("")),
        "ready": tail(k.campaign_ready("")),
        "live": tail(k.campaign_live("")),
        "rate": tail(k.campaign_rate_log("")),
        "stats": tail(k.campaign_stats("")),
        "dps": tail(k.campaign_dials_per_second("")),
        "park": tail(k.campaign_window_parked("")),
        "recheck": tail(k.campaign_window_recheck("")),
        "rechecks": tail(k.window_rechecks),
        "campaigns_done": tail(k.campaigns_done),
        "hooks": tail(k.hooks),
        "lines": tail(k.lines),
        "zone_offsets": tail(k.zone_offsets),
        "worker_calls": tail(k.worker_calls("")),
        "number_attempts": tail(k.number_attempts(0), "0"),
    }


def _generated() -> str:
    """The Lua constants whose source of truth is Python."""
    return "".join(
        [
            _transition_table(),
            _lua_table("TERMINAL", {s.value: True for s in sorted(TERMINAL_STATUSES)}),
            _lua_table("LIVE", {s.value: True for s in sorted(LIVE_STATUSES)}),
            _lua_table("PHASE", PHASE),
            _lua_table("KEY", key_suffixes()),
        ]
    )


class ContractError(RuntimeError):
    """A script's declaration (contracts.py) and the script itself disagree."""


#: KEYS[n], KEYS[a..b], KEYS[a..] (a variable tail from a) or KEYS[n+i] (a group per item).
_REF = re.compile(r"\b(KEYS|ARGV)\[(\d+)(?:(\.\.)(\d*)|(\+i))?\]")
_LITERAL = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_PER_ITEM = re.compile(r"then (\d+) per ")


def _split(source: str) -> tuple[str, str]:
    """A script's header (its leading comment lines) and its code without comments."""
    lines = source.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("--"):
        n += 1
    header = "\n".join(lines[:n])
    code = "\n".join(line.split("--", 1)[0] for line in lines[n:])
    return header, code


def check_contract(contract: Contract, source: str) -> None:
    """Raises ContractError unless ``source`` documents and reads exactly what ``contract``
    declares: its header numbers KEYS and ARGV 1..n (a block as a range), marks a group per item
    or a variable tail where the declaration has one, and its code reads every declared key and
    argument (a block through its reader) and none past the fixed ones unless a tail follows."""
    name = contract.name
    header, code = _split(source)
    counts = {"KEYS": len(contract.keys), "ARGV": contract.argc}
    variadic = {"KEYS": contract.variadic_keys, "ARGV": contract.variadic_argv}
    documented: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    open_from: dict[str, int] = {}
    for kind, a, dots, b, per_item in _REF.findall(header):
        first = int(a)
        if per_item or (dots and not b):
            open_from[kind] = first + 1 if per_item else first
        else:
            documented[kind].update(range(first, int(b or a) + 1))
    read: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    for kind, n in _LITERAL.findall(code):
        read[kind].add(int(n))
    for first, block in contract.blocks():
        if not re.search(rf"\b{block.reader}\(ARGV, {first}\)", code):
            raise ContractError(f"{name}: {block.reader}(ARGV, {first}) not found for {block.name}")
        read["ARGV"].update(range(first, first + len(block.names)))
    for kind, count in counts.items():
        want = set(range(1, count + 1))
        if documented[kind] != want:
            raise ContractError(
                f"{name}: declared {count} {kind}, its header documents {sorted(documented[kind])}"
            )
        if kind in open_from and (not variadic[kind] or open_from[kind] != count + 1):
            raise ContractError(f"{name}: header has a {kind} tail from {open_from[kind]}")
        if unread := want - read[kind]:
            raise ContractError(
                f"{name}: declared {kind} {sorted(unread)} that the code never reads"
            )
        if not variadic[kind] and (beyond := {i for i in read[kind] if i > count}):
            raise ContractError(
                f"{name}: reads {kind} {sorted(beyond)} beyond the {count} declared"
            )
    if contract.key_group and "KEYS" not in open_from:
        raise ContractError(f"{name}: declares keys per item, its header documents none")
    if (m := _PER_ITEM.search(header)) and int(m.group(1)) != len(contract.argv_group):
        raise ContractError(
            f"{name}: header takes {m.group(1)} ARGV per item, declared {len(contract.argv_group)}"
        )
    for key in contract.keys + contract.key_group:
        if key not in PER_CALL_KEYS and not hasattr(QueueKeys, key):
            raise ContractError(f"{name}: key {key!r} is not a QueueKeys name")


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

    def __init__(self, contracts: Mapping[str, Contract] = CONTRACTS) -> None:
        self.names = tuple(contracts)
        parts = [_generated(), *(_read(h) for h in HELPERS)]
        for name, contract in contracts.items():
            source = _read(name)
            check_contract(contract, source)
            parts.append(f"local function cq_{name}(KEYS, ARGV)\n{source}\nend\n")
        body = "\n".join(parts)
        self.version = hashlib.sha1(body.encode()).hexdigest()[:10]
        self.name = f"callqueue_{self.version}"
        # Every run starts with fresh per-run state and ends by writing the counters it summed
        # (see PENDING in _lib.lua), whichever way the transition returns.
        registrations = "\n".join(
            f"redis.register_function('{self.function(n)}', function(KEYS, ARGV)\n"
            f"  invocation_start()\n  local reply = cq_{n}(KEYS, ARGV)\n  stats_flush()\n"
            f"  return reply\nend)"
            for n in self.names
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
