"""The ``callqueue`` command."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import typer
from rich.console import Console

from callqueue.config import ConfigError, Settings, load_settings
from callqueue.logs import setup_logging

app = typer.Typer(help="Outbound voice-call queue on Redis.", no_args_is_help=True)
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """callqueue: outbound voice-call queue on Redis."""


def _settings() -> Settings:
    try:
        settings = load_settings()
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


@app.command()
def worker() -> None:
    """Dispatch calls (QUEUE_WORKERS dial requests in flight) until SIGTERM."""
    from callqueue.runtime import run_worker

    _run(run_worker(_settings()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
