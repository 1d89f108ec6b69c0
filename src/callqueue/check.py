"""``callqueue check``: can this configuration place calls? (The seed's
``test_queue_agent_connection.py`` as a command.)

Each check gives a :class:`CheckResult` (name, ok, detail, required); they run concurrently,
each bounded by a timeout:

* ``redis``: the Redis of REDIS_URL answers PING (with REDIS_URL unset: the embedded server in
  DATA_DIR, the one ``callqueue up`` would use; started for the check and stopped after it when
  none is running, which the detail says).
* ``library``: the engine's function library loads there (FUNCTION LOAD).
* ``carrier``: the carrier's credentials work. Simulator: nothing to check. A real carrier is
  built as ``callqueue up`` builds it (a missing setting fails the check) and asked its
  ``check_credentials()`` (Plivo: an account lookup at PLIVO_API_URL with PLIVO_AUTH_ID /
  PLIVO_AUTH_TOKEN); a carrier without one is reported as not verified (not required).
* ``agent``: ``GET {AGENT_SERVER_URL}/health`` answers 2xx. Required with a real carrier
  (its calls are answered by the agent server); informational with the simulator, whose
  calls never reach it.
* ``public_url``: PUBLIC_URL is set and ``GET {PUBLIC_URL}/api/health`` reaches a callqueue
  service of the same queue from here. Required with a real carrier (its callbacks come
  there); informational with the simulator.

The command exits 0 when every required check passes, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.markup import escape

from callqueue.carriers.base import Carrier
from callqueue.config import ConfigError, Settings
from callqueue.embedded import EmbeddedServer, ensure_local_server
from callqueue.engine.connection import AsyncClient, connect, describe, ping, server_version
from callqueue.engine.queue import CallQueue
from callqueue.engine.scripts import scripts
from callqueue.models import CarrierEvent, EndFacts
from callqueue.runtime import make_carrier

__all__ = [
    "CHECK_TIMEOUT_S",
    "CheckResult",
    "passed",
    "print_results",
    "results_json",
    "route_logs_to_stderr",
    "run_checks",
]

#: Longest wait for each check's network steps.
CHECK_TIMEOUT_S = 5.0
SIMULATOR = "simulator"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    #: False: shown, but a failure does not fail the command.
    required: bool = True

    @property
    def blocking(self) -> bool:
        """A required check that failed."""
        return self.required and not self.ok


def passed(results: list[CheckResult]) -> bool:
    """Every required check passed."""
    return not any(r.blocking for r in results)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _real_carrier(settings: Settings) -> bool:
    return settings.carrier_name != SIMULATOR


# -- Redis and the function library ------------------------------------------------------------


async def check_redis(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> list[CheckResult]:
    """The ``redis`` and ``library`` checks, on a connection made as ``open_runtime`` makes
    it (the embedded server when REDIS_URL is unset)."""
    server: EmbeddedServer | None = None
    if settings.redis_url:
        url = settings.redis_url
        where = describe(url)
    else:
        try:
            url, server = await asyncio.to_thread(ensure_local_server, settings.data_dir)
        except Exception as exc:
            return [
                CheckResult(
                    "redis",
                    False,
                    f"REDIS_URL is unset and the embedded server in {settings.data_dir} "
                    f"could not start: {_reason(exc)}",
                ),
                CheckResult("library", False, "not tried: no Redis"),
            ]
        how = "started for this check, then stopped" if server else "already running"
        where = f"embedded server {describe(url)} (REDIS_URL unset; {how})"
    try:
        try:
            client = connect(
                url, cluster=settings.redis_cluster or None, tls_ca=settings.redis_tls_ca or None
            )
        except ValueError as exc:
            return [
                CheckResult("redis", False, f"REDIS_URL: {exc}"),
                CheckResult("library", False, "not tried: no Redis"),
            ]
        try:
            return await _redis_and_library(client, settings, where, timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _redis_and_library(
    client: AsyncClient, settings: Settings, where: str, timeout_s: float
) -> list[CheckResult]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await ping(client)
            version = await server_version(client)
    except TimeoutError:
        return [
            CheckResult("redis", False, f"{where}: no answer within {timeout_s:g} s"),
            CheckResult("library", False, "not tried: no Redis"),
        ]
    except Exception as exc:
        return [
            CheckResult("redis", False, f"{where}: {_reason(exc)}"),
            CheckResult("library", False, "not tried: no Redis"),
        ]
    took_ms = (time.perf_counter() - started) * 1000
    server = f" ({version})" if version else ""
    redis = CheckResult("redis", True, f"{where} answers in {took_ms:.0f} ms{server}")
    name = scripts().library.name
    try:
        queue = CallQueue(client, settings.queue_name, settings.queue_options())
        async with asyncio.timeout(timeout_s):
            await queue.prepare()
    except TimeoutError:
        return [redis, CheckResult("library", False, f"{name}: no answer within {timeout_s:g} s")]
    except Exception as exc:
        return [redis, CheckResult("library", False, f"{name} did not load: {_reason(exc)}")]
    return [redis, CheckResult("library", True, f"function library {name} loaded")]


# -- the carrier ----------------------------------------------------------------------------------


class _NoEvents:
    """An event reporter for a carrier that only checks its credentials."""

    async def report(
        self,
        call_id: str,
        attempt: int,
        kind: CarrierEvent,
        *,
        carrier_call_id: str = "",
        end: EndFacts | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        return None


#: Stands in for an unset PUBLIC_URL while the carrier is built for its credentials check
#: (PUBLIC_URL has a check of its own).
_NO_PUBLIC_URL = "http://public-url.invalid"


def _make_carrier(settings: Settings) -> Carrier:
    """The carrier as ``callqueue up`` builds it (PUBLIC_URL aside)."""
    if not settings.public_url:
        settings = settings.model_copy(update={"public_url": _NO_PUBLIC_URL})
    return make_carrier(settings, _NoEvents())


async def check_carrier(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> CheckResult:
    name = settings.carrier_name
    if name == SIMULATOR:
        return CheckResult("carrier", True, "simulated carrier, no credentials needed")
    try:
        carrier = _make_carrier(settings)
    except ConfigError as exc:
        return CheckResult("carrier", False, f"{name}: {exc}")
    except Exception as exc:
        return CheckResult("carrier", False, f"{name}: cannot be set up: {_reason(exc)}")
    try:
        check: Callable[[], Awaitable[tuple[bool, str]]] | None = getattr(
            carrier, "check_credentials", None
        )
        if check is None:
            return CheckResult(
                "carrier",
                False,
                f"{name}: this carrier has no credentials check; not verified (not required)",
                required=False,
            )
        try:
            async with asyncio.timeout(timeout_s):
                ok, reason = await check()
        except TimeoutError:
            return CheckResult("carrier", False, f"{name}: no answer within {timeout_s:g} s")
        except Exception as exc:
            return CheckResult(
                "carrier", False, f"{name}: credentials check failed: {_reason(exc)}"
            )
        api_url = getattr(getattr(carrier, "config", None), "api_url", None)
        where = f" at {api_url}" if isinstance(api_url, str) and api_url else ""
        return CheckResult("carrier", ok, f"{name}{where}: {reason}")
    finally:
        with contextlib.suppress(Exception):
            await carrier.aclose()


# -- the agent server and PUBLIC_URL ---------------------------------------------------------------


async def check_agent(settings: Settings, http: httpx.AsyncClient) -> CheckResult:
    required = _real_carrier(settings)
    url = settings.agent_server_url.rstrip("/") + "/health"
    note = "" if required else " (not required with the simulated carrier)"
    try:
        reply = await http.get(url)
    except httpx.HTTPError as exc:
        return CheckResult(
            "agent", False, f"GET {url}: unreachable: {_reason(exc)}{note}", required
        )
    if reply.is_success:
        return CheckResult("agent", True, f"GET {url}: {reply.status_code}{note}", required)
    return CheckResult("agent", False, f"GET {url}: answered {reply.status_code}{note}", required)


def _private_host(url: str) -> bool:
    """True for localhost and loopback / private / link-local addresses (a carrier on the
    internet cannot call them)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


async def check_public_url(settings: Settings, http: httpx.AsyncClient) -> CheckResult:
    real = _real_carrier(settings)
    name = settings.carrier_name
    if not settings.public_url:
        if real:
            return CheckResult(
                "public_url",
                False,
                f"PUBLIC_URL is not set: required with CARRIER={name}, whose callbacks come to "
                "{PUBLIC_URL}/api/webhooks/...",
            )
        return CheckResult(
            "public_url", True, "not set (not needed with the simulated carrier)", required=False
        )
    note = "" if real else " (not required with the simulated carrier)"
    url = settings.public_url.rstrip("/") + "/api/health"
    try:
        reply = await http.get(url)
    except httpx.HTTPError as exc:
        return CheckResult(
            "public_url", False, f"GET {url}: unreachable from here: {_reason(exc)}{note}", real
        )
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "queue" not in body or "status" not in body:
        return CheckResult(
            "public_url",
            False,
            f"GET {url}: answered {reply.status_code}, not a callqueue health reply{note}",
            real,
        )
    if body["queue"] != settings.queue_name:
        return CheckResult(
            "public_url",
            False,
            f"GET {url}: a callqueue service of queue {body['queue']!r}, not "
            f"{settings.queue_name!r}: callbacks would go to another queue{note}",
            real,
        )
    state = str(body["status"])
    if body.get("reason"):
        state += f": {body['reason']}"
    detail = f"GET {url}: {reply.status_code}, callqueue reachable (service {state})"
    if real and _private_host(settings.public_url):
        detail += f"; note: {urlsplit(settings.public_url).hostname} cannot be reached by {name}"
    return CheckResult("public_url", True, detail + note, real)


# -- all of them ------------------------------------------------------------------------------


async def run_checks(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> list[CheckResult]:
    """Every check, concurrently; in the order redis, library, carrier, agent, public_url."""
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as http:
        redis, carrier, agent, public = await asyncio.gather(
            check_redis(settings, timeout_s),
            check_carrier(settings, timeout_s),
            check_agent(settings, http),
            check_public_url(settings, http),
        )
    return [*redis, carrier, agent, public]


def results_json(results: list[CheckResult]) -> dict[str, Any]:
    return {"ok": passed(results), "checks": [asdict(r) for r in results]}


def print_results(results: list[CheckResult], console: Console) -> None:
    """One line per check: a green ✓ or a red ✗, the name and the reason; then a summary."""
    width = max(len(r.name) for r in results) if results else 0
    for r in results:
        mark = "[green]✓[/green]" if r.ok else "[red]✗[/red]"
        style = "green" if r.ok else "red"
        line = f"{mark} [{style}]{r.name:<{width}}[/{style}]  {escape(r.detail)}"
        console.print(line, soft_wrap=True)
    failed = [r.name for r in results if r.blocking]
    if failed:
        summary = f"[bold red]{len(failed)} required check(s) failed: {', '.join(failed)}"
    else:
        summary = "[bold green]all required checks passed"
    console.print(summary, soft_wrap=True)


def route_logs_to_stderr() -> None:
    """Keep stdout for the results: logs (JSON lines on stdout by default) go to stderr, and
    httpx's per-request INFO lines (the checks' own probes) are dropped."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
