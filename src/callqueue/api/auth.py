"""API keys: when API_KEYS is set, every /api route except /api/health, /api/health/live and
/api/webhooks/* needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Credentials in a query string are refused (400) on every route, keys or not: URLs end up in
access logs, proxy logs and browser histories. The access log also blanks such parameters
(``RedactQueryCredentials``), so a refused request does not leak its key there either.

The check runs as middleware, before the body is even read (so an unauthenticated caller learns
nothing from validation errors). It is not also a route dependency: FastAPI solves dependencies
anew on every request, which cost more than the rest of a small request. The OpenAPI document
gets its security schemes from ``add_security_to_openapi`` instead.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = ("/api/health", "/api/health/live")
PUBLIC_PREFIXES = ("/api/webhooks/",)
SEND_KEY = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
UNAUTHORIZED = f"missing or wrong API key: {SEND_KEY}"
#: Query parameters that look like credentials (compared in lower case, '-' read as '_').
CREDENTIAL_PARAMS = frozenset(
    {"api_key", "apikey", "x_api_key", "key", "token", "access_token", "auth", "authorization",
     "bearer"}
)  # fmt: skip
CREDENTIALS_IN_QUERY = f"credentials are not accepted in the URL, which ends up in logs: {SEND_KEY}"
REDACTED = "[redacted]"


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


def _param_names(query: str) -> list[str]:
    return [unquote_plus(part.partition("=")[0]) for part in query.split("&")]


def _is_credential(name: str) -> bool:
    return name.strip().lower().replace("-", "_") in CREDENTIAL_PARAMS


def credential_in_query(query_string: bytes | None) -> str | None:
    """The name of the first credential-looking parameter in ``query_string``, if any."""
    if not query_string:
        return None
    for name in _param_names(query_string.decode("latin-1")):
        if _is_credential(name):
            return name
    return None


def redact_query(target: str) -> str:
    """``target`` (a path with its query) with the values of credential-looking parameters
    blanked."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and _is_credential(unquote_plus(name)):
            parts[i] = f"{name}={REDACTED}"
    return f"{path}?{'&'.join(parts)}"


class RedactQueryCredentials(logging.Filter):
    """For uvicorn's access log, whose lines carry each request's path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "?" in a for a in record.args
        ):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Puts the filter on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryCredentials) for f in logger.filters):
        logger.addFilter(RedactQueryCredentials())


async def send_credentials_in_query(send: Send, name: str) -> None:
    """The 400 answer to a credential in the query string."""
    await _send_error(send, 400, ["query", name], CREDENTIALS_IN_QUERY, "credentials_in_query")


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
        if scope["type"] == "http" and (name := credential_in_query(scope.get("query_string"))):
            await send_credentials_in_query(send, name)
            return
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
    await _send_error(send, 401, ["header", "Authorization"], UNAUTHORIZED, "unauthorized",
                      [(b"www-authenticate", b"Bearer")])  # fmt: skip


async def _send_error(
    send: Send, status: int, loc: list[str], msg: str, kind: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:  # fmt: skip
    body = orjson.dumps({"detail": [{"loc": loc, "msg": msg, "type": kind}]})
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
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
