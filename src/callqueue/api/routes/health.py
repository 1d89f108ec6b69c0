"""/api/health: can this service do its job? 200 when it can, 503 with the reason when not."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from callqueue.api.deps import RuntimeDep, SettingsDep
from callqueue.engine.reads import ControlState, control_state
from callqueue.runtime import Runtime

router = APIRouter(tags=["health"])

REDIS_TIMEOUT_S = 2.0
AGENT_TIMEOUT_S = 1.0


class HealthView(BaseModel):
    status: str = Field(..., description="ok (200) or unavailable (503).", examples=["ok"])
    reason: str | None = Field(None, description="Why it is unavailable.")
    redis: str = Field(..., description="ok, or why Redis cannot be used.", examples=["ok"])
    redis_embedded: bool = Field(..., description="Running on the embedded server.")
    carrier: str = Field(..., description="simulator, plivo, ...", examples=["simulator"])
    agent: str = Field(
        ..., description="GET {AGENT_SERVER_URL}/health: ok, unreachable, or `http <status>`.",
        examples=["ok"],
    )  # fmt: skip
    queue: str = Field(..., description="QUEUE_NAME.", examples=["default"])
    paused: bool | None = Field(None, description="Dispatch paused; null when Redis is down.")
    workers_alive: int | None = Field(
        None, description="Dispatchers with a recent heartbeat; null when Redis is down."
    )
    dispatch_blocked: dict[str, str] = Field(
        default_factory=dict,
        description="What workers report stops them placing calls, by part (carrier: the "
        "carrier refused our credentials; agent: the agent server is down), with the reason.",
    )


async def _redis(runtime: Runtime) -> tuple[str, ControlState | None, dict[str, str]]:
    """("ok" or why Redis cannot be used, the switches and heartbeats, what blocks dispatch)."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            control = await control_state(runtime.queue)
            return "ok", control, await runtime.queue.problems()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}", None, {}


def _http_client(request: Request) -> httpx.AsyncClient:
    state = request.app.state
    if getattr(state, "http", None) is None:
        state.http = httpx.AsyncClient()
    client: httpx.AsyncClient = state.http
    return client


async def _agent(client: httpx.AsyncClient, base_url: str) -> str:
    try:
        reply = await client.get(base_url.rstrip("/") + "/health", timeout=AGENT_TIMEOUT_S)
    except httpx.HTTPError:
        return "unreachable"
    return "ok" if reply.is_success else f"http {reply.status_code}"


@router.get(
    "/api/health",
    summary="Health",
    response_model=HealthView,
    responses={
        503: {
            "model": HealthView,
            "description": "Redis is unreachable (or, with a real carrier, the agent server is).",
        }
    },
)
async def health(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> JSONResponse:
    """Redis, carrier and agent server state. No API key needed. The agent server check is
    `GET {AGENT_SERVER_URL}/health` with a 1 s timeout; an unreachable agent only fails the
    check when a real carrier places the calls (not with the simulator)."""
    http = _http_client(request)
    (redis_state, control, blocked), agent = await asyncio.gather(
        _redis(runtime), _agent(http, settings.agent_server_url)
    )
    carrier = settings.carrier_name
    reason = None
    if redis_state != "ok":
        reason = f"Redis {redis_state}"
    elif agent != "ok" and carrier != "simulator":
        reason = f"agent server {settings.agent_server_url} {agent}"
    elif "carrier" in blocked:
        reason = f"carrier {carrier}: {blocked['carrier']}"
    view = HealthView(
        status="ok" if reason is None else "unavailable",
        reason=reason,
        redis=redis_state,
        redis_embedded=runtime.embedded,
        carrier=carrier,
        agent=agent,
        queue=runtime.queue.name,
        paused=control.paused if control else None,
        workers_alive=control.workers_alive if control else None,
        dispatch_blocked=blocked,
    )
    return JSONResponse(view.model_dump(mode="json"), 200 if reason is None else 503)
