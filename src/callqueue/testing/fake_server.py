"""What the local carrier fakes (:mod:`fake_plivo`, :mod:`fake_twilio`) have in common: the
uvicorn server they run in, their life cycle, the ledger of live calls and API requests, and
the background tasks that play calls and deliver callbacks.

Each fake subclasses :class:`FakeCarrierServer` and adds its carrier's API, calls and
callbacks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

__all__ = ["CallbackOutcome", "FakeCarrierServer", "serve_asgi"]

#: Connections (and callbacks in flight) from a fake to the app at most.
_CALLBACK_CONNECTIONS = 32

_T = TypeVar("_T")


class _Timed(Protocol):
    @property
    def at(self) -> float: ...


class _Hangable(Protocol):
    @property
    def hangup_requested(self) -> asyncio.Event: ...


class _Delivery(Protocol):
    attempts: int
    status: int | None
    error: str | None
    finished_at: float | None

    @property
    def ok(self) -> bool: ...


class CallbackOutcome:
    """``ok`` and ``done`` of a callback record (a dataclass giving these two fields)."""

    __slots__ = ()

    status: int | None  # HTTP status of the last attempt; None when none answered
    finished_at: float | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def done(self) -> bool:
        return self.finished_at is not None


_RequestT = TypeVar("_RequestT", bound=_Timed)
_Body = TypeVar("_Body")


# ------------------------------------------------------------------------------------ the server


class _QuietServer(uvicorn.Server):
    """uvicorn that leaves the process's signal handlers alone, tells when it listens and
    stops as soon as it is asked (not at its next 0.1 s tick)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self._exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown without its fixed pauses: stop listening, ask every connection
        to close after its response, wait (briefly) for them, cancel what is left."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                # uvicorn offers no event for "all connections closed": poll, briefly.
                while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
        except TimeoutError:
            for task in list(self.server_state.tasks):
                task.cancel()


@asynccontextmanager
async def serve_asgi(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serves ``app`` with uvicorn in the running loop; yields its base URL (a free port by
    default) and stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        server_header=False,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{app!r}")
    listening = asyncio.create_task(server.listening.wait())
    try:
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            task.result()  # raises the start-up error
            raise RuntimeError("the local server stopped before listening")
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        listening.cancel()
        server.request_exit()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=3.0)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock.close()


# ------------------------------------------------------------------------------------ helpers


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every fake (building one costs tens of milliseconds)."""
    return ssl.create_default_context()


def _now_wall() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _always(scenario: _T) -> Callable[[Any], _T]:
    def fixed(_body: Any) -> _T:
        return scenario

    return fixed


def _scenario_source(
    given: _T | Callable[[_Body], _T] | None, default: _T, kind: type[_T]
) -> Callable[[_Body], _T]:
    """A scenario source from what a fake was given: a source, one scenario, or nothing."""
    if given is None:
        given = default
    if isinstance(given, kind):
        return _always(given)
    return given  # type: ignore[return-value]


def _seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _basic_auth_matches(request: Request, user: str, password: str) -> bool:
    """Whether the request's HTTP Basic credentials are ``user`` and ``password``."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_password = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given_user.encode(), user.encode()) and secrets.compare_digest(
        given_password.encode(), password.encode()
    )


def _retry_after(seconds: float | None) -> dict[str, str] | None:
    """A ``Retry-After`` header, when a scenario gives one."""
    return {"Retry-After": f"{seconds:g}"} if seconds is not None else None


# ------------------------------------------------------------------------------- the base class


class FakeCarrierServer(Generic[_RequestT]):
    """A carrier's API on 127.0.0.1, with the ledger every fake keeps: :attr:`api_requests`,
    :attr:`live_history`, :attr:`max_live`.

    Subclasses set :attr:`_name` and :attr:`_log` and give :meth:`_routes`,
    :meth:`_unrouted` (the answer to a request no route takes) and :meth:`_is_call_request`.
    """

    #: The class's name in error messages ("FakePlivo").
    _name: ClassVar[str]
    #: Where the fake logs.
    _log: ClassVar[logging.Logger]

    def __init__(
        self,
        host: str,
        port: int,
        callback_retry_delay_s: float,
        callback_timeout_s: float,
        api_rate_limit: tuple[int, float] | None,
    ) -> None:
        self._host = host
        self._port = port
        self._retry_delay_s = callback_retry_delay_s
        self._callback_timeout_s = callback_timeout_s
        self._api_rate_limit = api_rate_limit

        self.api_requests: list[_RequestT] = []
        self.live_history: list[tuple[float, int]] = []
        self.max_live = 0
        self.started_at = time.monotonic()
        self._live = 0
        self._recent_api: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._change = asyncio.Event()  # replaced (after being set) at every change
        self._client: httpx.AsyncClient | None = None
        self._server: contextlib.AbstractAsyncContextManager[str] | None = None
        self._url: str | None = None
        self._closing = False
        # Callbacks wait here rather than in httpx's pool, whose bookkeeping grows with the
        # square of the requests queued in it.
        self._sending = asyncio.Semaphore(_CALLBACK_CONNECTIONS)
        self.app = self._build_app()

    # ------------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts serving (``async with`` does it)."""
        if self._url is not None:
            return
        self._client = httpx.AsyncClient(
            verify=_ssl_context(),
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=_CALLBACK_CONNECTIONS,
                max_keepalive_connections=_CALLBACK_CONNECTIONS,
            ),
        )
        self.started_at = time.monotonic()
        server = serve_asgi(self.app, self._host, self._port)
        self._url = await server.__aenter__()
        self._server = server

    async def stop(self) -> None:
        """Cancels every call and callback under way, then stops the server."""
        self._closing = True
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._tasks.difference_update(pending)
        if self._server is not None:
            server, self._server = self._server, None
            await server.__aexit__(None, None, None)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        self._url = None

    @property
    def url(self) -> str:
        """The base URL to give the app as the carrier's API URL (``http://127.0.0.1:PORT``)."""
        if self._url is None:
            raise RuntimeError(f"{self._name} is not started (use `async with {self._name}(...)`)")
        return self._url

    # ---------------------------------------------------------------------------- ledger

    @property
    def live(self) -> int:
        """Calls accepted and not yet ended."""
        return self._live

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    def max_requests_in_any_second(self, window_s: float = 1.0, *, calls_only: bool = True) -> int:
        """The most API requests (by default: the requests that create calls) that arrived
        within any ``window_s`` seconds (a sliding window)."""
        requests = self.api_requests
        if calls_only:
            requests = [r for r in requests if self._is_call_request(r)]
        times = sorted(r.at for r in requests)
        best = 0
        first = 0
        for last, moment in enumerate(times):
            while moment - times[first] >= window_s:
                first += 1
            best = max(best, last - first + 1)
        return best

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 (the documented API)
    ) -> None:
        """Waits until ``predicate()`` holds (re-checked at every change of the ledger).
        Raises TimeoutError past ``timeout``."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._change.wait()

    async def settled(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Waits until every call has ended and every callback has been delivered (or given
        up). Raises TimeoutError past ``timeout``."""
        await self.wait_until(lambda: self._live == 0 and not self._tasks, timeout)

    def _is_call_request(self, request: _RequestT) -> bool:
        """Whether ``request`` asked for a new call."""
        raise NotImplementedError

    def _notify_change(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._closing:  # stopping: nothing new starts
            coro.close()
            return
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                self._log.error(
                    "%s task %s failed", self._log_name, name, exc_info=finished.exception()
                )
            self._notify_change()

        task.add_done_callback(done)

    @property
    def _log_name(self) -> str:
        """How log lines name the fake ("fake plivo")."""
        return "fake " + self._name.removeprefix("Fake").lower()

    def _set_live(self, delta: int) -> None:
        self._live += delta
        self.max_live = max(self.max_live, self._live)
        self.live_history.append((time.monotonic(), self._live))

    # ------------------------------------------------------------------------------- API

    def _build_app(self) -> Starlette:
        async def unrouted(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            return self._unrouted(request, status)

        return Starlette(routes=self._routes(), exception_handlers={404: unrouted, 405: unrouted})

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _unrouted(self, request: Request, status: int) -> Response:
        """The answer (recorded) to a request no route takes, or whose method it refuses."""
        raise NotImplementedError

    def _record(
        self,
        api_request: _RequestT,
        status: int,
        payload: dict[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> Response:
        """Records an API request and makes its answer."""
        self.api_requests.append(api_request)
        self._notify_change()
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _rate_limited(self, at: float) -> bool:
        if self._api_rate_limit is None:
            return False
        limit, window = self._api_rate_limit
        recent = self._recent_api
        while recent and at - recent[0] >= window:
            recent.popleft()
        if len(recent) >= limit:
            return True
        recent.append(at)
        return False

    def _refusal(
        self, request: Request, at: float, user: str, password: str, path_key: str
    ) -> int | None:
        """The HTTP status refusing an API request (401, 429 or 503), or None. ``user`` and
        ``password`` are the Basic auth credentials, and ``user`` the path's ``path_key``."""
        authorized = (
            _basic_auth_matches(request, user, password)
            and request.path_params.get(path_key) == user
        )
        if not authorized:
            return 401
        if self._rate_limited(at):
            return 429
        if self._closing:
            return 503
        return None

    # ------------------------------------------------------------------------- the calls

    async def _pause(self, call: _Hangable, seconds: float) -> bool:
        """Waits ``seconds``; True when a hangup was requested before or during the wait."""
        if call.hangup_requested.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(call.hangup_requested.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _play_guarded(
        self, play: Coroutine[Any, Any, None], ident: str, fail: Callable[[], None]
    ) -> None:
        """Plays a call; ends it with ``fail()`` (after logging) when playing it raises."""
        try:
            await play
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("%s call %s failed", self._log_name, ident)
            fail()

    # ------------------------------------------------------------------------- callbacks

    def _deliver_later(
        self,
        send: Callable[[int], Awaitable[object]],
        *,
        name: str,
        copies: int,
        delay_s: float,
        hold: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
    ) -> None:
        """Delivers a callback in the background: ``send(copy)`` for each of ``copies``
        copies, after ``hold`` is set (when given) and ``delay_s``; sets ``done`` at the end."""
        self._spawn(self._deliver(send, copies, delay_s, hold, done), name=name)

    async def _deliver(
        self,
        send: Callable[[int], Awaitable[object]],
        copies: int,
        delay_s: float,
        hold: asyncio.Event | None,
        done: asyncio.Event | None,
    ) -> None:
        try:
            if hold is not None:
                await hold.wait()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            for copy in range(1, copies + 1):
                await send(copy)
        finally:
            if done is not None:
                done.set()

    def _callback_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{self._name} is not started")
        return self._client

    def _delivered(self, record: _Delivery, kind: str, url: str) -> None:
        """Marks a callback delivery finished (logging a failed one)."""
        record.finished_at = time.monotonic()
        if not record.ok:
            self._log.info(
                "%s: %s callback to %s failed after %d attempt(s): %s",
                self._log_name,
                kind,
                url,
                record.attempts,
                record.error or record.status,
            )
        self._notify_change()
