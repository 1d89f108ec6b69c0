"""Slow or stalled clients hold no connection for long (REQUEST_READ_TIMEOUT).

uvicorn times out only idle keep-alive connections: a client that sends part of its headers,
or part of a declared body, and then nothing, holds its connection (and, while the app waits
for the body, a task) for as long as it likes. Two guards close such connections:

- **the body, where it is read**: every ``receive()`` of the app (the hot path and the FastAPI
  routes alike: ``timed_receive``, put in place by ``CallQueueApp``) waits at most the timeout
  for the next part of the body; then the request is answered 408 and the connection closed.
  A body that keeps coming, however large, is never cut: the timeout runs between two parts.
  This guard goes wherever the app goes (``uvicorn callqueue.api.asgi:app`` too).
- **the headers, in the HTTP protocol** (``ReadTimeoutProtocol``, which ``callqueue up`` and
  ``callqueue api`` serve with): a new connection must complete its first request's headers
  within the timeout of connecting, and every later request within the timeout of its first
  byte (a partial request is answered 408). The rest of a body that the app answered without
  reading must keep coming at the same pace, or the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle, Transport

import orjson
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
KIND = "read_timeout"


def body_stalled_msg(timeout_s: float) -> str:
    return f"the request body stalled: nothing arrived for {timeout_s:g} s (REQUEST_READ_TIMEOUT)"


def headers_stalled_msg(timeout_s: float) -> str:
    return f"the request headers did not arrive within {timeout_s:g} s (REQUEST_READ_TIMEOUT)"


class ReadTimedOut(HTTPException):
    """The body stalled. An HTTPException so that FastAPI's body parsing lets it through (it
    turns other errors into a 400), answered 408 with the connection closed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, body_stalled_msg(timeout_s), headers={"Connection": "close"})


def timed_receive(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` that raises ReadTimedOut when the next part of the body takes longer than
    ``timeout_s``. Once the body is complete, calls pass straight through: waiting for the
    client to go away is not a read."""
    body_done = False

    async def timed() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise ReadTimedOut(timeout_s) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return timed


def _raw_408(msg: str) -> bytes:
    body = orjson.dumps({"detail": [{"loc": [], "msg": msg, "type": KIND}]})
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return head + body


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading headers (see the module doc).

    One timer per connection, armed while the client owes the server bytes that no app
    ``receive()`` is waiting for: the headers of a request, or the rest of a body the app
    answered without reading.
    """

    read_timeout_s: float = DEFAULT_TIMEOUT_S

    _deadline: TimerHandle | None = None
    _in_headers = False  # some of a request arrived, its headers are not complete yet
    _owed_body = False  # the app answered; the rest of the body is still owed

    def _arm(self, owed_body: bool) -> None:
        self._disarm()
        self._owed_body = owed_body
        self._deadline = self.loop.call_later(self.read_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._owed_body = False

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_headers:
            log.debug("closing a connection: headers not complete in %g s", self.read_timeout_s)
            self.transport.write(_raw_408(headers_stalled_msg(self.read_timeout_s)))
        self.transport.close()

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(owed_body=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._deadline is None:  # a first request keeps the deadline set at connect
            self._arm(owed_body=False)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._owed_body:
            self._arm(owed_body=True)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._owed_body:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and cycle.more_body
            and not self.transport.is_closing()
        ):
            self._arm(owed_body=True)


def read_timeout_protocol(timeout_s: float) -> type[ReadTimeoutProtocol]:
    """The protocol class with ``timeout_s`` (uvicorn makes one instance per connection)."""

    class Configured(ReadTimeoutProtocol):
        read_timeout_s = timeout_s

    return Configured
