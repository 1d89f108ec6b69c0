"""The ``callqueue`` command: up | api | worker | status | check | demo.

Heavy imports (FastAPI, the engine) happen inside the commands, so ``--help`` stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from callqueue.config import ConfigError, Settings, load_settings
from callqueue.logs import setup_logging

if TYPE_CHECKING:
    from callqueue.api.routes.queue import QueueStatusView
    from callqueue.dispatcher import Dispatcher
    from callqueue.engine.queue import CallQueue
    from callqueue.engine.reads import CallState, QueueSnapshot
    from callqueue.models import CallSpec
    from callqueue.runtime import Runtime

app = typer.Typer(help="Outbound voice-call queue on Redis.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
out = Console()


@app.callback()
def _root() -> None:
    """callqueue: outbound voice-call queue on Redis."""


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_file)
    return settings


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        runner = asyncio.run
    try:
        runner(coro)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- up / api / worker --------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_if_open(settings: Settings) -> None:
    if not is_loopback(settings.host) and not settings.api_key_list:
        err.print(
            f"[bold red]WARNING: HOST={settings.host} accepts connections from other machines "
            "and API_KEYS is empty: anyone who can reach port "
            f"{settings.port} can queue and cancel calls. Set API_KEYS=<key>[,<key>...] "
            "(or HOST=127.0.0.1).[/bold red]"
        )


def _announcer(command: str) -> Callable[[Runtime, Dispatcher | None], None]:
    def announce(runtime: Runtime, dispatcher: Dispatcher | None) -> None:
        from callqueue.engine.connection import describe

        s = runtime.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        err.print(
            f"[bold green]callqueue {command}[/bold green] listening on "
            f"http://{host}:{s.port}  (API docs: /docs)"
        )
        if runtime.embedded:
            err.print(
                f"  Redis:   [yellow]EMBEDDED server[/yellow] {describe(runtime.url)} "
                f"(data in {s.data_dir}); set REDIS_URL to share a Redis"
            )
        else:
            err.print(f"  Redis:   {describe(runtime.url)}")
        if dispatcher is None:
            return
        if dispatcher.carrier.name == "simulator":
            err.print(
                "  Carrier: [yellow]SIMULATED[/yellow]: no real calls are placed "
                "(set PLIVO_* or TWILIO_* credentials, or CARRIER)"
            )
        else:
            err.print(f"  Carrier: {dispatcher.carrier.name}")
        err.print(
            f"  Queue:   {runtime.queue.name!r}; at most {s.max_concurrent_calls} live calls, "
            f"{s.rate_limit_per_second:g} dials/s, {s.queue_workers} dial requests in flight"
        )

    return announce


async def _serve(settings: Settings, dispatch: bool, command: str) -> None:
    from callqueue.api.server import serve
    from callqueue.runtime import open_runtime

    _warn_if_open(settings)
    runtime = await open_runtime(settings)
    try:
        await serve(runtime, dispatch=dispatch, announce=_announcer(command))
    finally:
        await runtime.aclose()


@app.command()
def up() -> None:
    """API + dispatcher + reaper in one process (the simplest deployment)."""
    _run(_serve(_settings(), dispatch=True, command="up"))


@app.command()
def api() -> None:
    """The HTTP API only; run `callqueue worker` processes to dial."""
    _run(_serve(_settings(), dispatch=False, command="api"))


@app.command()
def worker() -> None:
    """Dispatch calls (QUEUE_WORKERS dial requests in flight) until SIGTERM."""
    from callqueue.runtime import run_worker

    _run(run_worker(_settings()))


# -- status -------------------------------------------------------------------------------------


def status_table(view: QueueStatusView) -> Table:
    paused = "  [red](PAUSED)[/red]" if view.paused else ""
    table = Table(title=f"queue {view.queue!r}{paused}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, count in view.counts.items():
        table.add_row(f"calls {name}", str(count))
    for name, count in view.queued_by_priority.items():
        table.add_row(f"queued {name}", str(count))
    live, rate = view.live_calls, view.dial_rate
    cap = str(live.limit) if live.limit else "no cap"
    table.add_row("live calls / limit", f"{live.current} / {cap}")
    limit = f"{rate.limit_per_second:g}" if rate.limit_per_second else "no limit"
    table.add_row("dials last second / limit", f"{rate.last_second} / {limit}")
    table.add_row("dials last minute", str(rate.last_minute))
    table.add_row("enqueued / dialed (total)", f"{view.enqueued_total} / {view.dialed_total}")
    for name, value in (("success rate", view.success_rate), ("failure rate", view.failure_rate)):
        table.add_row(name, "-" if value is None else f"{value:.1%}")
    avg = view.average_call_duration_seconds
    table.add_row("average call duration", "-" if avg is None else f"{avg:.1f} s")
    table.add_row("workers alive", str(view.workers.alive))
    return table


async def _status(settings: Settings, as_json: bool) -> None:
    from callqueue.api.routes.queue import QueueStatusView
    from callqueue.engine.reads import queue_snapshot
    from callqueue.runtime import open_runtime

    runtime = await open_runtime(settings)
    try:
        snap = await queue_snapshot(runtime.queue)
    finally:
        await runtime.aclose()
    view = QueueStatusView.of(
        runtime.queue.name, snap, settings.max_concurrent_calls, settings.rate_limit_per_second
    )
    if as_json:
        sys.stdout.write(orjson.dumps(view.model_dump(mode="json")).decode() + "\n")
    else:
        out.print(status_table(view))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Queue status: calls by status and priority, live calls, dial rate, workers."""
    _run(_status(_settings(), as_json))


# -- check --------------------------------------------------------------------------------------


@app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Can this configuration place calls? Redis, the function library, carrier credentials,
    the agent server and PUBLIC_URL; exit 1 when a required check fails."""
    from callqueue.check import (
        CheckResult,
        passed,
        print_results,
        results_json,
        route_logs_to_stderr,
        run_checks,
    )

    settings = _settings()
    route_logs_to_stderr()
    results: list[CheckResult] = []

    async def go() -> None:
        results.extend(await run_checks(settings))

    _run(go())
    if as_json:
        sys.stdout.write(orjson.dumps(results_json(results)).decode() + "\n")
    else:
        print_results(results, out)
    raise typer.Exit(0 if passed(results) else 1)


# -- demo ---------------------------------------------------------------------------------------

DEMO_SETTINGS: dict[str, object] = {
    "redis_url": None,
    "redis_cluster": False,
    "queue_name": "demo",
    "carrier": "simulator",
    "sim_outcomes": "",
    "sim_refuse_rate": 0.0,
    "sim_reject_rate": 0.0,
    "sim_ledger": None,
    "ring_timeout": 10,
    "default_max_duration": 30,
    "call_grace_seconds": 5,
    "retry_base_delay": 0.5,
    "retry_factor": 2.0,
    "retry_max_delay": 2.0,
    "log_level": "WARNING",
    "log_file": None,
}
DEMO_BARS = ("queued", "live", "retrying", "completed", "failed")


def demo_specs(count: int, now_ms: int, seed: int = 7) -> list[CallSpec]:
    """A sample campaign: mixed priorities, a tenth scheduled a few seconds ahead."""
    import random

    from callqueue.models import CallSpec, Priority

    rng = random.Random(seed)
    weights = {Priority.URGENT: 5, Priority.HIGH: 15, Priority.NORMAL: 70, Priority.LOW: 10}
    specs = []
    for i in range(count):
        later = rng.random() < 0.1
        specs.append(
            CallSpec(
                call_id=f"demo-{i:05d}",
                phone_number=f"+9198{rng.randrange(10**8):08d}",
                campaign_id="demo-campaign",
                config={"flow_name": "demo", "variables": {"name": f"Customer {i}"}},
                priority=rng.choices(list(weights), list(weights.values()))[0],
                max_retries=2,
                scheduled_at_ms=now_ms + rng.randrange(1000, 4000) if later else None,
                batch_id="demo",
            )
        )
    return specs


def demo_counts(states: dict[str, CallState | None]) -> dict[str, int]:
    """Calls per progress bar: queued (first attempt to come), live, retrying, final."""
    from callqueue.models import CallStatus

    counts = dict.fromkeys(DEMO_BARS, 0)
    for state in states.values():
        if state is None:
            continue
        if state.status in (CallStatus.QUEUED, CallStatus.SCHEDULED):
            counts["retrying" if state.attempts else "queued"] += 1
        elif state.status.is_live:
            counts["live"] += 1
        elif state.status == CallStatus.COMPLETED:
            counts["completed"] += 1
        else:
            counts["failed"] += 1
    return counts


@dataclass
class DemoRun:
    snap: QueueSnapshot | None = None
    counts: dict[str, int] | None = None
    peak_live: int = 0
    peak_rate: int = 0
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        c = self.counts or {}
        return bool(c) and c["completed"] + c["failed"] == sum(c.values())


async def _demo_track(
    queue: CallQueue, ids: list[str], settings: Settings, stop: asyncio.Event
) -> DemoRun:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from callqueue.engine.reads import call_states, queue_snapshot

    run = DemoRun()
    started = time.monotonic()
    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err) as progress:
        live_total = settings.max_concurrent_calls or len(ids)
        bars = {
            name: progress.add_task(name, total=live_total if name == "live" else len(ids))
            for name in DEMO_BARS
        }
        while True:
            run.counts = demo_counts(await call_states(queue, ids))
            run.snap = await queue_snapshot(queue)
            run.peak_live = max(run.peak_live, run.counts["live"])
            run.peak_rate = max(run.peak_rate, run.snap.peak_dials_per_second)
            run.elapsed_s = time.monotonic() - started
            for name, count in run.counts.items():
                progress.update(bars[name], completed=count)
            if run.finished or stop.is_set():
                return run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


def demo_summary(run: DemoRun, settings: Settings) -> Table:
    snap, counts = run.snap, run.counts
    assert snap is not None and counts is not None
    calls = sum(counts.values())
    table = Table(title="demo summary")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("calls completed / failed", f"{counts['completed']} / {counts['failed']}")
    unfinished = counts["queued"] + counts["retrying"] + counts["live"]
    if unfinished:
        table.add_row("calls unfinished (stopped early)", str(unfinished))
    table.add_row("attempts (dials)", str(snap.dialed))
    table.add_row("attempts per call", f"{snap.dialed / calls:.2f}" if calls else "-")
    for outcome, n in snap.outcomes.items():
        if n:
            table.add_row(f"  outcome {outcome.value}", str(n))
    avg = snap.average_duration_s
    table.add_row("average talk time", "-" if avg is None else f"{avg:.2f} s")
    table.add_row("wall time", f"{run.elapsed_s:.1f} s")
    limit = settings.rate_limit_per_second
    limit_text = f"{limit:g}" if limit else "no limit"
    table.add_row("dial rate: peak / limit (per s)", f"{run.peak_rate} / {limit_text}")
    average = snap.dialed / run.elapsed_s if run.elapsed_s else 0.0
    table.add_row("dial rate: average (per s)", f"{average:.1f}")
    cap = settings.max_concurrent_calls
    table.add_row("peak live calls / limit", f"{run.peak_live} / {cap if cap else 'no cap'}")
    return table


async def _demo(count: int, overrides: dict[str, object]) -> None:
    from callqueue.runtime import install_stop_signals, make_dispatcher, open_runtime

    data_dir = Path(tempfile.mkdtemp(prefix="callqueue-demo-"))
    settings = _settings(**{**DEMO_SETTINGS, "data_dir": data_dir, **overrides})
    # Enough dial tasks to reach the live-call cap (a simulated dial returns at once).
    workers = max(settings.queue_workers, min(settings.max_concurrent_calls or 100, 200))
    settings = settings.model_copy(update={"queue_workers": workers})
    runtime = await open_runtime(settings)
    try:
        err.print(
            f"[bold]callqueue demo[/bold]: {count} calls on a fresh [yellow]embedded "
            f"server[/yellow] ({data_dir}) and the [yellow]SIMULATED carrier[/yellow]; "
            f"at most {settings.max_concurrent_calls} live calls, "
            f"{settings.rate_limit_per_second:g} dials/s. Ctrl-C stops."
        )
        specs = demo_specs(count, int(time.time() * 1000))
        await runtime.queue.enqueue_many(specs, "demo")
        dispatcher = make_dispatcher(runtime)
        stop = asyncio.Event()
        install_stop_signals(stop.set)
        await dispatcher.start()
        try:
            run = await _demo_track(runtime.queue, [s.call_id for s in specs], settings, stop)
        finally:
            await dispatcher.stop(3.0)
        out.print(demo_summary(run, settings))
    finally:
        await runtime.aclose()
        shutil.rmtree(data_dir, ignore_errors=True)


@app.command()
def demo(
    calls: Annotated[int, typer.Option(min=1, max=10_000, help="Calls to queue.")] = 100,
    rate: Annotated[
        float | None, typer.Option(min=0, help="Dials per second (RATE_LIMIT_PER_SECOND).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Live-call cap (MAX_CONCURRENT_CALLS).")
    ] = None,
    ring: Annotated[str, typer.Option(help="Simulated ring time range, seconds.")] = "0.2-1.5",
    talk: Annotated[str, typer.Option(help="Simulated talk time range, seconds.")] = "0.5-3",
) -> None:
    """A sample campaign on a fresh embedded server and the simulated carrier, with progress."""
    overrides: dict[str, object] = {"sim_ring_seconds": ring, "sim_talk_seconds": talk}
    if rate is not None:
        overrides["rate_limit_per_second"] = rate
    if concurrency is not None:
        overrides["max_concurrent_calls"] = concurrency
    _run(_demo(calls, overrides))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
