"""What a chaos run proves, read from the carrier's side: a ledger of every dial and every end
(the simulator's ``SIM_LEDGER`` file, or the fake Plivo process's) and the faults injected.

:func:`judge` checks the promises the queue makes under fire:

* no attempt (call id, attempt number) is dialed twice;
* nobody whose call completed (or was answered by a machine) is dialed again;
* nobody is on two live calls at once (a new attempt starts once the previous one is over);
* live calls never exceed the cap, and dials in any sliding second never exceed the limit;
* after each fault, dialing is back at the full rate within its target.

A call that was live in a process that was killed ends at the kill (a simulated call dies with
its process); any other call with no end in the ledger is counted live for the longest a carrier
lets it last (ring timeout + max duration).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "DONE_OUTCOMES",
    "RECOVERY_WINDOW_S",
    "CarrierLedger",
    "Dial",
    "End",
    "Fault",
    "LedgerTail",
    "Limits",
    "RunReport",
    "full_rate",
    "judge",
    "recovery_after",
    "recovery_target",
    "render_table",
    "timeline",
    "write_results",
]

#: Outcomes after which the person must never be dialed again.
DONE_OUTCOMES = frozenset({"completed", "machine"})
#: Dialing is "back at the full rate" from the first moment after a fault from which the next
#: RECOVERY_WINDOW_S hold at least this share of the rate measured before the first fault.
FULL_RATE_SHARE = 0.8
RECOVERY_WINDOW_S = 2.0
#: Examples kept per violation kind in a report.
EXAMPLES = 5

Attempt = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Dial:
    call: str
    attempt: int
    t: float  # wall clock (time.time())
    source: str  # who placed it: a process id, or the fake carrier's name


@dataclass(frozen=True, slots=True)
class End:
    call: str
    attempt: int
    t: float
    outcome: str


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault as injected. ``kills`` names the source whose live calls died with it (a
    killed ``callqueue`` process running the simulator). ``outage_s`` is how long the part
    stayed away (until the restarted process or server answered, or the failover was done).
    ``recovery`` False: no recovery target (a setting such as latency)."""

    kind: str
    t: float
    kills: str | None = None
    outage_s: float = 0.0
    recovery: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    rate_per_s: float
    max_live: int
    worker_ttl_s: float
    carrier_life_s: float  # ring timeout + max duration: no carrier call lasts longer


class CarrierLedger:
    """Every dial, and the end of every attempt that ended, as the carrier saw them."""

    def __init__(self, dials: Iterable[Dial], ends: Iterable[End], slack_s: float = 0.0) -> None:
        self.dials = sorted(dials, key=lambda d: d.t)
        # How late a time in it may be (a carrier that stamps a request when it gets to it).
        self.slack_s = slack_s
        # Other lines about an attempt (the fake Plivo's callback deliveries), for reading.
        self.notes: dict[Attempt, list[dict[str, Any]]] = {}
        self.ends: dict[Attempt, End] = {}
        for end in ends:
            self.ends.setdefault((end.call, end.attempt), end)

    def about(self, call_id: str) -> list[str]:
        """What the carrier saw of one call, in time order."""
        dials = [(d.t, str(d)) for d in self.dials if d.call == call_id]
        ends = [(e.t, str(e)) for (c, _), e in self.ends.items() if c == call_id]
        notes = [(n["t"], str(n)) for (c, _), ns in self.notes.items() if c == call_id for n in ns]
        return [text for _, text in sorted([*dials, *ends, *notes])]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CarrierLedger:
        """A ledger file: the simulator's (``SIM_LEDGER``, shared by every process) or the
        fake Plivo process's, whose ``lag`` lines say how late its stamps may be."""
        dials, ends, lag = [], [], 0.0
        notes: dict[Attempt, list[dict[str, Any]]] = defaultdict(list)
        with open(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                r = orjson.loads(line)
                if r["ev"] == "dial":
                    dials.append(Dial(r["call"], int(r["attempt"]), r["t"], str(r["pid"])))
                elif r["ev"] == "end":
                    ends.append(End(r["call"], int(r["attempt"]), r["t"], r["outcome"]))
                elif r["ev"] == "lag":
                    lag = max(lag, float(r["lag"]))
                elif "call" in r:
                    notes[(r["call"], int(r["attempt"]))].append(r)
        ledger = cls(dials, ends, lag)
        ledger.notes = dict(notes)
        return ledger


class LedgerTail:
    """Reads a growing ledger file incrementally (a chaos test polls it often)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """The dials and ends added since the last call (all stay in ``records``)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        parsed = (orjson.loads(line) for line in lines if line.strip())
        new = [r for r in parsed if r["ev"] in ("dial", "end")]
        self.records.extend(new)
        return new

    def dials(self, source: int | None = None) -> int:
        return sum(
            1 for r in self.records if r["ev"] == "dial" and (source is None or r["pid"] == source)
        )

    def sources(self) -> set[int]:
        """The processes that placed calls."""
        return {int(r["pid"]) for r in self.records}

    def live(self, source: int | None = None) -> int:
        """Attempts dialed and not yet ended (``source``: by that process only)."""
        open_: set[tuple[str, int]] = set()
        for r in self.records:
            if source is not None and r["pid"] != source:
                continue
            key = (r["call"], r["attempt"])
            if r["ev"] == "dial":
                open_.add(key)
            else:
                open_.discard(key)
        return len(open_)


@dataclass
class RunReport:
    scenario: str
    faults: list[str]
    calls: int
    dials: int
    attempts_dialed_twice: int
    redials_after_done: int
    overlapping_attempts: int
    max_live: int
    max_live_cap: int
    max_dials_per_s: int
    rate_limit: float
    full_rate_per_s: float
    recovery_s: float | None  # the slowest recovery over the faults that have a target
    recovery_target_s: float | None
    not_terminal: int = 0
    timing_slack_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """Most events inside any half-open window [t, t + window)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect_left(times, t + window, lo=i) - i)
    return best


def _max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals live at one instant (an end before a start at the same time)."""
    points = sorted(p for s, e in intervals for p in ((s, 1), (e, -1)))
    live = best = 0
    for _, step in points:
        live += step
        best = max(best, live)
    return best


def _live_until(
    dial: Dial, ledger: CarrierLedger, kills: Mapping[str, float], life: float
) -> float:
    end = ledger.ends.get((dial.call, dial.attempt))
    if end is not None:
        return end.t
    killed = kills.get(dial.source)
    if killed is not None and killed >= dial.t:
        return killed
    return dial.t + life


def full_rate(times: Sequence[float], before: float, limit: float) -> float:
    """The dial rate of the steady run before ``before``: the median count over the whole
    seconds that start from the first dial + 1 s (ramp-up) and end by ``before``."""
    if not times:
        return 0.0
    counts = []
    start = times[0] + 1.0
    while start + 1.0 <= before:
        counts.append(bisect_left(times, start + 1.0) - bisect_left(times, start))
        start += 0.1
    if not counts:
        return float(limit)
    return float(statistics.median(counts))


def recovery_after(times: Sequence[float], fault: float, rate: float) -> float | None:
    """Seconds from ``fault`` to the start of the first RECOVERY_WINDOW_S, at or after the
    fault, that holds FULL_RATE_SHARE of ``rate`` dials a second; None if none did. The
    window spans two seconds so that a burst just after the fault (dials already granted)
    does not hide the dip that follows."""
    need = FULL_RATE_SHARE * rate * RECOVERY_WINDOW_S
    first = bisect_left(times, fault)
    for start in [fault, *times[first:]]:
        if bisect_left(times, start + RECOVERY_WINDOW_S) - bisect_left(times, start) >= need:
            return start - fault
    return None


def recovery_target(fault: Fault, worker_ttl_s: float) -> float:
    """Dialing must be back at the full rate this long after ``fault``: WORKER_TTL + 2 s,
    counted from when the part came back if it stayed away longer than WORKER_TTL."""
    return max(worker_ttl_s, fault.outage_s) + 2.0


def judge(
    scenario: str,
    ledger: CarrierLedger,
    people: Mapping[str, str],
    faults: Sequence[Fault],
    limits: Limits,
    not_terminal: Sequence[str] = (),
) -> RunReport:
    """Checks a finished run. ``people`` maps each call id to its phone number (a person may
    have several calls); ``not_terminal`` lists the calls the queue has not finished.
    When the ledger's times may be late (its ``slack_s``), dials per second are counted in
    windows that much shorter: what the dialer's own seconds can look like in such stamps."""
    slack_s = ledger.slack_s
    examples: dict[str, list[str]] = defaultdict(list)

    def example(kind: str, text: str) -> None:
        if len(examples[kind]) < EXAMPLES:
            examples[kind].append(text)

    kills = {f.kills: f.t for f in faults if f.kills is not None}
    times = [d.t for d in ledger.dials]

    seen: dict[Attempt, Dial] = {}
    twice = 0
    for d in ledger.dials:
        first = seen.setdefault((d.call, d.attempt), d)
        if first is not d:
            twice += 1
            example("attempt dialed twice", f"{d.call} #{d.attempt} at {first.t:.3f} and {d.t:.3f}")

    done_at: dict[str, End] = {}  # person -> their first completed/machine end
    for end in sorted(ledger.ends.values(), key=lambda e: e.t):
        person = people.get(end.call, end.call)
        if end.outcome in DONE_OUTCOMES:
            done_at.setdefault(person, end)
    redials = 0
    for d in ledger.dials:
        done = done_at.get(people.get(d.call, d.call))
        if done is not None and d.t > done.t:
            redials += 1
            example(
                "dialed again after completion",
                f"{d.call} #{d.attempt} dialed at {d.t:.3f}; {done.call} #{done.attempt} "
                f"ended {done.outcome} at {done.t:.3f}",
            )

    by_person: dict[str, list[tuple[float, float, Dial]]] = defaultdict(list)
    for d in ledger.dials:
        until = _live_until(d, ledger, kills, limits.carrier_life_s)
        by_person[people.get(d.call, d.call)].append((d.t, until, d))
    overlapping = 0
    for spans in by_person.values():
        spans.sort(key=lambda s: s[0])
        for (_, until, before), (start, _, after) in itertools.pairwise(spans):
            # 5 ms: the stamps of two processes (the end's and the next dial's) may disagree.
            if start < until - 0.005:
                overlapping += 1
                example(
                    "two live calls to one person",
                    f"{after.call} #{after.attempt} dialed at {start:.3f} while "
                    f"{before.call} #{before.attempt} was live until {until:.3f}",
                )
    max_live = _max_overlap((s, u) for spans in by_person.values() for s, u, _ in spans)
    max_rate = _max_in_window(times, 1.0 - slack_s)

    timed = [f for f in faults if f.recovery]
    first_fault = min((f.t for f in faults), default=times[-1] if times else 0.0)
    full = full_rate(times, first_fault, limits.rate_per_s)
    recovery: float | None = None
    target: float | None = None
    slow: list[str] = []
    for f in timed:
        took = recovery_after(times, f.t, full)
        own_target = recovery_target(f, limits.worker_ttl_s)
        if took is None or took > own_target:
            slow.append(f"{f.kind} at {f.t:.3f}: {'never' if took is None else f'{took:.1f}s'}"
                        f" (target {own_target:.1f}s)")  # fmt: skip
        if recovery is None or took is None or took > recovery:
            recovery, target = took, own_target
        if took is None:
            break

    report = RunReport(
        scenario=scenario,
        faults=[f.kind for f in faults],
        calls=len(people),
        dials=len(ledger.dials),
        attempts_dialed_twice=twice,
        redials_after_done=redials,
        overlapping_attempts=overlapping,
        max_live=max_live,
        max_live_cap=limits.max_live,
        max_dials_per_s=max_rate,
        rate_limit=limits.rate_per_s,
        full_rate_per_s=full,
        recovery_s=None if recovery is None else round(recovery, 2),
        recovery_target_s=target,
        not_terminal=len(not_terminal),
        timing_slack_s=round(slack_s, 3),
    )
    p = report.problems
    if not_terminal:
        p.append(f"{len(not_terminal)} calls not terminal, e.g. {list(not_terminal)[:EXAMPLES]}")
    if twice:
        p.append(f"{twice} attempts dialed twice")
    if redials:
        p.append(f"{redials} dials of people whose call had completed")
    if overlapping:
        p.append(f"{overlapping} dials while the same person's previous call was live")
    if limits.max_live and max_live > limits.max_live:
        p.append(f"{max_live} live calls at once, cap {limits.max_live}")
    if limits.rate_per_s and max_rate > limits.rate_per_s:
        p.append(f"{max_rate} dials in one second, limit {limits.rate_per_s:g}")
    if slow:
        p.append("slow recovery: " + "; ".join(slow))
    report.examples = dict(examples)
    return report


# -- output -------------------------------------------------------------------------------------
_COLUMNS = (
    ("scenario", 26),
    ("calls", 6),
    ("dials", 6),
    ("re-dials", 8),
    ("live/cap", 9),
    ("dials/s/limit", 14),
    ("recovery/target", 15),
    ("result", 6),
    ("faults", 0),
)


def _row(r: RunReport) -> list[str]:
    recovery = "-" if r.recovery_target_s is None else (
        f"{'never' if r.recovery_s is None else f'{r.recovery_s:.1f}'}/{r.recovery_target_s:.1f}s"
    )  # fmt: skip
    faults = ", ".join(f"{n}x {k}" if n > 1 else k for k, n in Counter(r.faults).items())
    return [
        r.scenario,
        str(r.calls),
        str(r.dials),
        str(r.redials_after_done),
        f"{r.max_live}/{r.max_live_cap}",
        f"{r.max_dials_per_s}/{r.rate_limit:g}" + ("*" if r.timing_slack_s else ""),
        recovery,
        "pass" if r.passed else "FAIL",
        faults or "-",
    ]


def render_table(reports: Iterable[RunReport]) -> str:
    """A plain-text table, one row per run, then each failed run's problems."""
    reports = list(reports)
    head = "  ".join(name.ljust(width) for name, width in _COLUMNS).rstrip()
    lines = [head, "-" * len(head)]
    failed = []
    for r in reports:
        cells = _row(r)
        lines.append("  ".join(c.ljust(w) for c, (_, w) in zip(cells, _COLUMNS, strict=True)))
        if not r.passed:
            failed.append(r)
    for r in reports:
        if r.timing_slack_s:
            lines.append(
                f"* {r.scenario}: dials counted in windows of {1 - r.timing_slack_s:.3f} s, the "
                f"carrier's clock lagging up to {r.timing_slack_s * 1000:.0f} ms"
            )
    for r in failed:
        lines.append(f"{r.scenario}:")
        lines.extend(f"  - {problem}" for problem in r.problems)
        for kind, texts in r.examples.items():
            lines.extend(f"    {kind}: {text}" for text in texts)
    return "\n".join(lines)


def timeline(ledger: CarrierLedger, faults: Sequence[Fault], step: float = 0.5) -> str:
    """Dials per second in steps of ``step`` from the first dial, with the faults marked: the
    shape of a stall and of its recovery."""
    if not ledger.dials:
        return "(no dials)"
    t0 = ledger.dials[0].t
    counts: dict[int, int] = defaultdict(int)
    sources: dict[int, set[str]] = defaultdict(set)
    for d in ledger.dials:
        counts[int((d.t - t0) / step)] += 1
        sources[int((d.t - t0) / step)].add(d.source)
    marks: dict[int, list[str]] = defaultdict(list)
    for f in faults:
        marks[int((f.t - t0) / step)].append(f.kind)
    lines = []
    for k in range(max([*counts, *marks]) + 1):
        rate = counts.get(k, 0) / step
        note = f"  <- {', '.join(marks[k])}" if k in marks else ""
        who = ",".join(sorted(sources.get(k, set())))
        lines.append(f"{k * step:7.1f}s {rate:6.0f}/s {'#' * int(rate / 4):<30} {who}{note}")
    return "\n".join(lines)


def write_results(path: Path, reports: Iterable[RunReport], **meta: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "runs": [r.as_dict() for r in reports]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
