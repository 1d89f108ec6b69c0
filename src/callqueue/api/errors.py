"""One error shape for every 4xx/5xx: ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.

``loc`` is the path of the field at fault (``["body", "call_config", "max_duration"]``), so a
client can point at it. Input values are not echoed back.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from callqueue.api.read_timeout import KIND as READ_TIMEOUT
from callqueue.engine.durability import NotDurable
from callqueue.engine.faults import is_transient
from callqueue.schemas.validation import Loc, clean_errors

log = logging.getLogger(__name__)



class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(
        ..., description="Path of the field at fault.", examples=[["body", "phone_number"]]
    )
    msg: str = Field(..., description="What is wrong.")
    type: str = Field(..., description="Error kind: missing, extra_forbidden, conflict, ...")


class ErrorResponse(BaseModel):
    detail: list[ErrorDetail] = Field(..., description="Every problem found.")


def error_doc(description: str) -> dict[str, Any]:
    """An entry of a route's ``responses``."""
    return {"model": ErrorResponse, "description": description}


NO_WEBHOOK_SECRET = (
    "needs WEBHOOK_SECRET set on the service (it signs every status webhook delivery)"
)

#: Answers every protected route may give.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("API_KEYS is set and no valid key was sent."),
    422: error_doc("Invalid input; `loc` names each field at fault."),
    503: error_doc("Redis is unavailable."),
}

#: The answer of a route that queues calls, when ENQUEUE_DURABILITY is on.
NOT_DURABLE_DOC = error_doc(
    "Redis is unavailable, or (ENQUEUE_DURABILITY aof/replica) the call was queued but its "
    "write was not confirmed on disk / on a replica in time: sending the same request again "
    "with the call ids (or batch_id) named in `msg` is safe, nothing is queued twice."
)


#: Answers of every route that reads a request body, whatever the body's kind: the size cap
#: (api/limits.py) comes before any route, and a body that cannot be decoded at all (invalid
#: UTF-8, JSON nested too deeply, a broken form) is refused before validation.
BODY_ERRORS: dict[int, str] = {
    400: "The body cannot be read: invalid UTF-8, JSON nested too deeply, or a broken form.",
    413: "The body is over this route's size cap.",
}


def add_body_errors_to_openapi(schema: dict[str, Any]) -> None:
    """Declares BODY_ERRORS on every operation with a request body (a route's own description
    of one, if it has one, is kept)."""
    ref = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in BODY_ERRORS.items():
                responses.setdefault(
                    str(code),
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )


class ApiError(Exception):
    """An error answer with a field path; raise it from a route."""

    def __init__(
        self,
        status: int,
        msg: str,
        loc: Loc = (),
        kind: str = "error",
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.details = details or [{"loc": list(loc), "msg": msg, "type": kind}]
        self.headers = headers


def problem(
    status: int, msg: str, loc: Loc = (), kind: str = "error", headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": list(loc), "msg": msg, "type": kind}]}, status, headers=headers
    )


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = clean_errors(exc.errors())
    if not _is_json(request) and any(d["loc"] == ["body"] for d in details):
        # FastAPI reads a body sent without a JSON content type as bytes.
        details = [
            {
                "loc": ["body"],
                "type": "content_type",
                "msg": "the body must be a JSON object sent as application/json",
            }
        ]
    return JSONResponse({"detail": details}, 422)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.details}, exc.status, headers=exc.headers)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed",
             408: READ_TIMEOUT, 413: "too_large"}  # fmt: skip
    loc = ("body",) if exc.status_code in (400, 408, 413) else ()
    if exc.status_code == 400:  # FastAPI could not read the JSON at all
        detail = "the body is not readable JSON (invalid UTF-8, or nested too deeply)"
        return problem(400, detail, loc, kinds[400])
    return problem(
        exc.status_code,
        str(exc.detail),
        loc,
        kinds.get(exc.status_code, "http_error"),
        dict(exc.headers) if exc.headers else None,
    )


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
    return problem(503, f"Redis is unavailable: {exc}", (), "unavailable", {"Retry-After": "1"})


def not_durable_msg(exc: NotDurable, again: str | None = None) -> str:
    """What a client reads in the 503: what happened, and how to retry without a second call
    (``again``: how, when the request's own ids do not say it)."""
    if again is None and exc.call_ids:
        ids = ", ".join(repr(i) for i in exc.call_ids)
        again = f"send the same body again with custom_call_id {ids}"
    elif again is None and exc.batch_id:
        again = f"send the same calls again with batch_id {exc.batch_id!r}"
    elif again is None:
        again = "send the same request again"
    return f"{exc}. Retrying is safe: {again}; nothing is queued twice."


async def _not_durable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotDurable)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, not_durable_msg(exc), (), "not_durable", {"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):  # a failover, LOADING, READONLY...: as passing as a lost connection
        return await _redis_down(request, exc)
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error (logged)", (), "internal")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(NotDurable, _not_durable)
    app.add_exception_handler(Exception, _unexpected)
