"""The chaos runs' shared parts: the two profiles (short, in ``make test``; full, in
``make chaos``), the service's settings, and :class:`ChaosRun`, which enqueues the calls,
watches the carrier's ledger, records the faults, waits for the queue to drain and judges the
run from the ledger and the final engine state."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from e2e_support import Proc, clean_env, free_port

from callqueue.config import Settings, load_settings
from callqueue.engine.connection import connect
from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec
from callqueue.testing.chaos import (
    RECOVERY_WINDOW_S,
    CarrierLedger,
    Fault,
    LedgerTail,
    Limits,
    RunReport,
    full_rate,
    judge,
    recovery_after,
    recovery_target,
    render_table,
    timeline,
)
from waiting import until

FULL = os.environ.get("CHAOS_FULL", "") not in ("", "0")
#: Where the results table and the explanations of failed runs go (the repository's root).
CHAOS_DIR = Path(__file__).resolve().parents[2] / ".chaos"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    calls: int
    rate: int  # RATE_LIMIT_PER_SECOND
    cap: int  # MAX_CONCURRENT_CALLS: near what the rate needs, so that held slots show
    queue_workers: int  # dial requests in flight per process
    worker_ttl_s: float  # WORKER_TTL_SECONDS
    kills: int  # faults per kill scenario
    proxy_rounds: int  # rounds of the fault proxy's schedule (0: one round, both paths at once)
    proxy_gap_s: float  # how long a latency stays on
    proxy_calls: int  # calls of the fault proxy's run (through the fake Plivo: slower)
    proxy_rate: int  # its RATE_LIMIT_PER_SECOND: each call costs the service 3-4 webhooks
    steady_s: float  # dialing before the first fault (the full rate is measured there)
    drain_timeout_s: float  # the last fault to every call finished, at most
    test_timeout_s: float


SHORT = Profile(
    "short", calls=300, rate=80, cap=50, queue_workers=10, worker_ttl_s=3, kills=1,
    proxy_rounds=0, proxy_gap_s=1.0, proxy_calls=160, proxy_rate=80, steady_s=2.0,
    drain_timeout_s=60, test_timeout_s=150,
)  # fmt: skip
LONG = Profile(
    "full", calls=5000, rate=100, cap=64, queue_workers=20, worker_ttl_s=10, kills=2,
    proxy_rounds=3, proxy_gap_s=3, proxy_calls=5000, proxy_rate=60, steady_s=8,
    drain_timeout_s=240, test_timeout_s=600,
)  # fmt: skip
PROFILE = LONG if FULL else SHORT

MAX_RETRIES = 2
#: A simulated call: rings up to 0.2 s, talks 0.4-1.2 s when answered.
SIM_CALLS = {
    "SIM_RING_SECONDS": "0-0.2",
    "SIM_TALK_SECONDS": "0.4-1.2",
    "SIM_OUTCOMES": "completed=0.6,machine=0.05,busy=0.15,no_answer=0.15,failed=0.05",
}
#: What bounds an attempt, as short as in the issue's run: its longest life is 5+5+10+5 s.
LIMITS = {
    "DIAL_LEASE_SECONDS": "5",
    "RING_TIMEOUT": "5",
    "DEFAULT_MAX_DURATION": "10",
    "CALL_GRACE_SECONDS": "5",
    "RETRY_BASE_DELAY": "0.2",
    "RETRY_MAX_DELAY": "0.5",
}


def number_of(i: int) -> str:
    """A distinct valid mobile number per call (one person, one line)."""
    return f"+9198{i:08d}"


def service_env(redis_url: str, queue: str, ledger: Path, **extra: str) -> dict[str, str]:
    p = PROFILE
    values = {
        "REDIS_URL": redis_url, "QUEUE_NAME": queue, "SIM_LEDGER": str(ledger),
        "RATE_LIMIT_PER_SECOND": str(p.rate), "MAX_CONCURRENT_CALLS": str(p.cap),
        "QUEUE_WORKERS": str(p.queue_workers), "WORKER_TTL_SECONDS": f"{p.worker_ttl_s:g}",
        "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_LEVEL": "WARNING",
        **SIM_CALLS, **LIMITS, **extra,
    }  # fmt: skip
    return clean_env(**values)


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a process started with ``env`` runs with."""
    fields = Settings.model_fields
    return load_settings(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


def base_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['PORT']}"


async def start_service(command: str, env: dict[str, str], home: Path, name: str) -> Proc:
    """``callqueue <command>`` in ``home``; for ``up``, waits until /api/health answers 200."""
    home.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a directory, once
    proc = Proc([command], env, home, name)
    if command != "up":
        return proc
    async with httpx.AsyncClient(base_url=base_url(env), timeout=2) as http:

        async def ok() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{proc.output}"
            try:
                reply = await http.get("/api/health")
            except httpx.HTTPError:
                return False
            last.append(reply.text)
            return reply.status_code == 200

        last: list[str] = []
        try:
            await until(ok, 60, f"{name} to answer /api/health")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer {last[-1:]}:\n{proc.output}") from None
    return proc


def stop_service(proc: Proc) -> None:
    code, _ = proc.stop(30)
    assert code == 0, f"exit {code} on SIGTERM:\n{proc.output[-4000:]}"


class ChaosRun:
    """One scenario's run: the queue, its calls, the ledger, the faults, the processes (all
    killed when the run's ``async with`` ends)."""

    def __init__(
        self,
        scenario: str,
        tmp: Path,
        env: dict[str, str],
        calls: int = PROFILE.calls,
    ) -> None:
        self.scenario = scenario
        self.tmp = tmp
        self.env = env
        self.settings = settings_of(env)
        self.ledger_path = Path(env["SIM_LEDGER"])
        self.tail = LedgerTail(self.ledger_path)
        self.faults: list[Fault] = []
        self.people = {f"x{i}": number_of(i) for i in range(calls)}
        self.client = connect(env["REDIS_URL"], cluster=self.settings.redis_cluster or None)
        self.queue = CallQueue(self.client, env["QUEUE_NAME"], self.settings.queue_options())
        self.started = time.monotonic()
        self.baseline: float | None = None  # dials/s before the first fault
        self.procs: list[Proc] = []

    async def __aenter__(self) -> ChaosRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def start(self, command: str, name: str, home: str | None = None) -> Proc:
        """Starts ``callqueue <command>`` in ``tmp/<home or name>`` (see start_service)."""
        proc = await start_service(command, self.env, self.tmp / (home or name), name)
        self.procs.append(proc)
        return proc

    async def conclude(
        self, reports: list[RunReport], alive: Sequence[Proc], api: bool = False
    ) -> RunReport:
        """Waits until every call is terminal, judges the run (with ``api``: reading calls
        through the API of the ``up`` process), then stops ``alive``, which must exit 0."""
        await self.finished()
        report = await self.judge(reports, base_url(self.env) if api else None)
        for proc in alive:
            stop_service(proc)
        return report

    @property
    def worker_ttl_s(self) -> float:
        return self.settings.worker_ttl_seconds

    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            rate_per_s=s.rate_limit_per_second,
            max_live=s.max_concurrent_calls,
            worker_ttl_s=self.worker_ttl_s,
            carrier_life_s=s.ring_timeout + s.default_max_duration,
        )

    async def enqueue(self, count: int | None = None) -> None:
        """Queues the run's calls, or ``count`` more (each to a person of its own)."""
        if count is None:
            ids = list(self.people)
        else:
            ids = [f"x{i}" for i in range(len(self.people), len(self.people) + count)]
        specs = [
            CallSpec(
                call_id=call_id,
                phone_number=number_of(int(call_id[1:])),
                campaign_id="chaos",
                config={"flow_name": "chaos"},
                max_retries=MAX_RETRIES,
            )
            for call_id in ids
        ]
        results = await self.queue.enqueue_many(specs)
        assert len(results) == len(specs)
        self.people.update((spec.call_id, spec.phone_number) for spec in specs)

    async def keep_busy(self) -> None:
        """Queues a second's worth of calls more when fewer than RECOVERY_WINDOW_S of dialing
        are left, so that a recovery can always be seen: a run that ran out of calls cannot
        show its rate. (A fault may keep Redis away meanwhile: then the next look tops up.)"""
        rate = int(self.settings.rate_limit_per_second)
        need = rate * int(RECOVERY_WINDOW_S)
        dialed = len({r["call"] for r in self.tail.records if r["ev"] == "dial"})
        if len(self.people) - dialed < need:
            with contextlib.suppress(Exception):
                await self.enqueue(rate)

    # -- watching -------------------------------------------------------------------------------
    def dial_times(self) -> list[float]:
        """Every dial so far (wall clock, in order), from the carrier's side."""
        self.tail.poll()
        return sorted(r["t"] for r in self.tail.records if r["ev"] == "dial")

    async def steady(self, also: Callable[[], bool] | None = None) -> None:
        """Waits until the run has dialed for ``steady_s`` and ``also`` holds (e.g. the victim
        has calls live)."""

        def ready() -> bool:
            times = self.dial_times()
            if not times or time.time() - times[0] < PROFILE.steady_s:
                return False
            return also is None or also()

        await until(_async(ready), 60 + PROFILE.steady_s, f"{self.scenario}: steady dialing")

    async def recovered(self) -> None:
        """Waits until dialing is back at the full rate after the last fault, or its recovery
        target (and a second) has passed: the next fault then finds a steady run again, and
        each recovery is measured alone. judge() says whether the target was met."""
        fault = self.faults[-1]
        if self.baseline is None:
            limit = self.settings.rate_limit_per_second
            self.baseline = full_rate(self.dial_times(), self.faults[0].t, limit)
        rate = self.baseline
        give_up = fault.t + recovery_target(fault, self.worker_ttl_s) + 1.0

        async def back() -> bool:
            took = recovery_after(self.dial_times(), fault.t, rate)
            if took is not None or time.time() > give_up:
                return True
            await self.keep_busy()
            return False

        await until(back, give_up - time.time() + 5, f"{self.scenario}: recovery")

    async def next_fault(self, index: int, also: Callable[[], bool] | None = None) -> None:
        """Waits for the moment of fault ``index``: the first once dialing is steady, the
        next ones once the previous one has recovered; and ``also``."""
        if index == 0:
            await self.steady(also)
        else:
            await self.recovered()
        await self.keep_busy()
        if also is not None:
            await until(_async(also), PROFILE.drain_timeout_s, f"{self.scenario}: fault {index}")

    def live_in(self, source: Proc, also_dialing: Proc | None = None) -> Callable[[], bool]:
        """True while ``source`` has at least 3 simulated calls live (and ``also_dialing``
        has dialed)."""
        pid, other = source.popen.pid, also_dialing.popen.pid if also_dialing else None
        return lambda: self.tail.live(pid) >= 3 and (other is None or self.tail.dials(other) > 0)

    def fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    async def finished(self) -> None:
        """Waits until every call is terminal (the queue's finished set holds them all)."""

        async def done() -> bool:
            try:
                return int(await self.client.zcard(self.queue.keys.finished)) >= len(self.people)
            except Exception:  # the test's own client rides out the faults too
                return False

        await until(done, PROFILE.drain_timeout_s, f"{self.scenario}: every call terminal")

    async def _quiet(self) -> None:
        """Waits (briefly) until the carrier has written the end of every call it still had
        live in a process that was not killed: the queue may record an end a moment before
        the carrier's ledger line appears."""
        killed = {int(f.kills) for f in self.faults if f.kills is not None}

        def quiet() -> bool:
            self.tail.poll()
            return all(self.tail.live(pid) == 0 for pid in self.tail.sources() - killed)

        with contextlib.suppress(AssertionError):  # what is still open, judge() reports
            await until(_async(quiet), 10, "the carrier's last ends")

    # -- judging --------------------------------------------------------------------------------
    async def judge(
        self,
        reports: list[RunReport],
        api: str | None = None,
    ) -> RunReport:
        """Judges the run, adds its row to the session's table, writes its details (dials per
        second, the calls of each broken promise, the processes' output) to
        ``.chaos/<scenario>-<profile>.txt`` and fails the test if any promise broke."""
        await self._quiet()
        ledger = CarrierLedger.from_file(self.ledger_path)
        records = await self.queue.records(list(self.people))
        found = {r.call_id: r for r in records}
        not_terminal = [c for c in self.people if c not in found or not found[c].status.is_terminal]
        report = judge(
            f"{self.scenario} ({PROFILE.name})",
            ledger, self.people, self.faults, self.limits(), not_terminal,
        )  # fmt: skip
        report.seconds = round(time.monotonic() - self.started, 1)
        reports.append(report)
        where = await self._explain(report, ledger, found, api, self.procs)
        if not report.passed:
            raise AssertionError(f"{render_table([report])}\n(details in {where})")
        return report

    @staticmethod
    async def _history(call_id: str, record: Any, api: str | None) -> list[str]:
        """The call's attempts and history, from GET /api/calls/{id}/status when the API is up,
        else from the engine's record."""
        if api is not None:
            try:
                async with httpx.AsyncClient(base_url=api, timeout=5) as http:
                    body = (await http.get(f"/api/calls/{call_id}/status")).json()
            except httpx.HTTPError as exc:
                return [f"  api: {exc!r}"]
            return [
                f"  api: {body['status']} ({body.get('outcome')})",
                *(
                    f"    attempt {a['number']}: {a['outcome']} {a['started_at']} .. "
                    f"{a['ended_at']} carrier id {a['carrier_call_id']}"
                    for a in body["attempts"]
                ),
                *(f"    {h['at']} {h['status']} {h['note']}" for h in body["history"]),
            ]
        if record is None:
            return ["  engine: no record"]
        return [
            f"  engine: {record.status} ({record.outcome})",
            *(f"    attempt {a}" for a in record.attempts),
            *(f"    {h.at_ms} {h.status} {h.note}" for h in record.history),
        ]

    async def _explain(
        self,
        report: RunReport,
        ledger: CarrierLedger,
        found: dict[str, Any],
        api: str | None,
        logs: Sequence[Proc],
    ) -> Path:
        calls = sorted({text.split()[0] for texts in report.examples.values() for text in texts})
        lines = [render_table([report]), "", f"faults: {self.faults}", ""]
        lines += ["dials per second:", timeline(ledger, self.faults), ""]
        for call_id in calls:
            lines.append(f"== {call_id}")
            lines += [f"  carrier: {line}" for line in ledger.about(call_id)]
            lines += await self._history(call_id, found.get(call_id), api)
        for proc in logs:
            lines += ["", f"== output of {proc.out_path.stem}", proc.output[-6000:]]
        CHAOS_DIR.mkdir(exist_ok=True)
        slug = "-".join(self.scenario.replace("-", " ").split())
        path = CHAOS_DIR / f"{slug}-{PROFILE.name}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run
