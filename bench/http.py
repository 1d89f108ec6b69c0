"""Sub-benchmarks over real HTTP: a ``callqueue api`` process (its own interpreter, uvicorn as
shipped) on a private embedded server, driven from this process (httpx for bulk requests; the
raw keep-alive client of bench/loadgen.py for the latency run, where httpx's own CPU per request
would be measured as much as the server's).

The server process is started with ``python -m callqueue.cli api`` on a free loopback port,
``REDIS_URL`` = the private server's unix socket and a queue name of its own; it has no
dispatcher, so the calls only pile up (what is measured is the API's path into Redis).

Set ``BENCH_PYSPY=1`` (with ``py-spy`` on PATH) to record a py-spy profile of the server process
during each measured run (speedscope files in $TMPDIR/callqueue-bench-profiles/, named in the
notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import CAMPAIGN, PHONE, percentile, private_server
from bench.loadgen import RawClients, post_request
from bench.registry import BenchContext, Measured, benchmark
from callqueue.config import Settings

BULK_ROWS = 1_000
BULK_CLIENTS = 4
LATENCY_CLIENTS = 50
ROUNDS = 3
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# The seed's example call (README, "Queue a single call"); custom_call_id is made unique.
SEED_CALL: dict[str, Any] = {
    "phone_number": PHONE,
    "campaign_id": CAMPAIGN,
    "call_config": {
        "voice": "en-US",
        "max_duration": 1800,
        "recording_enabled": True,
        "flow_name": "wishfin-test",
        "answer_url": "https://your-domain.com/outbound-answer",
        "variables": {"name": "John Doe", "email": "john@example.com"},
    },
    "custom_call_id": "call-456",
    "scheduled_at": "2025-01-15T14:30:00Z",
    "priority": "normal",
    "max_retries": 3,
}


def seed_bulk(batch_id: str, rows: int) -> dict[str, Any]:
    """The seed's bulk example (``batch_id`` + ``calls``), rows shaped like its
    backend-integration snippet, one phone number per row (as tests/e2e does)."""
    return {
        "batch_id": batch_id,
        "calls": [
            {
                "phone_number": f"+9198765{i:05d}",
                "campaign_id": CAMPAIGN,
                "call_config": {
                    "flow_name": "wishfin-test",
                    "variables": {"name": f"Customer {i}"},
                    "answer_url": "https://your-domain.com/outbound-answer",
                },
            }
            for i in range(rows)
        ],
    }


# -- the server process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without any callqueue setting (nor proxy), plus ``settings``."""
    ours = {name.upper() for name in Settings.model_fields}
    proxies = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours | proxies}
    env.update({"LOG_LEVEL": "WARNING", **settings})
    return env


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: httpx builds one per client otherwise (tens of ms of
    CPU each, though these clients only speak plain HTTP)."""
    return ssl.create_default_context()


def http_client(base_url: str, connections: int = 1, timeout_s: float = 60.0) -> httpx.AsyncClient:
    """A keep-alive client for the loopback server (no proxy from the environment)."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout_s,
        trust_env=False,
        verify=_tls_context(),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: Mapping[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process, and of this one (``bench``)."""
    snap = {name: process_cpu_s(pid) for name, pid in pids.items() if pid is not None}
    snap["bench"] = time.process_time()
    return snap


def cpu_per(before: dict[str, float], after: dict[str, float], count: int, unit: str) -> str:
    """``name X µs/unit`` for each process, between two snapshots."""
    return ", ".join(
        f"{name} {(after[name] - before[name]) * 1e6 / count:,.0f} µs/{unit}" for name in before
    )


@dataclass
class ServerProcess:
    """A running ``callqueue <command>`` process."""

    popen: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    home: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"the server process exited with {self.popen.returncode}:\n{self.output()}"
            )


async def _wait_healthy(proc: ServerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with http_client(proc.base_url, timeout_s=2.0) as client:
        while True:
            proc.check_alive()
            try:
                reply = await client.get("/api/health")
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if reply.status_code == 200:
                    return
                last = f"{reply.status_code} {reply.text[:300]}"
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.base_url}/api/health not 200 within {timeout_s:.0f} s ({last}):\n"
                    + proc.output()
                )
            await asyncio.sleep(0.05)


def _spawn(
    command: str, env: dict[str, str], home: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "callqueue.cli", command],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _stop(popen: subprocess.Popen[bytes]) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()


@contextlib.asynccontextmanager
async def callqueue_process(
    command: str, settings: Mapping[str, str], name: str = "server", port: int | None = None
) -> AsyncIterator[ServerProcess]:
    """``python -m callqueue.cli <command>`` on ``port`` (default: a free loopback port) with
    ``settings`` (env), in a directory of its own (no stray ``.env``), healthy when yielded;
    SIGTERM on exit (a non-zero exit code is an error)."""
    with tempfile.TemporaryDirectory(prefix=f"cq-bench-{name}-") as tmp:
        home = Path(tmp)
        port = port or free_port()
        env = settings_env({"HOST": "127.0.0.1", "PORT": str(port), **settings})
        log_path = home / "out.log"
        popen = _spawn(command, env, home, log_path)
        proc = ServerProcess(popen, f"http://127.0.0.1:{port}", log_path, home)
        code: int | None = None
        try:
            await _wait_healthy(proc, START_TIMEOUT_S)
            yield proc
        finally:
            code = await asyncio.to_thread(_stop, popen)
        if code != 0:
            raise RuntimeError(f"callqueue {command} exited with {code}:\n{proc.output()}")


@contextlib.contextmanager
def maybe_profile(proc: ServerProcess, label: str, notes: list[str]) -> Iterator[None]:
    """With ``BENCH_PYSPY=1`` and py-spy on PATH: a py-spy recording of ``proc`` while the
    block runs (speedscope format, in $TMPDIR/callqueue-bench-profiles/)."""
    spy = shutil.which("py-spy")
    if not os.environ.get("BENCH_PYSPY") or spy is None:
        yield
        return
    out_dir = Path(tempfile.gettempdir()) / "callqueue-bench-profiles"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{label}.speedscope.json"
    recorder = subprocess.Popen(
        [spy, "record", "--pid", str(proc.pid), "--rate", "250", "--format", "speedscope",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)  # let py-spy attach before the measured part starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(20)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
        notes.append(f"py-spy profile of the server process ({label}): {out}")


def _api_settings(server_url: str, queue: str) -> dict[str, str]:
    return {
        "REDIS_URL": server_url,
        "QUEUE_NAME": queue,
        # No dispatcher runs (`callqueue api`); the limits do not matter, but keep them open.
        "MAX_CONCURRENT_CALLS": "0",
        "RATE_LIMIT_PER_SECOND": "0",
    }


async def _run_clients(clients: int, work: Callable[[int], Awaitable[None]]) -> None:
    await asyncio.gather(*(work(c) for c in range(clients)))


# -- POST /api/calls/bulk-queue -----------------------------------------------------------------


async def _bulk_round(base_url: str, bodies: list[bytes], clients: int) -> tuple[float, int]:
    """``clients`` keep-alive clients share ``bodies`` (each one batch); returns
    (seconds from the first request to the last answer, calls queued)."""
    queued = 0
    next_body = 0
    headers = {"content-type": "application/json"}
    conns = [http_client(base_url) for _ in range(clients)]
    try:
        for conn in conns:  # connect outside the timing (liveness: calls queued by an earlier
            # round wait for a worker this `callqueue api` does not have, so readiness is 503)
            (await conn.get("/api/health/live")).raise_for_status()

        async def client(c: int) -> None:
            nonlocal queued, next_body
            while next_body < len(bodies):
                body = bodies[next_body]
                next_body += 1
                reply = await conns[c].post("/api/calls/bulk-queue", content=body, headers=headers)
                if reply.status_code != 201:
                    raise RuntimeError(f"bulk-queue answered {reply.status_code}: {reply.text}")
                queued += int(reply.json()["queued"])

        t0 = time.perf_counter()
        await _run_clients(clients, client)
        elapsed = time.perf_counter() - t0
    finally:
        for conn in conns:
            await conn.aclose()
    return elapsed, queued


@benchmark("http_bulk_enqueue", "http_bulk_enqueue_per_s")
async def http_bulk_enqueue(ctx: BenchContext) -> Measured:
    """POST /api/calls/bulk-queue, 1,000 seed rows a request, to a `callqueue api` process."""
    batches = ctx.n(12, 6)  # per round
    rates: list[float] = []
    notes: list[str] = []
    cpu: list[str] = []
    with private_server() as server:
        settings = _api_settings(server.local_url, "httpbulk")
        async with callqueue_process("api", settings, "bulk") as proc:
            # Warm-up (first requests build pydantic/FastAPI state): 2 batches, not timed.
            warm = [orjson.dumps(seed_bulk(f"warm-{i}", BULK_ROWS)) for i in range(2)]
            await _bulk_round(proc.base_url, warm, 1)
            for r in range(ROUNDS):
                bodies = [
                    orjson.dumps(seed_bulk(f"bench-{r}-{i}", BULK_ROWS)) for i in range(batches)
                ]
                pids = {"api": proc.pid, "valkey": server.pid}
                before = cpu_snapshot(pids)
                with maybe_profile(proc, f"http_bulk_round{r}", notes):
                    elapsed, queued = await _bulk_round(proc.base_url, bodies, BULK_CLIENTS)
                cpu.append(cpu_per(before, cpu_snapshot(pids), queued, "call"))
                proc.check_alive()
                if queued != batches * BULK_ROWS:
                    raise RuntimeError(f"{queued} calls queued, expected {batches * BULK_ROWS}")
                rates.append(queued / elapsed)
    return Measured(
        {"http_bulk_enqueue_per_s": statistics.median(rates)},
        n={"calls_per_round": batches * BULK_ROWS, "batch": BULK_ROWS, "clients": BULK_CLIENTS,
           "rounds": ROUNDS, "server": "callqueue api (1 process)"},
        notes=["http bulk-queue rounds: " + ", ".join(f"{r:,.0f}/s" for r in rates)
               + f" ({BULK_CLIENTS} keep-alive clients, {BULK_ROWS}-row batches)",
               "http bulk-queue CPU by process: " + "; ".join(cpu), *notes],
    )  # fmt: skip


# -- POST /api/calls/queue latency ----------------------------------------------------------------


async def _latency_round(
    base_url: str, bodies: list[bytes], clients: int
) -> tuple[list[float], float]:
    """``clients`` concurrent keep-alive connections (the raw client of bench/loadgen.py), each
    sending one request at a time until ``bodies`` are used up; returns (latencies in ms,
    seconds for the round)."""
    latencies: list[float] = []
    next_body = 0
    host, port = _host_port(base_url)
    requests = [post_request(host, "/api/calls/queue", body) for body in bodies]
    async with RawClients(host, port, clients) as pool:  # connected outside the timing

        async def client(c: int) -> None:
            nonlocal next_body
            conn = pool.connections[c]
            while next_body < len(requests):
                request = requests[next_body]
                next_body += 1
                t0 = time.perf_counter()
                status, body = await conn.send(request)
                latencies.append((time.perf_counter() - t0) * 1000)
                if status != 201:
                    raise RuntimeError(f"queue answered {status}: {body[:300]!r}")

        with _no_gc_pauses():
            t0 = time.perf_counter()
            await _run_clients(clients, client)
            elapsed = time.perf_counter() - t0
    return latencies, elapsed


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """The garbage collector off in this (load generator) process while it measures: a full
    collection of its heap stalls every request in flight, and that is not the server's
    latency. The server runs as shipped."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _host_port(base_url: str) -> tuple[str, int]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    return host, int(port)


def _single_bodies(prefix: str, count: int) -> list[bytes]:
    return [
        orjson.dumps({**SEED_CALL, "custom_call_id": f"{prefix}-{i:06d}"}) for i in range(count)
    ]


@benchmark("http_queue_latency", "http_queue_p50_ms", "http_queue_p99_ms", "http_queue_per_s")
async def http_queue_latency(ctx: BenchContext) -> Measured:
    """POST /api/calls/queue latency, 50 concurrent keep-alive clients, to `callqueue api`."""
    per_round = ctx.n(1_000, 500)
    cpu: list[str] = []
    p50s: list[float] = []
    p99s: list[float] = []
    rates: list[float] = []
    notes: list[str] = []
    maxima: list[float] = []
    with private_server() as server:
        settings = _api_settings(server.local_url, "httpq")
        async with callqueue_process("api", settings, "queue") as proc:
            await _latency_round(proc.base_url, _single_bodies("warm", 300), LATENCY_CLIENTS)
            for r in range(ROUNDS):
                bodies = _single_bodies(f"q{r}", per_round)
                pids = {"api": proc.pid, "valkey": server.pid}
                before = cpu_snapshot(pids)
                with maybe_profile(proc, f"http_queue_round{r}", notes):
                    latencies, elapsed = await _latency_round(
                        proc.base_url, bodies, LATENCY_CLIENTS
                    )
                cpu.append(cpu_per(before, cpu_snapshot(pids), len(latencies), "request"))
                proc.check_alive()
                p50s.append(percentile(latencies, 50))
                p99s.append(percentile(latencies, 99))
                maxima.append(max(latencies))
                rates.append(len(latencies) / elapsed)
    return Measured(
        {
            "http_queue_p50_ms": statistics.median(p50s),
            "http_queue_p99_ms": statistics.median(p99s),
            "http_queue_per_s": statistics.median(rates),
        },
        n={"requests_per_round": per_round, "clients": LATENCY_CLIENTS, "rounds": ROUNDS,
           "warmup": 300, "server": "callqueue api (1 process)"},
        notes=["http queue rounds (p50 / p99 / max ms, requests/s): " + "; ".join(
                   f"{a:.1f} / {b:.1f} / {c:.1f}, {d:,.0f}/s"
                   for a, b, c, d in zip(p50s, p99s, maxima, rates, strict=True)),
               "http queue CPU by process (bench = the 50 raw keep-alive clients): "
               + "; ".join(cpu),
               *notes],
    )  # fmt: skip
