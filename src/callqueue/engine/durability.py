"""Durable enqueues (``ENQUEUE_DURABILITY``): an enqueue answers only once its write is on disk
(``aof``) or on a replica (``replica``); ``none`` answers as soon as the server has run it.

How a write is confirmed. ``WAITAOF`` and ``WAIT`` wait for the last write *of the connection
they are sent on*, so each enqueue script goes out with its wait right behind it, on one
connection, in one write (a pipeline): the wait covers that script's writes, one wait per
script, so a group of single enqueues (``grouping.py``) or a 1,000-call bulk script pays one
fsync or one replica round trip, not one per call. They go through the client's connection
pool, not the shared connection of ``lean.py``: a wait holds its connection on the server until
it is answered, and every other command of the process would queue behind it. On a Redis
Cluster the pair goes to the primary that holds the queue's slot.

Every enqueue script writes, a replay too: a single enqueue and the first script of a bulk
enqueue take their arrival numbers (INCRBY), and every script of a batch (bulk requests and
imports always have one) refreshes the batch's expiry. So the wait behind a replay covers the
first write of that call even when another connection made it: the server's replication
offset only grows, and a replica (or a file) that has the later write has every earlier one.

- ``aof`` sends ``WAITAOF 1 0 <timeout>``: the local append-only file has it, fsynced. It needs
  the server to fsync before it answers (``appendfsync always``): with ``everysec`` a correct
  server makes every enqueue wait for the next once-a-second fsync, and Valkey up to at least
  9.1.2 (like Redis 7.4 before redis/redis#13793) answers WAITAOF before that fsync has
  happened, so the answer would prove nothing. :func:`check_server` refuses such a server.
- ``replica`` sends ``WAIT 1 <timeout>``: a replica has applied it, so a failover to that
  replica keeps it. WAIT rather than ``WAITAOF 0 1``: it is what a failover needs (the replica
  promoted serves from memory), it exists on every server version (Redis 7.0 has no WAITAOF),
  and it does not depend on the replicas' own append-only files or fsync policy.

A wait that is not confirmed in time raises :class:`NotDurable`: the call *is* queued, it may
or may not survive the failure the mode guards against, and enqueueing the same call id again
is safe (it is a replay, confirmed by its own wait).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio.cluster
from redis.asyncio.cluster import PipelineCommand
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

# The library's own checks of a reply: a server without the library, and its error codes.
from callqueue.engine.codec import text
from callqueue.engine.faults import is_transient
from callqueue.engine.scripts import Script, ScriptArg
from callqueue.engine.scripts import _is_missing as is_missing_function
from callqueue.engine.scripts import _translate as translate_error

#: More tries of a durable pair that met a connection error, a redirection or a failover.
RETRIES = 3
#: The longest wait allowed: well inside the clients' socket timeout (10 s), which would
#: otherwise cut the connection of a wait still running.
MAX_TIMEOUT_S = 5.0


class Durability(StrEnum):
    NONE = "none"
    AOF = "aof"
    REPLICA = "replica"


@dataclass(frozen=True, slots=True)
class DurabilityOptions:
    """What an enqueue waits for before it answers, and for how long at most."""

    mode: Durability = Durability.NONE
    timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"durability timeout must be in (0, {MAX_TIMEOUT_S:g}] s")

    @property
    def waits(self) -> bool:
        return self.mode != Durability.NONE

    @property
    def wait_name(self) -> str:
        return "WAITAOF" if self.mode == Durability.AOF else "WAIT"

    def wait_command(self) -> tuple[str | int, ...]:
        ms = max(1, round(self.timeout_s * 1000))
        if self.mode == Durability.AOF:
            return ("WAITAOF", 1, 0, ms)  # local fsyncs, replicas, timeout
        return ("WAIT", 1, ms)  # replicas, timeout

    def confirmed(self, reply: Any) -> bool:
        """Whether the wait's reply says the write is where the mode wants it."""
        try:
            count = reply[0] if self.mode == Durability.AOF else reply  # WAITAOF: [local, replicas]
            return int(count) >= 1
        except (TypeError, ValueError, IndexError):
            return False

    @property
    def where(self) -> str:
        return "fsynced to the append-only file" if self.mode == Durability.AOF else "on a replica"

    @property
    def guards_against(self) -> str:
        return "a crash of the Redis machine" if self.mode == Durability.AOF else "a failover"


class DurabilityUnavailable(Exception):
    """The server cannot do the chosen mode (said at start-up, once)."""


class NotDurable(Exception):
    """Queued, but the write was not confirmed where the mode wants it within the timeout.

    ``call_ids``: the calls of the request it answers (a single enqueue); ``batch_id``: its
    batch (a bulk enqueue). Enqueueing them again with the same ids is safe."""

    def __init__(
        self,
        options: DurabilityOptions,
        reason: str,
        call_ids: Sequence[str] = (),
        batch_id: str | None = None,
    ) -> None:
        self.options = options
        self.reason = reason
        self.call_ids = tuple(call_ids)
        self.batch_id = batch_id
        super().__init__(
            f"queued, but not confirmed {options.where} within {options.timeout_s:g} s "
            f"({reason}): it may not survive {options.guards_against}"
        )

    def naming(self, call_ids: Sequence[str] = (), batch_id: str | None = None) -> NotDurable:
        """The same failure, for one caller's calls or batch."""
        return NotDurable(self.options, self.reason, call_ids, batch_id)


# -- running a script durably ------------------------------------------------------------------


async def run_durably(
    client: Any,
    script: Script,
    keys: Sequence[str],
    args: Sequence[ScriptArg],
    options: DurabilityOptions,
) -> Any:
    """Runs ``script`` and its wait on one connection; returns the script's reply, or raises
    :class:`NotDurable` when the wait did not confirm it."""
    fcall: tuple[Any, ...] = ("FCALL", script.function, len(keys), *keys, *args)
    wait = options.wait_command()
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    failures = 0
    loaded = False
    while True:
        try:
            reply, confirmation = await _pair(client, fcall, wait, keys[0])
            if isinstance(reply, Exception) and is_transient(reply):
                raise reply  # LOADING, READONLY (a demoted primary), ...: as a lost connection
        except Exception as exc:
            failures += 1
            if failures > RETRIES or not is_transient(exc):
                raise
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                # The slot may have moved or its primary died: look again before the next
                # try (a refresh that reaches no node leaves the next try to fail as it will).
                with contextlib.suppress(RedisError, RedisClusterException):
                    await client.nodes_manager.initialize()
            await asyncio.sleep(backoff.compute(failures))
            continue
        if isinstance(reply, ResponseError):
            if is_missing_function(reply) and not loaded:
                # A server that lost the library (a failover to a fresh replica): load it on
                # every primary and send the pair again.
                await script.library.load(client)
                loaded = True
                continue
            raise translate_error(script.name, reply)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(confirmation, Exception):
            raise NotDurable(options, f"{options.wait_name} failed: {confirmation}")
        if not options.confirmed(confirmation):
            raise NotDurable(options, f"{options.wait_name} answered {_show(confirmation)}")
        return reply


async def _pair(
    client: Any, fcall: tuple[Any, ...], wait: tuple[Any, ...], slot_key: str
) -> tuple[Any, Any]:
    """The replies of ``fcall`` and ``wait``, sent together on one connection. Errors of the
    commands come back as values; connection errors, redirections and failovers are raised (a
    command retried alone would have its wait on another connection)."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        node = client.get_node_from_key(slot_key)
        if node is None:  # pragma: no cover - only asked for a primary, which always exists
            raise ClusterDownError(f"no node serves the slot of {slot_key!r}")
        commands = [PipelineCommand(0, *fcall), PipelineCommand(1, *wait)]
        await node.execute_pipeline(commands)
        results = [command.result for command in commands]
        for result in results:
            if isinstance(result, MovedError):
                await client.nodes_manager.move_slot(result)
            if isinstance(result, Exception) and is_transient(result):
                raise result  # the pair again, both on the same connection
        return results[0], results[1]
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*fcall)
    pipe.execute_command(*wait)
    first, second = await pipe.execute(raise_on_error=False)
    return first, second


def _show(reply: Any) -> str:
    if isinstance(reply, list | tuple):
        return " ".join(str(v) for v in reply)
    return str(reply)


# -- checking the server at start-up ---------------------------------------------------------


async def check_server(
    client: Any, options: DurabilityOptions, slot_key: str, *, may_configure: bool = False
) -> list[str]:
    """Raises :class:`DurabilityUnavailable` (one line, saying why) when the server holding
    ``slot_key`` cannot do ``options.mode``; returns remarks worth logging.

    ``may_configure``: the server is this product's own (the embedded one), so ``aof`` may
    switch it to fsync before every answer instead of refusing."""
    if not options.waits:
        return []
    target: dict[str, Any] = {}
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        target["target_nodes"] = client.get_node_from_key(slot_key)

    async def run(*args: Any) -> Any:
        return await client.execute_command(*args, **target)

    replication = await run("INFO", "replication")
    if replication.get("role") not in (None, "master"):
        raise DurabilityUnavailable(
            "the server is a replica; point REDIS_URL at the primary (waits run there)"
        )
    if options.mode == Durability.REPLICA:
        replicas = int(replication.get("connected_slaves", 0))
        if replicas < 1:
            raise DurabilityUnavailable(
                "the server has no replica connected (connected_slaves:0); start one "
                "(REPLICAOF) or choose ENQUEUE_DURABILITY=aof or none"
            )
        return [f"enqueues wait for one of {replicas} replica(s) (WAIT 1)"]
    return await _check_aof(run, may_configure)


async def _check_aof(run: Any, may_configure: bool) -> list[str]:
    try:
        await run("WAITAOF", 0, 0, 0)
    except ResponseError as exc:
        server = await run("INFO", "server")
        version = server.get("valkey_version") or server.get("redis_version", "?")
        raise DurabilityUnavailable(
            f"needs WAITAOF (Redis or Valkey 7.2 or later); this server ({version}) answered: {exc}"
        ) from None
    persistence = await run("INFO", "persistence")
    if int(persistence.get("aof_enabled", 0)) != 1:
        raise DurabilityUnavailable(
            "needs the server's append-only file (appendonly yes); it is off"
        )
    try:
        fsync = _config_value(await run("CONFIG", "GET", "appendfsync"), "appendfsync")
    except ResponseError as exc:  # CONFIG renamed or not allowed (managed services)
        return [
            f"cannot read appendfsync ({exc}): WAITAOF proves the fsync only with "
            "appendfsync always; make sure the server runs with it"
        ]
    if fsync == "always":
        return []
    if may_configure:
        await run("CONFIG", "SET", "appendfsync", "always")
        return [f"the embedded server now fsyncs before it answers (appendfsync {fsync} -> always)"]
    raise DurabilityUnavailable(
        f"needs appendfsync always on the server (it has {fsync}): with {fsync} an enqueue "
        "would wait for the next once-a-second fsync, and some servers (Valkey to at least "
        "9.1.2, Redis 7.4 before redis/redis#13793) answer WAITAOF before that fsync"
    )


def _config_value(reply: Any, name: str) -> str:
    """One value of a CONFIG GET reply (a dict, or a flat list on some clients/protocols)."""
    if isinstance(reply, dict):
        value = reply.get(name, reply.get(name.encode(), ""))
    else:
        pairs = list(reply or [])
        value = pairs[1] if len(pairs) >= 2 else ""
    return text(value)
