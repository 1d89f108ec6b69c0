"""Wires settings to live objects: the Redis connection (embedded when no REDIS_URL), the
queue, the carrier and the dispatcher. Shared by every CLI command and by the API app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from callqueue.agent_watch import AgentWatch
from callqueue.carriers.base import Carrier, EventReporter
from callqueue.carriers.plivo import PlivoCarrier, PlivoConfig
from callqueue.carriers.simulator import DEFAULT_MIX, SimProfile, SimulatedCarrier
from callqueue.carriers.twilio import TwilioCarrier, TwilioConfig
from callqueue.config import ConfigError, Settings
from callqueue.dispatcher import Dispatcher
from callqueue.embedded import EmbeddedServer, ensure_local_server
from callqueue.engine.connection import connect, describe
from callqueue.engine.durability import DurabilityUnavailable
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.queue import CallQueue
from callqueue.heap import settle_heap
from callqueue.status_webhooks import WebhookDeliverer

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    client: Any
    queue: CallQueue
    url: str
    server: EmbeddedServer | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        """Running on the embedded server (REDIS_URL unset or empty)."""
        return not self.settings.redis_url

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)


async def open_runtime(settings: Settings, *, enqueues: bool = True) -> Runtime:
    """Connects (starting the embedded server when REDIS_URL is unset) and loads the engine.
    ``enqueues``: this process queues calls, so the server must be able to do
    ENQUEUE_DURABILITY (checked now; a worker or a read-only command does not need it)."""
    server: EmbeddedServer | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        url, server = await asyncio.to_thread(ensure_local_server, settings.data_dir)
    try:
        client = connect(
            url, cluster=settings.redis_cluster or None, tls_ca=settings.redis_tls_ca or None
        )
    except ValueError as exc:  # a URL or option connect() cannot use: a setting to fix
        if server is not None:
            server.stop()
        raise ConfigError(f"REDIS_URL: {exc}") from None
    queue = CallQueue(client, settings.queue_name, settings.queue_options(), settings.durability())
    try:
        await queue.prepare()
    except Exception as exc:
        await client.aclose()
        if server is not None:
            server.stop()
        raise ConfigError(f"REDIS_URL: cannot use {describe(url)}: {exc}") from exc
    try:
        # The embedded server is ours to configure (REDIS_URL unset).
        remarks = (
            await queue.check_durability(may_configure=not settings.redis_url) if enqueues else []
        )
    except DurabilityUnavailable as exc:
        await client.aclose()
        if server is not None:
            server.stop()
        mode = settings.enqueue_durability.value
        raise ConfigError(f"ENQUEUE_DURABILITY={mode}: {exc}") from None
    for remark in remarks:
        log.info("ENQUEUE_DURABILITY=%s: %s", settings.enqueue_durability.value, remark)
    return Runtime(settings, client, queue, url, server)


def sim_profile(settings: Settings) -> SimProfile:
    return SimProfile(
        mix=settings.sim_mix or dict(DEFAULT_MIX),
        ring_s=settings.sim_ring_range,
        talk_s=settings.sim_talk_range,
        dial_latency_s=settings.sim_dial_latency,
        refuse_rate=settings.sim_refuse_rate,
        reject_rate=settings.sim_reject_rate,
        seed=settings.sim_seed,
    )


def make_carrier(settings: Settings, reporter: EventReporter) -> Carrier:
    name = settings.carrier_name
    if name == "simulator":
        return SimulatedCarrier(reporter, sim_profile(settings), settings.sim_ledger)
    if name == "plivo":
        return PlivoCarrier(plivo_config(settings))
    if name == "twilio":
        return TwilioCarrier(twilio_config(settings))
    raise ConfigError(f"CARRIER: {name!r} is not available in this version yet")


def _require(needed: dict[str, str | None], carrier: str, callbacks: str) -> None:
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: required with CARRIER={carrier} (credentials, the caller "
            f"id, and the public base URL where the carrier reaches {callbacks})"
        )


def plivo_config(settings: Settings) -> PlivoConfig:
    needed = {
        "PLIVO_AUTH_ID": settings.plivo_auth_id,
        "PLIVO_AUTH_TOKEN": settings.plivo_auth_token,
        "PLIVO_NUMBER": settings.plivo_number,
        "PUBLIC_URL": settings.public_url,
    }
    _require(needed, "plivo", "/api/webhooks/plivo/...")
    return PlivoConfig(
        auth_id=settings.plivo_auth_id or "",
        auth_token=settings.plivo_auth_token or "",
        number=settings.plivo_number or "",
        public_url=settings.public_url or "",
        api_url=settings.plivo_api_url,
        agent_server_url=settings.agent_server_url,
        # A dial request must end within the dial lease, or the slot's lease would not cover it.
        timeout_s=min(10.0, settings.dial_lease_seconds * 0.8),
        max_connections=settings.queue_workers + 4,
    )


def twilio_config(settings: Settings) -> TwilioConfig:
    needed = {
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
        "TWILIO_NUMBER": settings.twilio_number,
        "PUBLIC_URL": settings.public_url,
    }
    _require(needed, "twilio", "/api/webhooks/twilio/status")
    return TwilioConfig(
        account_sid=settings.twilio_account_sid or "",
        auth_token=settings.twilio_auth_token or "",
        number=settings.twilio_number or "",
        public_url=settings.public_url or "",
        api_url=settings.twilio_api_url,
        agent_server_url=settings.agent_server_url,
        # A dial request must end within the dial lease, or the slot's lease would not cover it.
        timeout_s=min(10.0, settings.dial_lease_seconds * 0.8),
        max_connections=settings.queue_workers + 4,
    )


def make_dispatcher(runtime: Runtime) -> Dispatcher:
    writer = EventWriter(runtime.queue, spool=runtime.settings.event_spool_path)
    carrier = make_carrier(runtime.settings, writer)
    runtime._closers.append(carrier.aclose)
    dispatcher = Dispatcher(
        runtime.queue, carrier, writer, concurrency=runtime.settings.queue_workers
    )
    settings = runtime.settings
    dispatcher.add_watch(
        WebhookDeliverer(
            runtime.queue,
            settings.webhook_secret,
            consumer=dispatcher.worker_id,
            concurrency=settings.webhook_concurrency,
            timeout_s=settings.webhook_timeout,
            max_attempts=settings.webhook_max_attempts,
        )
    )
    if agent_check_enabled(runtime.settings):
        watch = AgentWatch(
            runtime.settings.agent_server_url,
            dispatcher,
            interval_s=runtime.settings.agent_check_interval,
        )
        dispatcher.add_watch(watch)
    return dispatcher


def agent_check_enabled(settings: Settings) -> bool:
    """Whether dispatch pauses while the agent server is down: on by default with a real
    carrier (its calls go to the bot), off with the simulator (nothing to answer them)."""
    if settings.agent_check == "auto":
        return settings.carrier_name != "simulator"
    return settings.agent_check == "on"


def install_stop_signals(stop: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)


async def run_worker(settings: Settings) -> None:
    """``callqueue worker``: dispatch until SIGTERM/SIGINT, then stop gracefully."""
    runtime = await open_runtime(settings, enqueues=False)
    try:
        dispatcher = make_dispatcher(runtime)
        install_stop_signals(dispatcher.request_stop)
        log.info(
            "worker %s dispatching queue %r on %s with carrier %s",
            dispatcher.worker_id,
            runtime.queue.name,
            describe(runtime.url),
            dispatcher.carrier.name,
        )
        await dispatcher.start()
        settle_heap()  # as `callqueue up` does once it is serving
        await dispatcher.stop_requested()
        await dispatcher.stop(settings.shutdown_timeout)
        log.info("worker %s stopped", dispatcher.worker_id)
    finally:
        await runtime.aclose()
