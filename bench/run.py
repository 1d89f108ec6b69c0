"""Runs the benchmarks, prints a table and writes ``bench/results.json``.

    python -m bench.run                          # everything (make bench)
    python -m bench.run --only dispatch_per_s,pickup
    python -m bench.run --quick                  # smaller sizes, for development
    python -m bench.run --list

``--only`` takes benchmark names or result keys. Every figure is measured on private embedded
servers started here (never a server already running); a target missed is shown as MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Importing the modules registers their benchmarks, in this order.
import bench.campaigns
import bench.durability
import bench.http
import bench.inprocess
import bench.plivo
import bench.recovery
import bench.scale
import bench.workers  # noqa: F401
from bench.registry import REGISTRY, TARGETS, BenchContext, Benchmark, Measured, select

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"

console = Console(width=max(Console().width, 100))


def _runner() -> Callable[[Coroutine[Any, Any, Measured]], Measured]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on this platform
        return asyncio.run
    return uvloop.run  # the event loop `callqueue worker` runs on


@dataclass
class Report:
    values: dict[str, float] = field(default_factory=dict)
    n: dict[str, Any] = field(default_factory=dict)
    elapsed: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def run_benchmarks(benchmarks: list[Benchmark], ctx: BenchContext) -> Report:
    report = Report()
    run = _runner()
    for b in benchmarks:
        t0 = time.perf_counter()
        with console.status(f"[bold]{b.name}[/bold]: {b.description}"):
            try:
                measured = run(b.fn(ctx))
            except Exception as exc:
                report.errors[b.name] = f"{type(exc).__name__}: {exc}"
                console.print(f"[red]{b.name} failed[/red]")
                console.print(traceback.format_exc(), markup=False, highlight=False)
                measured = None
        report.elapsed[b.name] = round(time.perf_counter() - t0, 2)
        if measured is not None:
            missing = set(b.keys) - set(measured.values)
            if missing:
                report.errors[b.name] = f"did not measure {sorted(missing)}"
            report.values.update({k: float(v) for k, v in measured.values.items()})
            report.n[b.name] = measured.n
            report.notes += measured.notes
        console.print(f"{b.name}: {report.elapsed[b.name]:.1f} s", style="dim")
    return report


def _fmt(key: str, value: float) -> str:
    if "_per_s" in key and not key.endswith("_over_1k"):
        return f"{value:,.0f}"
    if key.endswith("_ms"):
        return f"{value:.2f}"
    if key.endswith(("_utilization", "_over_1k")):
        return f"{value:.3f}"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def status_of(key: str, report: Report) -> str:
    target = TARGETS.get(key)
    if key not in report.values:
        return "MISS" if target else "error"
    if target is None:
        return "info"
    return "pass" if target.met(report.values[key]) else "MISS"


def print_table(benchmarks: list[Benchmark], report: Report) -> None:
    table = Table(title="callqueue benchmarks")
    table.add_column("key")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    styles = {"pass": "green", "MISS": "bold red", "info": "dim", "error": "bold red"}
    for b in benchmarks:
        for key in b.keys:
            status = status_of(key, report)
            value = report.values.get(key)
            table.add_row(
                key,
                "ERROR" if value is None else _fmt(key, value),
                str(TARGETS[key]) if key in TARGETS else "—",
                f"[{styles[status]}]{status}[/]",
            )
    console.print(table)
    for note in report.notes:
        console.print(f"  {note}", style="dim", markup=False, highlight=False)
    for name, error in report.errors.items():
        console.print(f"  {name}: {error}", style="red", markup=False, highlight=False)


def write_json(
    path: Path,
    benchmarks: list[Benchmark],
    report: Report,
    ctx: BenchContext,
    args: argparse.Namespace,
    wall_s: float,
) -> None:
    keys = [k for b in benchmarks for k in b.keys]
    doc: dict[str, Any] = {k: report.values[k] for k in keys if k in report.values}
    doc["targets"] = {
        k: {"op": TARGETS[k].op, "value": TARGETS[k].value} for k in keys if k in TARGETS
    }
    doc["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "server": ", ".join(sorted(ctx.server_versions)) or None,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "quick": ctx.quick,
        "only": args.only,
        "n": report.n,
        "elapsed_s": report.elapsed,
        "total_wall_s": round(wall_s, 2),
        "status": {k: status_of(k, report) for k in keys},
        "notes": report.notes,
        "errors": report.errors,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        help="comma-separated benchmark names or result keys",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (development)")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON results (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)  # fmt: skip

    if args.list:
        for b in REGISTRY.values():
            console.print(f"[bold]{b.name}[/bold]: {b.description}")
            for key in b.keys:
                console.print(f"    {key}  {TARGETS.get(key, '')}")
        return 0
    try:
        benchmarks = select(args.only)
    except KeyError as exc:
        parser.error(str(exc.args[0]))

    ctx = BenchContext(quick=args.quick)
    t0 = time.perf_counter()
    report = run_benchmarks(benchmarks, ctx)
    wall = time.perf_counter() - t0
    print_table(benchmarks, report)
    write_json(args.output, benchmarks, report, ctx, args, wall)
    console.print(f"total wall time {wall:.1f} s; results in {args.output}")
    if report.errors:
        return 2
    missed = any(status_of(k, report) == "MISS" for b in benchmarks for k in b.keys)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
