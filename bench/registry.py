"""Targets and the registry of sub-benchmarks.

A sub-benchmark is an ``async`` function taking a :class:`BenchContext` and returning a
:class:`Measured`; it is registered with :func:`benchmark`, naming the result keys it produces.
Keys with a target in :data:`TARGETS` are judged (pass/MISS); other keys are informational.

To add one (an HTTP benchmark, say), write the function in any ``bench/`` module, decorate it,
and import that module in ``bench/run.py``.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal[">=", "<="]
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Target:
    op: Op
    value: float

    def met(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:,g}"


TARGETS: dict[str, Target] = {
    "enqueue_bulk_per_s": Target(">=", 50_000),
    "enqueue_single_per_s": Target(">=", 5_000),
    "dispatch_per_s": Target(">=", 5_000),
    "pickup_p50_ms": Target("<=", 2),
    "pickup_p99_ms": Target("<=", 10),
    "schedule_lateness_p50_ms": Target("<=", 5),
    "schedule_lateness_p99_ms": Target("<=", 20),
    "rate_limit_max_in_window": Target("<=", 50),
    "rate_limit_utilization": Target(">=", 0.97),
    "concurrency_max_live": Target("<=", 20),
    "concurrency_utilization": Target(">=", 0.90),
    "redis_bytes_per_call": Target("<=", 1_000),
    "dispatch_per_s_at_1m_over_1k": Target(">=", 0.8),
    # Over real HTTP to a `callqueue api` process (bench/http.py).
    "http_bulk_enqueue_per_s": Target(">=", 20_000),
    "http_queue_p99_ms": Target("<=", 20),
    # kill -9 of a worker or of `callqueue up` (bench/recovery.py): WORKER_TTL (10 s) + 2 s.
    "recovery_after_kill_s": Target("<=", 12),
}


@dataclass(slots=True)
class BenchContext:
    """What every sub-benchmark gets."""

    quick: bool = False
    # Filled in by the benchmarks: the server version seen (for the report's meta).
    server_versions: set[str] = field(default_factory=set)

    def n(self, full: int, quick: int) -> int:
        """A size: ``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full


@dataclass(slots=True)
class Measured:
    """A sub-benchmark's result: key -> number, the sizes it used, and remarks."""

    values: dict[str, float]
    n: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


BenchFn = Callable[[BenchContext], Awaitable[Measured]]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    keys: tuple[str, ...]
    fn: BenchFn
    description: str


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, *keys: str) -> Callable[[BenchFn], BenchFn]:
    """Registers a sub-benchmark under ``name``, producing ``keys`` (in display order)."""

    def register(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Benchmark(name, keys, fn, doc[0] if doc else "")
        return fn

    return register


def select(only: list[str] | None) -> list[Benchmark]:
    """Benchmarks named in ``only`` (by benchmark name or by any key they produce), in
    registration order; all of them when ``only`` is empty."""
    if not only:
        return list(REGISTRY.values())
    wanted = set(only)
    chosen = [b for b in REGISTRY.values() if b.name in wanted or wanted & set(b.keys)]
    known = set(REGISTRY) | {k for b in REGISTRY.values() for k in b.keys}
    unknown = sorted(wanted - known)
    if unknown:
        raise KeyError(
            f"unknown benchmark or key: {', '.join(unknown)}; choose from: "
            + ", ".join(sorted(known))
        )
    return chosen
