"""Request body size caps, enforced before the body is parsed.

A declared Content-Length over the cap is answered 413 at once; a body streamed without one is
counted as it arrives and cut off with 413 as soon as it passes the cap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 64 * 1024
BULK_MAX_BODY = 16 * 1024 * 1024
IMPORT_MAX_BODY = 50 * 1024 * 1024  # a campaign's CSV list (POST /api/campaigns/{id}/calls)
IMPORT_PATH = re.compile(r"^/api/campaigns/[^/]+/calls$")


def too_large_msg(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


def capped_receive(receive: Receive, limit: int, too_large: Callable[[], Exception]) -> Receive:
    """``receive`` that counts the body as it arrives and raises ``too_large()`` as soon as it
    passes ``limit`` bytes (a body streamed without Content-Length)."""
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large()
        return message

    return counting


class BodySizeLimit:
    """ASGI middleware: ``limits`` maps a path to its cap, ``patterns`` a path pattern to its;
    other paths get ``default``."""

    def __init__(
        self,
        app: ASGIApp,
        default: int = DEFAULT_MAX_BODY,
        limits: Mapping[str, int] | None = None,
        patterns: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits or {})
        self.patterns = list(patterns)

    def limit_for(self, path: str) -> int:
        if path in self.limits:
            return self.limits[path]
        for pattern, limit in self.patterns:
            if pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_too_large(send, limit)
            return
        await self.app(
            scope,
            capped_receive(receive, limit, lambda: HTTPException(413, too_large_msg(limit))),
            send,
        )


async def send_too_large(send: Send, limit: int) -> None:
    """The 413 answer to a declared Content-Length over ``limit`` (the body is not read: the
    connection is closed after it)."""
    body = orjson.dumps(
        {"detail": [{"loc": ["body"], "msg": too_large_msg(limit), "type": "too_large"}]}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
