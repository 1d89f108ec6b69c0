"""Chaos runs: the short form runs with the rest of the suite; ``CHAOS_FULL=1`` (``make chaos``)
runs the full form. Every run's row is printed in one table at the end of the session and
written to ``.chaos/results.json`` (full) or ``.chaos/results-short.json``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

# The end-to-end tests' process helpers (Proc, clean_env, until, ...) serve here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from chaos_support import CHAOS_DIR, FULL, PROFILE

from callqueue.testing.chaos import RunReport, render_table, write_results

_REPORTS: list[RunReport] = []


@pytest.fixture(scope="session")
def chaos_reports() -> list[RunReport]:
    return _REPORTS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(pytest.mark.timeout(PROFILE.test_timeout_s))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTS:
        return
    name = "results.json" if FULL else "results-short.json"
    path = CHAOS_DIR / name
    write_results(
        path,
        _REPORTS,
        profile=PROFILE.name,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        host_cpus=os.cpu_count(),
    )
    terminalreporter.write_sep("=", f"chaos runs ({PROFILE.name} form)")
    terminalreporter.write_line(render_table(_REPORTS))
    terminalreporter.write_line(f"written to {path}")
