"""The fake Plivo in a process of its own, writing a carrier ledger as the simulator does.

::

    python -m callqueue.testing.fake_plivo_process --ledger calls.jsonl --seed 11

prints ``listening http://127.0.0.1:PORT`` (the PLIVO_API_URL to use) and serves until its
standard input ends. Each call it accepts is a ``dial`` line of the ledger and each end an
``end`` line, in the simulator's format (``callqueue.testing.chaos.CarrierLedger`` reads both),
its call id and attempt taken from the answer URL. Outcomes are a seeded mix like the
simulator's: 65% answered, 15% busy, 15% unanswered, 5% failed; 5% of the calls send their
ring callback after their hangup callback.

A request is stamped when this process's event loop gets to it, so a loop running late makes
the stamps late: the largest delay seen once calls flow is written as ``lag`` lines, and the
ledger reader counts dials per second with that slack. In its own process the fake's loop
carries nothing but the fake (in a test's process it also carries the test). Each callback
delivery is a ``callback`` line too (its HTTP status or error, tries and time taken): a
callback the service did not take is where a lost event starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import orjson

from callqueue.testing.child import AsyncStartStop, Child, run, stdin_lines
from callqueue.testing.fake_plivo import CallRecord, FakePlivo, HangupCause, Scenario

__all__ = ["FakePlivoProcess", "LedgerPlivo", "mixed_outcomes"]

_OUTCOMES = {"busy": "busy", "no-answer": "no_answer", "cancel": "cancelled"}
_LAG_TICK_S = 0.005


def mixed_outcomes(seed: int) -> Callable[[dict[str, Any]], Scenario]:
    """A scenario source: the simulator's kind of mix, seeded; one call in twenty has its
    ring callback arrive after its hangup callback (Plivo's callbacks are not ordered)."""
    rng = random.Random(seed)

    def choose(_body: dict[str, Any]) -> Scenario:
        roll, ring = rng.random(), rng.uniform(0.05, 0.2)
        late_ring = rng.random() < 0.05
        if roll < 0.15:
            return Scenario(outcome="busy", ring_s=ring, hangup_before_ring=late_ring)
        if roll < 0.30:
            return Scenario(outcome="no_answer", ring_s=ring, hangup_before_ring=late_ring)
        if roll < 0.35:
            return Scenario(outcome="failed", ring_s=ring, hangup_before_ring=late_ring)
        talk = rng.uniform(0.4, 1.2)
        return Scenario(ring_s=ring, talk_s=talk, hangup_before_ring=late_ring)

    return choose


class LedgerPlivo(FakePlivo):
    """FakePlivo that appends each call it accepts and each end to a ledger file."""

    def __init__(self, ledger: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(**options)
        self._fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._shift = time.time() - time.monotonic()  # the fake's stamps are monotonic
        self.max_lag_s = 0.0

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, orjson.dumps({**record, "pid": os.getpid()}) + b"\n")

    def _identity(self, call: CallRecord) -> dict[str, Any]:
        query = parse_qs(urlsplit(str(call.body.get("answer_url", ""))).query)
        return {"call": query["call_id"][0], "attempt": int(query["attempt"][0])}

    async def _run_call(self, call: CallRecord) -> None:
        self._write({"t": call.created_at + self._shift, "ev": "dial", **self._identity(call)})
        await super()._run_call(call)

    def _end(self, call: CallRecord, status: str, cause: HangupCause) -> None:
        ended = call.ended
        super()._end(call, status, cause)
        if ended or call.ended_at is None:
            return
        if status == "completed":
            outcome = "machine" if call.machine else "completed"
        else:
            outcome = _OUTCOMES.get(status, "failed")
        t = call.ended_at + self._shift
        self._write({"t": t, "ev": "end", **self._identity(call), "outcome": outcome})

    def _delivered(self, record: Any, kind: str, url: str) -> None:
        super()._delivered(record, kind, url)
        call = self.calls.get(record.request_uuid)
        if call is None:
            return
        self._write(
            {
                "t": time.time(),
                "ev": "callback",
                **self._identity(call),
                "kind": kind,
                "status": record.status,
                "error": record.error,
                "tries": record.attempts,
                "took": round(time.monotonic() - record.at, 3),
            }
        )

    async def watch_lag(self) -> None:
        """Records how late the loop runs, from the first call on."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(_LAG_TICK_S)
            lag = time.monotonic() - started - _LAG_TICK_S
            if self.calls and lag > self.max_lag_s:
                self.max_lag_s = lag
                self._write({"t": time.time(), "ev": "lag", "lag": round(lag, 4)})

    def close_ledger(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class FakePlivoProcess(AsyncStartStop):
    """:class:`LedgerPlivo` in a child process; :attr:`url` is its PLIVO_API_URL."""

    def __init__(
        self, ledger: str | os.PathLike[str], auth_id: str, auth_token: str, seed: int = 11
    ) -> None:
        self.url = ""
        self._child = Child(
            __name__, "--ledger", str(ledger), "--auth-id", auth_id, "--auth-token", auth_token,
            "--seed", str(seed),
        )  # fmt: skip

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def start(self) -> Self:
        self.url = (await self._child.start()).removeprefix("listening ")
        return self

    async def aclose(self) -> None:
        await self._child.aclose()


async def _serve(args: argparse.Namespace) -> None:
    stop = await stdin_lines()
    plivo = LedgerPlivo(
        args.ledger,
        auth_id=args.auth_id,
        auth_token=args.auth_token,
        scenario=mixed_outcomes(args.seed),
    )
    async with plivo:
        watcher = asyncio.create_task(plivo.watch_lag())
        print(f"listening {plivo.url}", flush=True)
        await stop.read()  # until the end of input
        watcher.cancel()
    plivo.close_ledger()


def main(argv: list[str] | None = None) -> None:
    """``python -m callqueue.testing.fake_plivo_process --ledger PATH``: see the module."""
    parser = argparse.ArgumentParser(prog="python -m callqueue.testing.fake_plivo_process")
    parser.add_argument("--ledger", required=True, help="JSON-lines file to append to")
    parser.add_argument("--auth-id", default="MAXXXXXXXXXXXXXXXXXX")
    parser.add_argument("--auth-token", default="token")
    parser.add_argument("--seed", type=int, default=11)
    run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
