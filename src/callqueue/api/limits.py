"""Request body size caps, enforced before the body is parsed.

A declared Content-Length over the cap is answered 413 at once; a body streamed without one is
counted as it arrives and cut off with 413 as soon as it passes the cap.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 64 * 1024
BULK_MAX_BODY = 16 * 1024 * 1024


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


class BodySizeLimit:
    """ASGI middleware: ``limits`` maps a path to its cap; other paths get ``default``."""

    def __init__(
        self,
        app: ASGIApp,
        default: int = DEFAULT_MAX_BODY,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = orjson.dumps(
            {"detail": [{"loc": ["body"], "msg": _too_large(limit), "type": "too_large"}]}
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
