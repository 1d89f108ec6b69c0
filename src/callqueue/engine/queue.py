"""The call queue: every state change is one Lua script (see ``lua/``); this module only
packs arguments and unpacks replies."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from callqueue.engine.codec import decode_record, decode_spec, encode_spec, text
from callqueue.engine.connection import AsyncClient
from callqueue.engine.contracts import (
    CANCEL,
    CLAIM,
    CONTROL,
    DNC,
    ENQUEUE,
    EVENT,
    REAP,
    RELEASE,
    ZONES,
)
from callqueue.engine.durability import DurabilityOptions, NotDurable, check_server, run_durably
from callqueue.engine.grouping import SingleEnqueues
from callqueue.engine.keys import QueueKeys
from callqueue.engine.options import QueueOptions
from callqueue.engine.scripts import Script, ScriptArg, ScriptError, run_pipeline, scripts
from callqueue.models import (
    CallRecord,
    CallSpec,
    CallStatus,
    CarrierEvent,
    ClaimBlock,
    ClaimedCall,
    ClaimResult,
    EnqueueResult,
    EnqueueState,
    EventResult,
    Priority,
)
from callqueue.models import (
    EndFacts as EndFacts,  # re-exported: it lived here before models
)
from callqueue.windows import zone_offset_entry

BULK_BATCH = 1000
SCRIPTS_IN_FLIGHT = 3  # bulk enqueue scripts sent and not yet answered
EVENTS_PER_SCRIPT = 100

# Where the per-call values go in the lists a queue builds once from the declarations.
_CLAIM_WANT = CLAIM.arg_index("want")
_CLAIM_TOKEN = CLAIM.arg_index("token_prefix")
_CLAIM_CLOCK = CLAIM.arg_index("clock_ms")
_CLAIM_WORKER = CLAIM.arg_index("worker")
_ENQUEUE_BATCH_KEY = ENQUEUE.key_index("batch_or_seq")
_ENQUEUE_HAS_BATCH = ENQUEUE.arg_index("has_batch")
_ENQUEUE_BATCH_ID = ENQUEUE.arg_index("batch_id")
_ENQUEUE_FIRST_SEQ = ENQUEUE.arg_index("first_seq")
_ENQUEUE_TAKE = ENQUEUE.arg_index("take")


@dataclass(frozen=True, slots=True)
class CancelResult:
    code: str  # cancelled | hangup | final | not_found
    status: CallStatus | None
    attempt: int
    carrier_call_id: str


@dataclass(frozen=True, slots=True)
class ReapResult:
    lapsed_leases: int
    lost_attempts: int
    next_expiry_ms: int | None
    server_now_ms: int
    orphans_settled: int = 0  # attempts of gone workers, ended with them (simulator)
    orphans_held: int = 0  # attempts of gone workers left to their carrier's callbacks


@dataclass(slots=True)
class EventCall:
    """One carrier event for one attempt, sent alone or with others in a pipeline."""

    call_id: str
    attempt: int
    kind: str
    token: str = ""
    carrier_call_id: str = ""
    end: EndFacts | None = None
    answered_ms: int | None = None
    #: A carrier callback's ids for its call: once the attempt's carrier id is known it must be
    #: one of them, else the event changes nothing (code ``mismatch``). Empty: no check.
    carrier_ids: tuple[str, ...] = ()


#: One call for enqueue.lua: its spec, its key and its arguments.
_Row = tuple[CallSpec, str, list[ScriptArg]]


def problems_in(control: dict[Any, Any]) -> dict[str, str]:
    """The problems reported to the control hash (report_problem), by part."""
    out = {}
    for key, value in control.items():
        name, reason = text(key), text(value)
        if name.endswith("_error") and reason:
            out[name.removesuffix("_error")] = reason
    return out


class CallQueue:
    """One named queue on one Redis (or Redis Cluster: every key shares one hash tag)."""

    def __init__(
        self,
        client: AsyncClient,
        name: str = "default",
        options: QueueOptions | None = None,
        durability: DurabilityOptions | None = None,
    ):
        self.client = client
        self.keys = QueueKeys(name)
        self.options = options or QueueOptions()
        # What an enqueue waits for before it answers (ENQUEUE_DURABILITY; see durability.py).
        self.durability = durability or DurabilityOptions()
        self._scripts = scripts()
        self._limit, self._window_ms = self.options.rate_window()
        self._policy = self._static_policy()
        self._build_contract_lists()
        self._zones_known: set[str] = set()  # time zones whose offsets this process recorded
        self._singles: SingleEnqueues[_Row, EnqueueResult] = SingleEnqueues(self._enqueue_batch)

    @property
    def name(self) -> str:
        return self.keys.queue

    async def prepare(self) -> None:
        """Loads the scripts (optional: they load themselves on first use)."""
        await self._scripts.load_all(self.client)

    async def check_durability(self, may_configure: bool = False) -> list[str]:
        """Raises DurabilityUnavailable when the server cannot do this queue's durability
        mode; returns remarks worth logging. ``may_configure``: the server is the embedded
        one, which ``aof`` may switch to fsync before it answers."""
        return await check_server(
            self.client, self.durability, self.keys.prefix, may_configure=may_configure
        )

    def _build_contract_lists(self) -> None:
        """The keys and arguments of the hot scripts that never change for this queue, built
        once from their declarations (contracts.py); a call copies them and fills in its own."""
        k, o = self.keys, self.options
        self._claim_keys = CLAIM.keys_of(k)
        self._claim_args = CLAIM.pack(
            {
                "want": 0,
                "max_live": o.max_live_calls,
                "rate_limit": self._limit,
                "window_ms": self._window_ms,
                "lease_ms": int(o.dial_lease_s * 1000),
                "token_prefix": "",
                "hist_limit": o.history_limit,
                "promote_limit": o.promote_limit,
                "ring_grace_ms": int((o.dial_lease_s + o.ring_timeout_s + o.grace_s) * 1000),
                "default_max_duration_ms": o.default_max_duration_s * 1000,
                "retention_ms": o.retention_s * 1000,
                "rate_margin_ms": o.rate_margin_ms,
                "one_line": "1" if o.one_call_per_number else "0",
                "line_wait_ms": int(o.line_wait_s * 1000),
                "day_cap": o.max_attempts_per_number_per_day,
                "clock_ms": 0,
                "worker": "",
            }
        )
        self._event_keys = EVENT.keys_of(k)
        # Events take no jitter from the block: each event carries its own rand.
        self._event_args = EVENT.pack({"channel": k.wake_channel, "policy": self._policy_args(0.0)})
        self._enqueue_keys = ENQUEUE.keys_of(k, batch_or_seq=k.seq)
        self._enqueue_args = ENQUEUE.pack(
            {
                "channel": k.wake_channel,
                # A batch's index outlives its calls: retention after the last enqueue, plus
                # 30 days.
                "batch_ttl_ms": (o.retention_s + 30 * 86_400) * 1000,
                "has_batch": "0",
                "batch_id": "",
                "first_seq": 0,
                "take": 0,
            }
        )

    # -- settle policy, passed to every script that may end an attempt ----------------------
    def _policy_args(self, rand: float | None = None) -> list[ScriptArg]:
        """The settle policy block (see parse_policy in lua/_lib.lua); only ``rand`` varies."""
        head, tail = self._policy
        return [*head, random.random() if rand is None else rand, tail]

    def _static_policy(self) -> tuple[list[ScriptArg], ScriptArg]:
        o, r = self.options, self.options.retry
        head: list[ScriptArg] = [
            o.retention_s * 1000,
            o.history_limit,
            o.max_live_calls,
            int(r.base_delay_s * 1000),
            r.factor,
            int(r.max_delay_s * 1000),
            r.jitter,
            ",".join([*sorted(r.retry_on), *(["+machine_done"] if r.machine_is_done else [])])
            or "-",
        ]
        return head, int(o.rate_backoff_s * 1000)

    # -- enqueue ----------------------------------------------------------------------------
    def _enqueue_row(self, spec: CallSpec) -> _Row:
        """One call's key and its 11 arguments to enqueue.lua (raises on a malformed spec)."""
        args: list[ScriptArg] = [
            spec.call_id,
            encode_spec(spec),
            spec.priority.rank,
            spec.scheduled_at_ms or 0,
            "" if spec.max_retries is None else spec.max_retries,
            spec.max_duration_s or 0,
            spec.body_hash,
            spec.phone_number,
            spec.campaign_id or "",
            ",".join(spec.time_zones),
            spec.webhook_url or "",
        ]  # fmt: skip
        return spec, self.keys.call(spec.call_id), args

    def _enqueue_call(
        self, rows: Sequence[_Row], batch_id: str | None, seq: int = 0, take: int = 0
    ) -> tuple[list[str], list[ScriptArg]]:
        """enqueue.lua's keys and arguments. ``seq``: the arrival number of the first call
        (0: the script takes ``take`` numbers, or one per call)."""
        keys = self._enqueue_keys.copy()
        args = self._enqueue_args.copy()
        if batch_id:
            keys[_ENQUEUE_BATCH_KEY] = self.keys.batch(batch_id)
            args[_ENQUEUE_HAS_BATCH] = "1"
            args[_ENQUEUE_BATCH_ID] = batch_id
        args[_ENQUEUE_FIRST_SEQ] = seq
        args[_ENQUEUE_TAKE] = take or len(rows)
        for _, key, row_args in rows:
            keys.append(key)
            args += row_args
        return keys, args

    @staticmethod
    def _enqueue_results(specs: Sequence[CallSpec], reply: list[Any]) -> list[EnqueueResult]:
        """Decodes enqueue.lua's compact reply: one letter per call, then the statuses of
        the calls that already existed."""
        codes = text(reply[1])
        existing = iter(reply[3:])
        out = []
        for spec, code in zip(specs, codes, strict=True):
            if code == "q":
                out.append(EnqueueResult(spec.call_id, EnqueueState.CREATED, CallStatus.QUEUED))
            elif code == "s":
                out.append(EnqueueResult(spec.call_id, EnqueueState.CREATED, CallStatus.SCHEDULED))
            elif code == "d":
                out.append(EnqueueResult(spec.call_id, EnqueueState.DNC, None))
            elif code == "x":
                out.append(EnqueueResult(spec.call_id, EnqueueState.CAMPAIGN_CANCELLED, None))
            else:
                state = EnqueueState.EXISTS if code == "e" else EnqueueState.CONFLICT
                out.append(EnqueueResult(spec.call_id, state, CallStatus(text(next(existing)))))
        return out

    async def register_zones(self, zones: Iterable[str], now_ms: int | None = None) -> None:
        """Records the UTC offsets of ``zones`` around now: the claim checks calling windows
        with them (it has no time-zone database)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        args: list[ScriptArg] = []
        for zone in sorted(set(zones)):
            args += [zone, zone_offset_entry(zone, now)]
        if args:
            await self._scripts.zones(self.client, ZONES.keys_of(self.keys), args)
        self._zones_known.update(zones)

    async def refresh_zones(self, now_ms: int | None = None) -> int:
        """Renews every recorded zone's offsets (workers do this periodically: an entry knows
        the zone's next change only); returns how many zones there are."""
        zones = [text(z) for z in await self.client.hkeys(self.keys.zone_offsets)]
        await self.register_zones(zones, now_ms)
        return len(zones)

    async def _know_zones(self, specs: Sequence[CallSpec]) -> None:
        new = {z for spec in specs for z in spec.time_zones} - self._zones_known
        if new:
            await self.register_zones(new)

    async def enqueue(self, spec: CallSpec) -> EnqueueResult:
        """Queues one call. Concurrent callers share scripts (see ``SingleEnqueues``): a call
        that finds no script of its own kind waiting goes out at once, the others wait for the
        next and go out together, each keeping its own answer."""
        row = self._enqueue_row(spec)
        # A malformed call fails here, alone, not the group it would share a script with (the
        # bulk path needs no such check: its scripts are its own).
        for value in row[2]:
            if not isinstance(value, str | bytes | int | float):
                raise TypeError(f"call {spec.call_id!r}: {value!r} cannot be sent to Redis")
        await self._know_zones([spec])
        try:
            return await self._singles.submit(row, spec.batch_id)
        except NotDurable as exc:  # one failure for the whole group: each caller names its own
            raise exc.naming([spec.call_id]) from None

    async def _enqueue_batch(self, rows: Sequence[_Row]) -> list[EnqueueResult]:
        """One enqueue script for ``rows``, which share a batch id (or have none)."""
        keys, args = self._enqueue_call(rows, rows[0][0].batch_id)
        reply = await self._run_enqueue(keys, args)
        return self._enqueue_results([spec for spec, _, _ in rows], reply)

    def _run_enqueue(self, keys: list[str], args: list[ScriptArg]) -> Awaitable[Any]:
        """enqueue.lua, followed by its durability wait when the mode has one. (Returns the
        awaitable itself: no extra coroutine on the hot path.)"""
        if self.durability.waits:
            return run_durably(self.client, self._scripts.enqueue, keys, args, self.durability)
        return self._scripts.enqueue(self.client, keys, args)

    async def enqueue_many(
        self, specs: Sequence[CallSpec], batch_id: str | None = None, batch_size: int = BULK_BATCH
    ) -> list[EnqueueResult]:
        """Bulk enqueue: one script per ``batch_size`` calls.

        Each batch is atomic; the same call id twice (within or across requests) is one call.
        The first script takes the arrival numbers of all the calls, so they keep their input
        order (FIFO within a priority); the others then go out a few at a time, so packing the
        next overlaps the server running the previous ones. With a durability mode, each
        script is followed by its own wait (one per ``batch_size`` calls).
        """
        try:
            return await self._enqueue_chunks(specs, batch_id, batch_size)
        except NotDurable as exc:
            raise exc.naming(batch_id=batch_id) from None

    async def _enqueue_chunks(
        self, specs: Sequence[CallSpec], batch_id: str | None, batch_size: int
    ) -> list[EnqueueResult]:
        chunks = [specs[i : i + batch_size] for i in range(0, len(specs), batch_size)]
        if not chunks:
            return []
        await self._know_zones(specs)
        keys, args = self._enqueue_call(
            [self._enqueue_row(s) for s in chunks[0]], batch_id, take=len(specs)
        )
        reply = await self._run_enqueue(keys, args)
        first_seq = int(reply[2])
        results = self._enqueue_results(chunks[0], reply)
        gate = asyncio.Semaphore(SCRIPTS_IN_FLIGHT)

        async def send(index: int, chunk: Sequence[CallSpec]) -> list[EnqueueResult]:
            # Packed only once a slot is free: packing is synchronous, and packing every chunk
            # up front would keep the event loop from writing the first ones to the server.
            async with gate:
                rows = [self._enqueue_row(s) for s in chunk]
                keys, args = self._enqueue_call(rows, batch_id, seq=first_seq + index)
                reply = await self._run_enqueue(keys, args)
            return self._enqueue_results(chunk, reply)

        rest = [send(i * batch_size, c) for i, c in enumerate(chunks) if i > 0]
        for part in await asyncio.gather(*rest):
            results += part
        return results

    # -- claim ------------------------------------------------------------------------------
    async def claim(self, want: int, at_ms: int | None = None, worker_id: str = "") -> ClaimResult:
        """Up to ``want`` calls to dial now, owned by ``worker_id`` (see ``reap``). ``at_ms``:
        decide as if the time were that (epoch ms) instead of the server clock's - for tests of
        calling windows."""
        args = self._claim_args.copy()
        args[_CLAIM_WANT] = want
        args[_CLAIM_TOKEN] = secrets.token_hex(6) + ":"
        args[_CLAIM_CLOCK] = at_ms or 0
        args[_CLAIM_WORKER] = worker_id
        reply = await self._scripts.claim(self.client, self._claim_keys, args)
        now = int(reply[0])
        calls = []
        for i in range(4, len(reply), 4):
            call_id = text(reply[i])
            spec = decode_spec(call_id, reply[i + 3], Priority.NORMAL)
            calls.append(ClaimedCall(call_id, int(reply[i + 1]), text(reply[i + 2]), spec, now))
        wait, due = int(reply[2]), int(reply[3])
        return ClaimResult(
            calls=calls,
            blocked=ClaimBlock(text(reply[1])),
            wait_ms=wait if wait >= 0 else None,
            next_due_ms=due if due >= 0 else None,
            server_now_ms=now,
        )

    # -- events -----------------------------------------------------------------------------
    def event_call(
        self,
        call_id: str,
        attempt: int,
        kind: CarrierEvent | str,
        *,
        token: str = "",
        carrier_call_id: str = "",
        end: EndFacts | None = None,
        answered_ms: int | None = None,
        carrier_ids: tuple[str, ...] = (),
    ) -> EventCall:
        return EventCall(
            call_id, attempt, str(kind), token, carrier_call_id, end, answered_ms, carrier_ids
        )

    def _event_batch(
        self, events: Sequence[EventCall]
    ) -> tuple[Script, list[str], list[ScriptArg]]:
        """One event.lua run for ``events`` (applied in order, each as if alone)."""
        k = self.keys
        keys = self._event_keys.copy()
        args = self._event_args.copy()
        for ev in events:
            e = ev.end
            answered = (
                ev.answered_ms if ev.answered_ms is not None else (e.answered_ms if e else None)
            )
            keys.append(k.call(ev.call_id))
            ids = " ".join(ev.carrier_ids)
            if e is None:
                args += [
                    ev.call_id, ev.attempt, ev.kind, ev.token, ev.carrier_call_id,
                    "", "", "", "", "" if answered is None else answered, "", 0, ids,
                ]  # fmt: skip
            else:
                args += [
                    ev.call_id,
                    ev.attempt,
                    ev.kind,
                    ev.token,
                    ev.carrier_call_id or e.carrier_call_id,
                    e.outcome.value,
                    e.hangup_cause,
                    "" if e.duration_s is None else e.duration_s,
                    "" if e.bill_duration_s is None else e.bill_duration_s,
                    "" if answered is None else answered,
                    "" if e.ended_ms is None else e.ended_ms,
                    random.random(),
                    ids,
                ]
        return self._scripts.event, keys, args

    @staticmethod
    def _event_results(reply: list[Any]) -> list[EventResult]:
        out = []
        for i in range(0, len(reply), 3):
            code, status = text(reply[i]), text(reply[i + 1])
            if code == "error":  # a refused move: a bug, reported for this event alone
                out.append(EventResult(applied=False, code="error", error=f"event: {status}"))
                continue
            out.append(
                EventResult(
                    applied=code == "ok",
                    code=code,
                    status=CallStatus(status) if status else None,
                    cancel_requested=text(reply[i + 2]) == "1",
                )
            )
        return out

    async def event(
        self, call_id: str, attempt: int, kind: CarrierEvent | str, **kw: Any
    ) -> EventResult:
        script, keys, args = self._event_batch([self.event_call(call_id, attempt, kind, **kw)])
        result = self._event_results(await script(self.client, keys, args))[0]
        if result.error:
            raise ScriptError(result.error)
        return result

    async def events(self, calls: Iterable[EventCall]) -> list[EventResult]:
        """Many events in one round trip: one script run per ``EVENTS_PER_SCRIPT`` events
        (a run blocks the server, so it is kept short), in order."""
        events = list(calls)
        if not events:
            return []
        batches = [
            self._event_batch(events[i : i + EVENTS_PER_SCRIPT])
            for i in range(0, len(events), EVENTS_PER_SCRIPT)
        ]
        out: list[EventResult] = []
        for reply in await run_pipeline(self.client, batches):
            out += self._event_results(reply)
        return out

    async def accepted(self, call: ClaimedCall, carrier_call_id: str) -> EventResult:
        return await self.event(
            call.call_id,
            call.attempt,
            CarrierEvent.ACCEPTED,
            token=call.token,
            carrier_call_id=carrier_call_id,
        )

    async def ambiguous(self, call: ClaimedCall) -> EventResult:
        """The dial request may have reached the carrier: keep the slot, wait for word."""
        return await self.event(call.call_id, call.attempt, "ambiguous", token=call.token)

    async def ended(self, call_id: str, attempt: int, facts: EndFacts) -> EventResult:
        return await self.event(call_id, attempt, CarrierEvent.ENDED, end=facts)

    async def release(
        self,
        call: ClaimedCall,
        reason: str,
        delay_ms: int = 0,
        *,
        throttle: bool = False,
        unsent: bool = False,
    ) -> EventResult:
        """The carrier refused the request (no call placed): back to the queue, attempt unused.

        ``throttle``: the carrier pushed back (429, concurrency breach), so the global dial rate
        backs off for ``rate_backoff_s``. ``unsent``: the request never left this process, so
        its dial-rate token is given back as well.
        """
        k = self.keys
        args = RELEASE.pack(
            {
                "call_id": call.call_id,
                "attempt": call.attempt,
                "token": call.token,
                "delay_ms": delay_ms,
                "reason": reason,
                "channel": k.wake_channel,
                "policy": self._policy_args(),
                "throttle": "1" if throttle else "0",
                "unsent": "1" if unsent else "0",
                "pacing_interval_ms": (
                    (self._window_ms - self.options.rate_margin_ms) / self._limit
                    if self._limit
                    else 0
                ),
            }
        )
        reply = await self._scripts.release(
            self.client, RELEASE.keys_of(k, call=k.call(call.call_id)), args
        )
        return EventResult(
            applied=text(reply[0]) == "ok",
            code=text(reply[0]),
            status=CallStatus(text(reply[1])) if text(reply[1]) else None,
        )

    # -- cancel, reap, control ----------------------------------------------------------------
    async def cancel(self, call_id: str, reason: str = "cancelled by request") -> CancelResult:
        k = self.keys
        args = CANCEL.pack(
            {
                "call_id": call_id,
                "reason": reason,
                "channel": k.wake_channel,
                "policy": self._policy_args(),
            }
        )
        reply = await self._scripts.cancel(
            self.client, CANCEL.keys_of(k, call=k.call(call_id)), args
        )
        status = text(reply[1])
        return CancelResult(
            text(reply[0]), CallStatus(status) if status else None, int(reply[2]), text(reply[3])
        )

    async def reap(
        self,
        worker_id: str = "",
        worker_ttl_s: float | None = None,
        limit: int = 500,
        *,
        leaving: bool = False,
        calls_end_with_worker: bool = False,
    ) -> ReapResult:
        """Recovers lapsed leases and lost attempts, takes over the attempts of workers whose
        heartbeat lapsed, trims indexes, and renews (or, when ``leaving``, removes) this
        worker's heartbeat. ``calls_end_with_worker``: this worker's calls die with its
        process (the simulator's), so whoever takes them over settles them at once."""
        if worker_ttl_s is None:
            worker_ttl_s = self.options.worker_ttl_s
        k = self.keys
        args = REAP.pack(
            {
                "limit": limit,
                "worker": worker_id,
                "worker_ttl_ms": int(worker_ttl_s * 1000),
                "channel": k.wake_channel,
                "policy": self._policy_args(),
                "leaving": "1" if leaving else "0",
                "calls_end_with_worker": "1" if calls_end_with_worker else "0",
            }
        )
        reply = await self._scripts.reap(self.client, REAP.keys_of(k), args)
        expiry = int(reply[2])
        return ReapResult(
            int(reply[0]),
            int(reply[1]),
            expiry if expiry >= 0 else None,
            int(reply[3]),
            int(reply[4]),
            int(reply[5]),
        )

    async def dnc_add(self, numbers: Sequence[str]) -> int:
        """Puts E.164 numbers on the do-not-call list; returns how many were new."""
        if not numbers:
            return 0
        args = [*DNC.pack({"op": "add"}), *numbers]
        return int(await self._scripts.dnc(self.client, DNC.keys_of(self.keys), args))

    async def dnc_remove(self, numbers: Sequence[str]) -> int:
        """Takes numbers off the do-not-call list; returns how many were on it."""
        if not numbers:
            return 0
        args = [*DNC.pack({"op": "remove"}), *numbers]
        return int(await self._scripts.dnc(self.client, DNC.keys_of(self.keys), args))

    async def dnc_contains(self, numbers: Sequence[str]) -> list[bool]:
        if not numbers:
            return []
        return [bool(x) for x in await self.client.smismember(self.keys.dnc, list(numbers))]

    async def dnc_page(self, cursor: int = 0, count: int = 500) -> tuple[int, list[str]]:
        """One page of the do-not-call list (SSCAN): (next cursor, 0 at the end; numbers)."""
        nxt, members = await self.client.sscan(self.keys.dnc, cursor, count=count)
        return int(nxt), sorted(text(m) for m in members)

    async def set_paused(self, paused: bool) -> None:
        await self._control("paused", "1" if paused else "0")

    async def report_problem(self, part: str, reason: str) -> None:
        """Records why ``part`` (carrier, agent) stops dispatch ('' clears it) for /api/health."""
        await self._control(f"{part}_error", reason)

    async def _control(self, field: str, value: str) -> None:
        args = CONTROL.pack({"field": field, "value": value, "channel": self.keys.wake_channel})
        await self._scripts.control(self.client, CONTROL.keys_of(self.keys), args)

    async def problems(self) -> dict[str, str]:
        """What currently stops dispatch, by part (carrier, agent)."""
        return problems_in(await self.client.hgetall(self.keys.control))

    # -- reads (no state change) ----------------------------------------------------------------
    async def get(self, call_id: str) -> CallRecord | None:
        # redis-py types replies loosely (bytes | str); this client answers bytes.
        fields: dict[bytes, bytes] = await self.client.hgetall(self.keys.call(call_id))  # type: ignore[assignment]
        return decode_record(call_id, fields) if fields else None

    async def is_paused(self) -> bool:
        return text(await self.client.hget(self.keys.control, "paused") or "") == "1"

    async def live_ids(self) -> list[tuple[str, float]]:
        """Calls holding a live-call slot, with the end of their longest life (ms)."""
        rows: list[tuple[bytes, float]] = await self.client.zrange(  # type: ignore[assignment]
            self.keys.live, 0, -1, withscores=True
        )
        return [(text(member), score) for member, score in rows]

    async def dead_letter(self, limit: int = 100) -> list[str]:
        """Failed calls, most recent first (kept for RETENTION_SECONDS)."""
        return [text(m) for m in await self.client.zrevrange(self.keys.dead, 0, limit - 1)]

    async def records(self, call_ids: Sequence[str]) -> list[CallRecord]:
        """Several calls in one round trip; ids that expired meanwhile are left out."""
        if not call_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hgetall(self.keys.call(call_id))
        rows = await pipe.execute()
        return [decode_record(i, f) for i, f in zip(call_ids, rows, strict=True) if f]
