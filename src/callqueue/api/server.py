"""Serving the API with uvicorn inside our own event loop, optionally next to a dispatcher on
the same runtime (``callqueue up``), with one graceful stop for both.

On SIGTERM/SIGINT: the dispatcher stops claiming, the server stops accepting connections and
finishes the requests under way, dial requests in flight finish and are recorded, then the
process exits (within SHUTDOWN_TIMEOUT plus a moment). A second signal cuts the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn

from callqueue.api.app import create_app
from callqueue.api.read_timeout import read_timeout_protocol
from callqueue.config import ConfigError
from callqueue.dispatcher import Dispatcher
from callqueue.heap import settle_heap
from callqueue.runtime import Runtime, install_stop_signals, make_dispatcher

log = logging.getLogger(__name__)

#: Longest wait for HTTP requests under way at shutdown.
HTTP_GRACE_S = 3.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the process's stop is handled in ``serve``),
    telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts so a busy port is a clear error."""
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(f"HOST/PORT: cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def make_server(runtime: Runtime) -> _Server:
    app = create_app(runtime.settings, runtime)
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the process's JSON logging
        lifespan="on",
        timeout_graceful_shutdown=int(HTTP_GRACE_S),
        server_header=False,
        proxy_headers=True,
        http=read_timeout_protocol(runtime.settings.request_read_timeout),
    )
    return _Server(config)


Announce = Callable[[Runtime, Dispatcher | None], None]


class _Stopper:
    """The first stop signal asks everything to finish; a second one cuts the wait short."""

    def __init__(self, server: _Server, dispatcher: Dispatcher | None) -> None:
        self.server = server
        self.dispatcher = dispatcher
        self.requested = asyncio.Event()
        self.forced = False
        self._main = asyncio.current_task()

    def request(self) -> None:
        if self.requested.is_set():
            log.warning("second stop signal: exiting without waiting")
            self.forced = True
            self.server.force_exit = True
            if self._main is not None:
                self._main.cancel()
            return
        log.info("stopping: no new dials; finishing dials and requests under way")
        self.requested.set()
        self.server.should_exit = True
        if self.dispatcher is not None:
            self.dispatcher.request_stop()

    async def wait(self, http: asyncio.Task[None]) -> None:
        """Until a stop is requested (or the HTTP server ends on its own)."""
        waiter = asyncio.create_task(self.requested.wait())
        await asyncio.wait({http, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self.requested.is_set():
            log.error("the HTTP server stopped unexpectedly; stopping")
            self.request()


async def _listening(server: _Server, http: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(server.listening.wait())
    await asyncio.wait({http, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if http.done() and not http.cancelled() and http.exception() is not None:
        raise RuntimeError("the HTTP server failed to start") from http.exception()


async def serve(runtime: Runtime, *, dispatch: bool, announce: Announce | None = None) -> None:
    """Runs the API (and, with ``dispatch``, a dispatcher) until a stop signal."""
    settings = runtime.settings
    dispatcher = make_dispatcher(runtime) if dispatch else None  # may refuse the carrier
    server = make_server(runtime)
    sock = bind_socket(settings.host, settings.port)
    stopper = _Stopper(server, dispatcher)
    install_stop_signals(stopper.request)
    http = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
    try:
        await _listening(server, http)
        if dispatcher is not None:
            await dispatcher.start()
        if announce is not None:
            announce(runtime, dispatcher)
        settle_heap()
        await stopper.wait(http)
        await _shutdown(http, dispatcher, settings.shutdown_timeout)
        log.info("stopped")
    except asyncio.CancelledError:
        if not stopper.forced:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        sock.close()
        if not http.done():
            http.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await http


async def _shutdown(
    http: asyncio.Task[None], dispatcher: Dispatcher | None, timeout_s: float
) -> None:
    jobs: list[asyncio.Task[None]] = [http]
    if dispatcher is not None:
        jobs.append(asyncio.create_task(dispatcher.stop(timeout_s)))
    done, pending = await asyncio.wait(jobs, timeout=timeout_s + 1.0)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("shutdown step failed", exc_info=task.exception())
