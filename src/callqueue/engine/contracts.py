"""The Python<->Lua contract of every engine script: the names of its KEYS and ARGV, in order.

Each ``lua/<name>.lua`` reads KEYS and ARGV by position; this module is the one place those
positions are named. Call sites build their lists from a declaration (``Contract.keys_of``,
``Contract.pack``, or a per-queue template made once with them), and ``scripts.Library`` checks
every declaration against its script's header and reads when the library is built, so a
mismatch fails at start-up rather than as a wrong argument in production.

Key names are ``QueueKeys`` attributes (``prefix``, ``campaign_index``, ...), except the names
listed in ``PER_CALL_KEYS``, which a call site supplies (a call's own key, a batch's set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callqueue.engine.keys import QueueKeys

ScriptArg = str | int | float | bytes

#: Phase of an attempt per carrier event: an attempt's phase never moves backwards. The Lua
#: gets it as its PHASE table (scripts.py); the event writer merges events by it.
PHASE: dict[str, int] = {"accepted": 1, "ringing": 1, "answered": 2, "ended": 3}

#: Keys a call site supplies itself: they depend on the call, not only on the queue.
PER_CALL_KEYS = frozenset({"call", "batch_or_seq"})


@dataclass(frozen=True, slots=True)
class Block:
    """A run of ARGV read as one unit by a Lua helper (the settle policy: ``parse_policy``)."""

    name: str
    names: tuple[str, ...]
    #: The Lua helper that reads the run from its first index (``helper(ARGV, i)``).
    reader: str


#: The settle policy every script that may end an attempt receives (parse_policy in _lib.lua).
POLICY = Block(
    "policy",
    (
        "retention_ms",
        "hist_limit",
        "max_live",
        "base_ms",
        "factor",
        "cap_ms",
        "jitter",
        "retry_on",
        "rand",
        "backoff_ms",
    ),
    "parse_policy",
)


@dataclass(frozen=True, slots=True)
class Contract:
    """One script's KEYS and ARGV. ``key_group``/``argv_group``: names repeated per item after
    the fixed ones (enqueue's calls, event's events); ``argv_rest``: a variable tail whose shape
    the script's header describes (an op's arguments, a list of numbers)."""

    name: str
    keys: tuple[str, ...]
    argv: tuple[str | Block, ...]
    key_group: tuple[str, ...] = ()
    argv_group: tuple[str, ...] = ()
    argv_rest: str = ""

    @property
    def argc(self) -> int:
        """How many ARGV the fixed part takes (a block counts its width)."""
        return sum(len(a.names) if isinstance(a, Block) else 1 for a in self.argv)

    @property
    def variadic_keys(self) -> bool:
        return bool(self.key_group)

    @property
    def variadic_argv(self) -> bool:
        return bool(self.argv_group or self.argv_rest)

    def blocks(self) -> list[tuple[int, Block]]:
        """The blocks of ARGV with their first index (1-based, as Lua counts)."""
        out, i = [], 1
        for a in self.argv:
            if isinstance(a, Block):
                out.append((i, a))
                i += len(a.names)
            else:
                i += 1
        return out

    def key_index(self, name: str) -> int:
        """0-based position of key ``name`` in the fixed keys."""
        return self.keys.index(name)

    def arg_index(self, name: str) -> int:
        """0-based position of the ARGV ``name`` (a block by its name: its first element)."""
        i = 0
        for a in self.argv:
            label = a.name if isinstance(a, Block) else a
            if label == name:
                return i
            i += len(a.names) if isinstance(a, Block) else 1
        raise KeyError(f"{self.name}: no ARGV named {name!r}")

    def keys_of(self, qk: QueueKeys, **given: str) -> list[str]:
        """The fixed keys for queue ``qk``: its attributes, or ``given`` for per-call names."""
        out = []
        for name in self.keys:
            if name in given:
                out.append(given[name])
            elif name in PER_CALL_KEYS:
                raise TypeError(f"{self.name}: key {name!r} must be given by the call site")
            else:
                out.append(getattr(qk, name))
        if extra := set(given) - set(self.keys):
            raise TypeError(f"{self.name}: no keys named {sorted(extra)}")
        return out

    def pack(self, values: Mapping[str, ScriptArg | Sequence[ScriptArg]]) -> list[ScriptArg]:
        """The fixed ARGV, positionally from the declaration; a block's value is its list."""
        out: list[ScriptArg] = []
        for a in self.argv:
            if isinstance(a, Block):
                block = values[a.name]
                if isinstance(block, str | bytes | int | float) or len(block) != len(a.names):
                    raise TypeError(f"{self.name}: {a.name} takes {len(a.names)} values")
                out += block
            else:
                value = values[a]
                if not isinstance(value, str | bytes | int | float):
                    raise TypeError(f"{self.name}: {a} takes one value")
                out.append(value)
        names = {a.name if isinstance(a, Block) else a for a in self.argv}
        if extra := set(values) - names:
            raise TypeError(f"{self.name}: no ARGV named {sorted(extra)}")
        return out


ENQUEUE = Contract(
    "enqueue",
    keys=(
        "prefix",
        "campaign_index",
        "scheduled",
        "seq",
        "stats",
        "batch_or_seq",
        "dnc",
        "control",
        "campaigns",
    ),
    argv=("channel", "batch_ttl_ms", "has_batch", "batch_id", "first_seq", "take"),
    key_group=("call",),
    argv_group=(
        "call_id",
        "spec",
        "priority_rank",
        "due_ms",
        "max_retries",
        "max_duration_s",
        "body_hash",
        "phone",
        "campaign_id",
        "time_zones",
        "webhook_url",
    ),
)

CLAIM = Contract(
    "claim",
    keys=(
        "prefix",
        "campaign_index",
        "scheduled",
        "live",
        "leases",
        "rate_log",
        "stats",
        "dials_per_second",
        "control",
        "call_prefix",
        "dnc",
        "finished",
        "dead",
        "lines",
    ),
    argv=(
        "want",
        "max_live",
        "rate_limit",
        "window_ms",
        "lease_ms",
        "token_prefix",
        "hist_limit",
        "promote_limit",
        "ring_grace_ms",
        "default_max_duration_ms",
        "retention_ms",
        "rate_margin_ms",
        "one_line",
        "line_wait_ms",
        "day_cap",
        "clock_ms",
        "worker",
    ),
)

EVENT = Contract(
    "event",
    keys=(
        "prefix",
        "campaign_index",
        "live",
        "leases",
        "scheduled",
        "finished",
        "dead",
        "stats",
        "control",
    ),
    argv=("channel", POLICY),
    key_group=("call",),
    argv_group=(
        "call_id",
        "attempt",
        "kind",
        "token",
        "carrier_call_id",
        "outcome",
        "hangup_cause",
        "duration_s",
        "bill_duration_s",
        "answered_ms",
        "ended_ms",
        "rand",
        "carrier_ids",
    ),
)

RELEASE = Contract(
    "release",
    keys=(
        "call",
        "prefix",
        "campaign_index",
        "scheduled",
        "live",
        "leases",
        "finished",
        "dead",
        "stats",
        "control",
        "rate_log",
    ),
    argv=(
        "call_id",
        "attempt",
        "token",
        "delay_ms",
        "reason",
        "channel",
        POLICY,
        "throttle",
        "unsent",
        "pacing_interval_ms",
    ),
)

CANCEL = Contract(
    "cancel",
    keys=(
        "call",
        "prefix",
        "scheduled",
        "finished",
        "dead",
        "stats",
        "campaign_index",
        "control",
    ),
    argv=("call_id", "reason", "channel", POLICY),
)

REAP = Contract(
    "reap",
    keys=(
        "live",
        "leases",
        "scheduled",
        "finished",
        "dead",
        "stats",
        "prefix",
        "workers",
        "dials_per_second",
        "call_prefix",
        "campaign_index",
        "control",
        "campaigns",
        "campaigns_done",
        "worker_info",
    ),
    argv=(
        "limit",
        "worker",
        "worker_ttl_ms",
        "channel",
        POLICY,
        "leaving",
        "calls_end_with_worker",
    ),
)

CONTROL = Contract("control", keys=("control",), argv=("field", "value", "channel"))

DNC = Contract("dnc", keys=("dnc",), argv=("op",), argv_rest="numbers")

CAMPAIGN = Contract(
    "campaign",
    keys=(
        "prefix",
        "campaign_index",
        "control",
        "campaigns",
        "scheduled",
        "finished",
        "dead",
        "stats",
    ),
    argv=("campaign_id", "op", "channel", "retention_ms", "hist_limit"),
    argv_rest="the op's arguments",
)

ZONES = Contract("zones", keys=("zone_offsets",), argv=(), argv_group=("zone", "entry"))

HOOKS = Contract(
    "hooks",
    keys=("hooks", "hooks_retry", "hooks_failed", "hooks_failed_index", "stats"),
    argv=("op",),
    argv_rest="the op's arguments",
)

RECHECK = Contract(
    "recheck",
    keys=("prefix", "campaign_index", "control", "scheduled", "call_prefix"),
    argv=("campaign_id", "limit", "hist_limit", "channel", "clock_ms"),
)

#: Every script of the library, by name (the order of the library's functions).
CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in (
        ENQUEUE,
        CLAIM,
        EVENT,
        RELEASE,
        CANCEL,
        REAP,
        CONTROL,
        DNC,
        CAMPAIGN,
        ZONES,
        HOOKS,
        RECHECK,
    )
}
