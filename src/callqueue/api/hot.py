"""``POST /api/calls/queue`` answered before the framework: the busiest route, served straight
from the ASGI call.

A small request's CPU goes mostly to the framework around it (middleware layers, routing over
every route, the request/response objects), not to queuing the call. This path does what that
stack does for this one route, in the same order and with the same answers: the API-key check
(``auth.py``), the body cap (``limits.py``), reading the body, validation, the route's own work
(``routes/calls.queue_one``) and the API's error shape, with Redis errors and an enqueue not
confirmed durable in time (``ENQUEUE_DURABILITY``) as 503 and anything unexpected as a logged
500. The FastAPI route stays: it documents the operation in OpenAPI, and it serves the request
when the hot path is off (``HOT_PATH=false``, and by default with ``OTEL_TELEMETRY``, so that the
framework's spans cover every request).

What this path mirrors is declared in ``MIRRORED_MIDDLEWARE``; a test compares it with the
app's middleware stack, so a middleware added to the app without a twin here fails the suite
instead of being skipped by the busiest route.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from callqueue.api.auth import (
    ApiKeyGate,
    authorized,
    credential_in_query,
    header_map,
    send_credentials_in_query,
    send_unauthorized,
)
from callqueue.api.bodies import parse_model
from callqueue.api.errors import ApiError, not_durable_msg
from callqueue.api.limits import (
    DEFAULT_MAX_BODY,
    BodySizeLimit,
    capped_receive,
    send_too_large,
    too_large_msg,
)
from callqueue.api.read_timeout import DEFAULT_TIMEOUT_S, KIND, ReadTimedOut, timed_receive
from callqueue.api.routes.calls import queue_one
from callqueue.engine.durability import NotDurable
from callqueue.engine.faults import is_transient
from callqueue.schemas.calls import QueueCallRequest

log = logging.getLogger("callqueue.api.errors")

PATH = "/api/calls/queue"
JSON_TYPE = (b"content-type", b"application/json")

#: The app's middleware, outermost first, whose work this path does itself: the API-key check
#: (auth.py) and the body cap (limits.py). A middleware added to the app needs its twin in
#: serve_queue_call and its class here, or tests/api/test_hot_path_guard.py fails.
MIRRORED_MIDDLEWARE: tuple[type, ...] = (ApiKeyGate, BodySizeLimit)
#: The app's exception handlers whose answers serve_queue_call gives itself: validation and
#: too-large bodies as ApiError, Redis errors and NotDurable as 503, anything else as 500.
MIRRORED_ERRORS: frozenset[type[BaseException]] = frozenset(
    {
        RequestValidationError,
        ApiError,
        StarletteHTTPException,
        RedisConnectionError,
        RedisTimeoutError,
        NotDurable,
        Exception,
        WebSocketRequestValidationError,  # FastAPI's own, for websockets: none here
    }
)


def unmirrored(app: FastAPI) -> list[str]:
    """What the app does around a request that this path does not (empty: they agree)."""
    gaps = []
    stack: tuple[object, ...] = tuple(m.cls for m in app.user_middleware)
    if stack != MIRRORED_MIDDLEWARE:
        names = [getattr(c, "__name__", repr(c)) for c in stack]
        mirrored = [c.__name__ for c in MIRRORED_MIDDLEWARE]
        gaps.append(f"middleware {names}, the hot path mirrors {mirrored}")
    handled = {key for key in app.exception_handlers if isinstance(key, type)}
    for exc in sorted(handled - MIRRORED_ERRORS, key=lambda e: e.__name__):
        gaps.append(f"exception handler for {exc.__name__}, not mirrored")
    codes = sorted(key for key in app.exception_handlers if not isinstance(key, type))
    if codes:
        gaps.append(f"exception handlers for status codes {codes}, not mirrored")
    return gaps


class _Disconnected(Exception):
    """The client went away before its body arrived."""


class CallQueueApp(FastAPI):
    """The FastAPI app, answering ``POST /api/calls/queue`` itself (see the module doc)."""

    hot_path = True
    read_timeout_s = DEFAULT_TIMEOUT_S  # REQUEST_READ_TIMEOUT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            receive = timed_receive(receive, self.read_timeout_s)
            if (
                self.hot_path
                and scope["path"] == PATH
                and scope["method"] == "POST"
                and not scope.get("root_path")
            ):
                await serve_queue_call(self, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _body(receive: Receive, limit: int) -> bytes:
    def too_large() -> ApiError:
        return ApiError(413, too_large_msg(limit), ("body",), "too_large")

    receive = capped_receive(receive, limit, too_large)
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _answer(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    raw_headers = [JSON_TYPE, (b"content-length", str(len(body)).encode())]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _problem(msg: str, kind: str) -> bytes:
    return orjson.dumps({"detail": [{"loc": [], "msg": msg, "type": kind}]})


async def serve_queue_call(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    state: Any = app.state
    if name := credential_in_query(scope.get("query_string")):
        await send_credentials_in_query(send, name)
        return
    headers = header_map(scope)
    keys = state.settings.api_key_list
    if keys and not authorized(headers, keys):
        await send_unauthorized(send)
        return
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DEFAULT_MAX_BODY:
        await send_too_large(send, DEFAULT_MAX_BODY)
        return
    try:
        raw = await _body(receive, DEFAULT_MAX_BODY)
        request = parse_model(headers.get("content-type", ""), raw, QueueCallRequest)
        status, body = await queue_one(state, request)
    except _Disconnected:
        return
    except ReadTimedOut as exc:
        body = orjson.dumps({"detail": [{"loc": ["body"], "msg": exc.detail, "type": KIND}]})
        await _answer(send, 408, body, dict(exc.headers or {}))
        return
    except ApiError as exc:
        await _answer(send, exc.status, orjson.dumps({"detail": exc.details}), exc.headers)
        return
    except NotDurable as exc:
        log.warning("POST %s: %s", PATH, exc)
        body = _problem(not_durable_msg(exc), "not_durable")
        await _answer(send, 503, body, {"Retry-After": "1"})
        return
    except Exception as exc:
        if is_transient(exc):
            log.warning("POST %s: Redis unavailable: %s", PATH, exc)
            body = _problem(f"Redis is unavailable: {exc}", "unavailable")
            await _answer(send, 503, body, {"Retry-After": "1"})
            return
        log.error("POST %s failed", PATH, exc_info=exc)
        await _answer(send, 500, _problem("internal error (logged)", "internal"))
        return
    await _answer(send, status, body)
