"""The ``callqueue`` command: up | api | worker | status | check | demo | import.

Heavy imports (FastAPI, the engine) happen inside the commands, so ``--help`` stays quick
(about 0.6 s against 2 s with the API imported). They are start-up time only, not a way round
an import cycle: the CLI is the top floor, and may import anything below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ipaddress
import os
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
from callqueue.models import Priority

if TYPE_CHECKING:
    from callqueue.csv_import import ColumnMapping, ImportResult, RejectedRow
    from callqueue.dispatcher import Dispatcher
    from callqueue.engine.queue import CallQueue
    from callqueue.engine.reads import CallState, QueueSnapshot
    from callqueue.models import CallSpec
    from callqueue.runtime import Runtime
    from callqueue.schemas.views import QueueStatusView

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
    for part, reason in view.dispatch_blocked.items():
        table.add_row(f"[red]dispatch blocked: {part}[/red]", reason)
    return table


async def _status(settings: Settings, as_json: bool) -> None:
    from callqueue.engine.reads import queue_snapshot
    from callqueue.runtime import open_runtime
    from callqueue.schemas.views import QueueStatusView

    runtime = await open_runtime(settings, enqueues=False)
    try:
        snap = await queue_snapshot(runtime.queue)
        blocked = await runtime.queue.problems()
    finally:
        await runtime.aclose()
    view = QueueStatusView.of(
        runtime.queue.name,
        snap,
        settings.max_concurrent_calls,
        settings.rate_limit_per_second,
        blocked,
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


# -- import -------------------------------------------------------------------------------------


def rejected_report_path(path: Path) -> Path:
    """Where the rejected rows of ``path`` go: ``calls.csv`` -> ``calls.rejected.csv``."""
    stem = path.name[:-4] if path.name.lower().endswith(".csv") else path.name
    return path.with_name(f"{stem}.rejected.csv")


class RejectedReport:
    """The rejected rows of an import as CSV: the original columns, then ``line`` and
    ``errors``. Written to a temporary file and moved into place at the end; with nothing
    rejected, no report is left (a stale one from an earlier run is removed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".part")
        self.count = 0
        self._file: Any = None
        self._writer: Any = None

    def add(self, row: RejectedRow) -> None:
        from callqueue.csv_import import format_errors

        if self._writer is None:
            self._file = self.partial.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            names = set(row.header)
            extra = []
            for name in ("line", "errors"):
                while name in names:  # the file has such a column already
                    name = f"_{name}"
                extra.append(name)
            self._writer.writerow([*row.header, *extra])
        width = len(row.header)
        cells = [*row.cells[:width], *[""] * (width - len(row.cells))]
        beyond = list(row.cells[width:])  # cells past the header, kept after the two
        self._writer.writerow([*cells, row.line, format_errors(row.errors), *beyond])
        self.count += 1

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def finish(self) -> Path | None:
        """The report's path, or None (and no report file) when nothing was rejected."""
        self._close()
        if self.count:
            os.replace(self.partial, self.path)
            return self.path
        self.path.unlink(missing_ok=True)
        return None

    def abort(self) -> None:
        self._close()
        self.partial.unlink(missing_ok=True)


def import_summary(result: ImportResult, report: Path | None) -> Table:
    table = Table(title=f"import of {result.source} into campaign {result.campaign_id!r}")
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_row("rows read", str(result.rows))
    table.add_row("queued", str(result.queued))
    table.add_row("duplicates (queued before)", str(result.duplicates))
    if result.duplicates_differing:
        table.add_row("  of which with other values", str(result.duplicates_differing))
    table.add_row("rejected", str(result.rejected))
    for kind, count in result.rejected_by_kind.items():
        if count:
            table.add_row(f"  {kind}", str(count))
    if result.blank_lines:
        table.add_row("blank lines skipped", str(result.blank_lines))
    table.add_row("batch", result.batch_id)
    if report is not None:
        table.add_row("rejected rows written to", str(report))
    return table


async def _import(
    settings: Settings,
    path: Path,
    campaign: str,
    mapping: ColumnMapping,
    batch_size: int,
    done: list[tuple[ImportResult, Path | None]],
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from callqueue.csv_import import import_csv
    from callqueue.runtime import open_runtime

    report = RejectedReport(rejected_report_path(path))
    runtime = await open_runtime(settings)
    try:
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        with Progress(*columns, console=err) as progress:
            task = progress.add_task(f"checking {path.name}", total=None)

            def on_progress(rows: int, total: int | None) -> None:
                desc = f"importing {path.name}"
                progress.update(task, description=desc, completed=rows, total=total)

            result = await import_csv(
                runtime.queue, path, campaign, mapping, batch_size=batch_size,
                progress=on_progress, on_rejected=report.add, keep_rejected=5,
            )  # fmt: skip
    except BaseException:
        report.abort()
        raise
    finally:
        await runtime.aclose()
    done.append((result, report.finish()))


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="The CSV file (UTF-8, a header)."
        ),
    ],
    campaign: Annotated[str, typer.Option(help="The campaign the calls join.")],
    phone_column: Annotated[
        str | None,
        typer.Option(
            help="Column of the phone numbers (default: phone_number, phone, "
            "number or mobile, any case)."
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            help="Column of the call ids (default: custom_call_id or call_id if "
            "present; else ids derived from campaign and number)."
        ),
    ] = None,
    var: Annotated[
        list[str] | None,
        typer.Option(
            "--var",
            metavar="COL[=NAME]",
            help="A column to pass as call_config.variables[NAME] (repeatable). Given: only "
            "these, unless --all-columns-as-variables.",
        ),
    ] = None,
    all_columns_as_variables: Annotated[
        bool | None,
        typer.Option(
            "--all-columns-as-variables/--no-all-columns-as-variables",
            help="Pass every column not mapped to a call field as a variable (default: yes, "
            "unless --var is given).",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[
        Priority | None,
        typer.Option(case_sensitive=False, help="Priority of rows without one (default: normal)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Rows read and queued at a time.")
    ] = 1000,
) -> None:
    """Queue the calls of a CSV file into a campaign, row by row: bad rows are reported in
    FILE.rejected.csv (with their line and errors), the others queued. Running it again queues
    nothing twice. Exit 0: every row queued (or queued before); 1: some rows rejected; 2: the
    file or the options cannot be used."""
    from rich.markup import escape

    from callqueue.csv_import import ColumnMapping, CsvImportError, format_errors

    try:
        mapping = ColumnMapping.of(phone_column, id_column, var, all_columns_as_variables,
                                   priority)  # fmt: skip
    except CsvImportError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    settings = _settings()
    done: list[tuple[ImportResult, Path | None]] = []
    try:
        _run(_import(settings, file, campaign, mapping, batch_size, done))
    except CsvImportError as exc:
        err.print(f"[red]cannot import: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    ((result, report),) = done
    out.print(import_summary(result, report))
    for row in result.rejected_rows:
        err.print(f"  line {row.line}: {escape(format_errors(row.errors))}")
    if result.rejected > len(result.rejected_rows):
        err.print(f"  ... and {result.rejected - len(result.rejected_rows)} more")
    raise typer.Exit(1 if result.rejected else 0)


# -- do-not-call list ---------------------------------------------------------------------------


def read_numbers(file: Path) -> list[tuple[int, str]]:
    """(line, number) from a file: one per line, or a CSV whose first column holds them; blank
    lines and lines starting with # are skipped."""
    text = file.read_text(encoding="utf-8-sig")
    numbers = []
    for line_no, line in enumerate(text.splitlines(), 1):
        cell = line.split(",")[0].strip().strip('"')
        if cell and not cell.startswith("#"):
            numbers.append((line_no, cell))
    return numbers


async def _dnc(settings: Settings, numbers: list[str], remove: bool, done: list[int]) -> None:
    from callqueue.runtime import open_runtime

    runtime = await open_runtime(settings, enqueues=False)
    try:
        change = runtime.queue.dnc_remove if remove else runtime.queue.dnc_add
        changed = 0
        for start in range(0, len(numbers), 10_000):
            changed += await change(numbers[start : start + 10_000])
        done.append(changed)
    finally:
        await runtime.aclose()


@app.command()
def dnc(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Numbers, one per line (or a CSV, numbers in the first column).",
        ),
    ],
    remove: Annotated[
        bool, typer.Option("--remove", help="Take the numbers off the list instead.")
    ] = False,
) -> None:
    """Put the numbers of a file on the do-not-call list (or take them off): they are never
    dialed, even if already queued. Numbers are normalised like phone_number; unreadable ones
    are listed and skipped (exit 1 if any)."""
    from rich.markup import escape

    from callqueue.schemas.calls import normalize_phone

    good: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for n, (line, raw) in enumerate(read_numbers(file)):
        try:
            good.append(str(normalize_phone(raw)))
        except ValueError as exc:
            if n == 0 and not any(ch.isdigit() for ch in raw):
                continue  # a header
            bad.append((line, raw, str(exc)))
    done: list[int] = []
    _run(_dnc(_settings(), good, remove, done))
    changed, total = done[0], len(good)
    verb, other = ("taken off", "not on it") if remove else ("added to", "on it already")
    out.print(f"{changed} of {total} numbers {verb} the do-not-call list "
              f"({total - changed} were {other}).")  # fmt: skip
    for i, raw, reason in bad[:20]:
        err.print(f"  line {i}: {escape(raw)}: {escape(reason)}")
    if len(bad) > 20:
        err.print(f"  ... and {len(bad) - 20} more unreadable numbers")
    raise typer.Exit(1 if bad else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
