"""/api/health: can this service do its job? 200 when it can, 503 with the reason when not
(readiness); /api/health/live: is the process serving at all (liveness)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from callqueue.api.deps import RuntimeDep, SettingsDep
from callqueue.config import Settings
from callqueue.engine.reads import ControlState, control_state
from callqueue.runtime import Runtime, agent_check_enabled

router = APIRouter(tags=["health"])

REDIS_TIMEOUT_S = 2.0
AGENT_TIMEOUT_S = 1.0


class HealthView(BaseModel):
    status: str = Field(..., description="ok (200) or unavailable (503).", examples=["ok"])
    reason: str | None = Field(
        None, description="Why it is unavailable (several reasons are joined by '; ')."
    )
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
        "carrier refused our credentials or cannot be reached; agent: the agent server is "
        "down), with the reason.",
    )


class LivenessView(BaseModel):
    status: str = Field(..., description="Always `alive`.", examples=["alive"])


async def _redis(runtime: Runtime) -> tuple[str, ControlState | None]:
    """("ok" or why Redis cannot be used, the switches, heartbeats and reported problems)."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            return "ok", await control_state(runtime.queue)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}", None


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


def _reasons(
    settings: Settings, redis_state: str, control: ControlState | None, agent: str
) -> list[str]:
    """Everything that stops calls being placed now, most basic first."""
    carrier = settings.carrier_name
    if control is None:
        return [f"Redis {redis_state}"]
    reasons = []
    agent_down = agent != "ok" and agent_check_enabled(settings)
    if agent_down:
        reasons.append(f"agent server {settings.agent_server_url} {agent}")
    for part, why in sorted(control.problems.items(), key=lambda p: (p[0] != "carrier", p[0])):
        if part == "carrier":
            reasons.append(f"carrier {carrier}: {why}")
        elif not (part == "agent" and agent_down):  # said already
            reasons.append(f"{part}: {why}")
    if control.workers_alive == 0 and control.calls_due and not control.paused:
        reasons.append(
            "no worker alive while calls are due: start `callqueue worker` (or `callqueue up`)"
        )
    return reasons


@router.get(
    "/api/health",
    summary="Health (readiness)",
    response_model=HealthView,
    responses={
        503: {
            "model": HealthView,
            "description": "Calls cannot be placed now: Redis is unreachable, a worker reports "
            "the carrier (or, with a real carrier, the agent server) down, or no worker is "
            "alive while calls are due. `reason` says which.",
        }
    },
)
async def health(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> JSONResponse:
    """Can this service do its job? 200 when calls can be placed, 503 with the reason when not:
    Redis unreachable; the carrier blocked (a worker reports it refuses our credentials or
    cannot be reached); the agent server down (`GET {AGENT_SERVER_URL}/health`, 1 s timeout)
    while workers check it (AGENT_CHECK: by default with a real carrier, not with the
    simulator); any other problem a worker reports; or no worker
    alive while calls are due (queued, or scheduled for a time that has come; not while the
    queue is paused). A readiness check: for a liveness probe use `/api/health/live`. No API
    key needed."""
    http = _http_client(request)
    (redis_state, control), agent = await asyncio.gather(
        _redis(runtime), _agent(http, settings.agent_server_url)
    )
    reasons = _reasons(settings, redis_state, control, agent)
    view = HealthView(
        status="unavailable" if reasons else "ok",
        reason="; ".join(reasons) or None,
        redis=redis_state,
        redis_embedded=runtime.embedded,
        carrier=settings.carrier_name,
        agent=agent,
        queue=runtime.queue.name,
        paused=control.paused if control else None,
        workers_alive=control.workers_alive if control else None,
        dispatch_blocked=control.problems if control else {},
    )
    return JSONResponse(view.model_dump(mode="json"), 503 if reasons else 200)


@router.get("/api/health/live", summary="Liveness", response_model=LivenessView)
async def live() -> LivenessView:
    """200 while this process serves HTTP; it looks at nothing else (not Redis, workers or the
    carrier), so a load balancer or orchestrator restarts the process only when the process
    itself is stuck. Use `/api/health` for readiness. No API key needed."""
    return LivenessView(status="alive")
