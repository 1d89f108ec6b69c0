"""API keys: when API_KEYS is set, every /api route except /api/health and /api/webhooks/*
needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

The check runs as middleware, before the body is even read (so an unauthenticated caller learns
nothing from validation errors), and again as a route dependency, which is also what puts the
security schemes in the OpenAPI document.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated

import orjson
from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from callqueue.api.deps import SettingsDep
from callqueue.api.errors import ApiError

PUBLIC_PATHS = ("/api/health",)
PUBLIC_PREFIXES = ("/api/webhooks/",)
UNAUTHORIZED = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

_bearer = HTTPBearer(auto_error=False, description="One of the keys in API_KEYS.")
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS."
)


def key_matches(given: str, keys: list[str]) -> bool:
    """Constant-time comparison against every key (no early exit that tells which matched)."""
    given_bytes = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given_bytes, key.encode())
    return found


def authorized(headers: Mapping[str, str], keys: list[str]) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    candidates = [token.strip() if scheme.lower() == "bearer" else "",
                  headers.get("x-api-key", "")]  # fmt: skip
    return any(key_matches(c, keys) for c in candidates if c)


def needs_key(path: str) -> bool:
    return (
        path.startswith("/api/")
        and path not in PUBLIC_PATHS
        and not path.startswith(PUBLIC_PREFIXES)
    )


class ApiKeyGate:
    """ASGI middleware answering 401 to protected paths without a valid key."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}  # fmt: skip
        if authorized(headers, self.keys):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {"detail": [{"loc": ["header", "Authorization"], "msg": UNAUTHORIZED,
                         "type": "unauthorized"}]}
        )  # fmt: skip
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})


async def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    keys = settings.api_key_list
    if not keys:
        return
    candidates = [c for c in (bearer.credentials if bearer else None, header) if c]
    if not any(key_matches(c, keys) for c in candidates):
        raise ApiError(401, UNAUTHORIZED, ("header", "Authorization"), "unauthorized",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
