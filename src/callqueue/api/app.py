"""The FastAPI app: ``create_app(settings, runtime)``.

With no runtime the app opens its own on start-up (and closes it on shutdown); with one (tests,
``callqueue up``, which shares it with the dispatcher) it uses it and leaves closing it to the
owner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from callqueue import __version__
from callqueue.api.auth import ApiKeyGate, add_security_to_openapi, redact_access_log
from callqueue.api.errors import ERRORS, add_body_errors_to_openapi, install_error_handlers
from callqueue.api.hot import CallQueueApp
from callqueue.api.limits import (
    BULK_MAX_BODY,
    DEFAULT_MAX_BODY,
    IMPORT_MAX_BODY,
    IMPORT_PATH,
    BodySizeLimit,
)
from callqueue.api.routes import (
    batches,
    calls,
    campaigns,
    dnc,
    health,
    plivo_callbacks,
    queue,
    status_webhook_deliveries,
    twilio_callbacks,
)
from callqueue.config import Settings, load_settings
from callqueue.runtime import Runtime, open_runtime
from callqueue.schemas.calls import BulkQueueRequest, QueueCallRequest
from callqueue.schemas.campaign_defaults import CampaignDefaults

DESCRIPTION = """\
Outbound voice-call queue on Redis: queue calls one by one or in bulk, with priorities,
scheduling and retries; every worker shares one global dial rate
(RATE_LIMIT_PER_SECOND) and one cap on live calls (MAX_CONCURRENT_CALLS).

Errors are `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, `loc` being the path of
the field at fault. When API_KEYS is set, every route except `/api/health` needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`; a key in the query string (`api_key`,
`key`, `token`, ...) is refused with 400 on every route.
"""


def _complete_openapi(app: FastAPI, bodies: tuple[type[BaseModel], ...]) -> None:
    """The hot routes parse their bodies themselves, so FastAPI does not see those models:
    publish their schemas by hand (nested models next to the others), the API-key security
    that the middleware enforces, and the answers to a body too large or unreadable."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in bodies:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in body.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = body
        add_security_to_openapi(schema)
        add_body_errors_to_openapi(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> CallQueueApp:
    if settings is None:
        settings = runtime.settings if runtime is not None else load_settings()
    app_settings = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime if runtime is not None else await open_runtime(app_settings)
        app.state.campaign_defaults = CampaignDefaults(app.state.runtime.queue)
        app.state.http = None  # made on first use: building its TLS context takes a while
        try:
            yield
        finally:
            if app.state.http is not None:
                await app.state.http.aclose()
            if owned:
                await app.state.runtime.aclose()

    otel = settings.otel_telemetry
    app = CallQueueApp(
        telemetry={"tracing": otel, "metrics": otel, "logs": otel, "operation_spans": otel},
        title="callqueue",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "calls", "description": "Queue, read and cancel calls."},
            {"name": "batches", "description": "Bulk queuing and batch progress."},
            {"name": "queue", "description": "Queue-wide status and pause/resume."},
            {"name": "health", "description": "Liveness and dependencies."},
            {"name": "dnc", "description": "The do-not-call list: numbers never to call."},
            {"name": "campaigns", "description": "Campaign settings, lifecycle and progress."},
            {"name": "webhooks", "description": "Status webhooks: deliveries given up."},
        ],
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.hot_path = settings.serves_hot_path
    app.read_timeout_s = settings.request_read_timeout
    redact_access_log()
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        default=DEFAULT_MAX_BODY,
        limits={"/api/calls/bulk-queue": BULK_MAX_BODY},
        patterns=[(IMPORT_PATH, IMPORT_MAX_BODY)],
    )
    app.add_middleware(ApiKeyGate, keys=settings.api_key_list)  # outermost: runs first

    protected = APIRouter(responses=ERRORS)
    protected.include_router(batches.router)  # before calls: /api/calls/bulk-queue is literal
    protected.include_router(calls.router)
    protected.include_router(queue.router)
    protected.include_router(dnc.router)
    protected.include_router(campaigns.router)
    protected.include_router(status_webhook_deliveries.router)
    app.include_router(protected)
    app.include_router(health.router)  # public
    app.include_router(plivo_callbacks.router)  # public, but every callback's signature is checked
    app.include_router(twilio_callbacks.router)
    _complete_openapi(app, (QueueCallRequest, BulkQueueRequest))
    return app
