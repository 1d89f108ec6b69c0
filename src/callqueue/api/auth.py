"""API keys: when API_KEYS is set, every /api route except /api/health, /api/health/live and
/api/webhooks/* needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

The check runs as middleware, before the body is even read (so an unauthenticated caller learns
nothing from validation errors). It is not also a route dependency: FastAPI solves dependencies
anew on every request, which cost more than the rest of a small request. The OpenAPI document
gets its security schemes from ``add_security_to_openapi`` instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = ("/api/health", "/api/health/live")
PUBLIC_PREFIXES = ("/api/webhooks/",)
UNAUTHORIZED = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


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
        if authorized(header_map(scope), self.keys):
            await self.app(scope, receive, send)
            return
        await send_unauthorized(send)


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last one of a name wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or []}  # fmt: skip


async def send_unauthorized(send: Send) -> None:
    """The 401 answer."""
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


SECURITY_SCHEMES: dict[str, Any] = {
    "HTTPBearer": {"type": "http", "scheme": "bearer",
                   "description": "One of the keys in API_KEYS."},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "One of the keys in API_KEYS."},
}  # fmt: skip


def add_security_to_openapi(schema: dict[str, Any]) -> None:
    """Declares both ways of sending a key, on every operation that needs one."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, operations in schema.get("paths", {}).items():
        if needs_key(path):
            for operation in operations.values():
                operation["security"] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
