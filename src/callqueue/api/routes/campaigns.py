"""/api/campaigns: settings, lifecycle and progress of campaigns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, Field

from callqueue.api.campaign_schemas import CampaignSettings, NewCampaign, settings_view
from callqueue.api.deps import QueueDep
from callqueue.api.errors import NO_WEBHOOK_SECRET, ApiError, error_doc
from callqueue.api.views import at
from callqueue.engine.campaigns import CampaignEngine, CampaignNotFound
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import CampaignState, campaign_page, campaign_states

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])

CampaignId = Annotated[
    str, Path(description="The campaign's id (its calls' campaign_id).", examples=["campaign-123"])
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_doc("No campaign has this id.")}


class ProgressView(BaseModel):
    counts: dict[str, int] = Field(
        ..., description="Calls by status: queued, scheduled (waiting for a time: scheduled_at, "
        "a retry, or the calling window) and live (`dialing` counts every live call) now; "
        "completed, failed and cancelled in all.",
    )  # fmt: skip
    open_calls: int = Field(..., description="Calls not final yet.")
    live_calls: int = Field(..., description="Calls holding a live-call slot now.")
    attempts: int = Field(..., description="Attempts that ended.")
    outcomes: dict[str, int] = Field(..., description="Ended attempts by outcome.")
    connect_rate: float | None = Field(
        None, description="Attempts answered by a person over attempts that ended."
    )
    average_duration_seconds: float | None = Field(
        None, description="Mean talk time of completed attempts."
    )
    dial_rate_per_second: float = Field(..., description="Dials started, last minute's mean.")
    expected_finish_at: datetime | None = Field(
        None, description="When every open call will have been dialed again at the last "
        "minute's pace (null: nothing dialed in that minute).",
    )  # fmt: skip


class SettingsView(CampaignSettings):
    call_config: dict[str, Any] | None = Field(  # type: ignore[assignment]
        None, description="Defaults for the campaign's calls, as given (a call's own "
        "call_config fields win; variables are merged key by key).",
    )  # fmt: skip


class CampaignView(BaseModel):
    campaign_id: str = Field(..., description="Its id.", examples=["campaign-123"])
    status: str = Field(
        ..., description="active, paused, cancelled, or completed (every call final).",
        examples=["active"],
    )  # fmt: skip
    settings: SettingsView = Field(..., description="As set (null: the default).")
    created_at: datetime = Field(..., description="When it was created.")
    progress: ProgressView = Field(..., description="Where it stands.")

    @classmethod
    def of(cls, state: CampaignState) -> CampaignView:
        c = state.counters
        eta = state.eta_s
        return cls(
            campaign_id=state.campaign_id,
            status=state.status,
            settings=SettingsView.model_validate(settings_view(state.settings)),
            created_at=at(state.created_ms or state.now_ms),
            progress=ProgressView(
                counts={s.value: n for s, n in state.counts.items()},
                open_calls=state.open,
                live_calls=state.live,
                attempts=state.attempts,
                outcomes={o.value: n for o, n in c.outcomes.items() if n},
                connect_rate=state.connect_rate,
                average_duration_seconds=c.talk_time_s / c.talked if c.talked else None,
                dial_rate_per_second=state.dial_rate_per_s,
                expected_finish_at=(
                    at(state.now_ms) + timedelta(seconds=eta) if eta is not None else None
                ),
            ),
        )


class CampaignList(BaseModel):
    total: int = Field(..., description="Campaigns in all.")
    campaigns: list[CampaignView] = Field(..., description="This page, newest first.")


class CancelledView(BaseModel):
    campaign_id: str = Field(..., description="Its id.")
    status: str = Field(..., description="cancelled.")
    cancelled_calls: int = Field(..., description="Calls ended by this request (not dialed).")


async def _view(queue: CallQueue, campaign_id: str) -> CampaignView:
    (state,) = await campaign_states(queue, [campaign_id])
    if state is None:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found")  # fmt: skip
    return CampaignView.of(state)


def _check_webhook(request: Request, body: CampaignSettings) -> None:
    if body.webhook_url and not request.app.state.settings.webhook_secret:
        raise ApiError(422, NO_WEBHOOK_SECRET, ("body", "webhook_url"), "webhook_secret")


def _forget_defaults(request: Request, campaign_id: str) -> None:
    request.app.state.campaign_defaults.forget(campaign_id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a campaign",
    responses={409: error_doc("A campaign with this id exists (change it with PATCH).")},
)
async def create_campaign(request: Request, queue: QueueDep, body: NewCampaign) -> CampaignView:
    """Creates a campaign with its settings. Calls naming a campaign_id not created here
    create theirs with default settings (the seed's usage)."""
    _check_webhook(request, body)
    if await queue.client.exists(queue.keys.campaign(body.campaign_id)):
        raise ApiError(409, f"campaign {body.campaign_id!r} exists; change it with PATCH",
                       ("body", "campaign_id"), "conflict")  # fmt: skip
    sent = body.model_fields_set - {"campaign_id"}
    await CampaignEngine(queue).configure(body.campaign_id, body.stored(sent))
    _forget_defaults(request, body.campaign_id)
    return await _view(queue, body.campaign_id)


@router.get("", summary="List campaigns")
async def list_campaigns(
    queue: QueueDep,
    offset: Annotated[int, Query(ge=0, description="Campaigns to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
) -> CampaignList:
    """Every campaign with its status and progress, newest first."""
    total, ids = await campaign_page(queue, offset, limit)
    states = await campaign_states(queue, ids)
    return CampaignList(total=total, campaigns=[CampaignView.of(s) for s in states if s])


@router.get("/{campaign_id}", summary="A campaign's settings and progress", responses=NOT_FOUND)
async def get_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """Counts by status, attempts, connect rate, outcomes, average duration, live calls,
    achieved dial rate and expected finish time."""
    return await _view(queue, campaign_id)


@router.patch("/{campaign_id}", summary="Change a campaign's settings", responses=NOT_FOUND)
async def patch_campaign(
    request: Request, queue: QueueDep, campaign_id: CampaignId, body: CampaignSettings
) -> CampaignView:
    """Changes the fields sent (null clears one); limits apply to the next dial."""
    _check_webhook(request, body)
    if not await queue.client.exists(queue.keys.campaign(campaign_id)):
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found")  # fmt: skip
    await CampaignEngine(queue).configure(campaign_id, body.stored(body.model_fields_set))
    _forget_defaults(request, campaign_id)
    return await _view(queue, campaign_id)


async def _lifecycle(queue: CallQueue, campaign_id: str, op: str) -> CampaignView:
    engine = CampaignEngine(queue)
    try:
        await (engine.pause if op == "pause" else engine.resume)(campaign_id)
    except CampaignNotFound:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found") from None  # fmt: skip
    return await _view(queue, campaign_id)


@router.post("/{campaign_id}/pause", summary="Pause a campaign", responses=NOT_FOUND)
async def pause_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """No new dials of this campaign from now on; live calls finish. Its calls stay queued."""
    return await _lifecycle(queue, campaign_id, "pause")


@router.post("/{campaign_id}/resume", summary="Resume a campaign", responses=NOT_FOUND)
async def resume_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """Dialing continues where it stopped, in the same order."""
    return await _lifecycle(queue, campaign_id, "resume")


@router.post("/{campaign_id}/cancel", summary="Cancel a campaign", responses=NOT_FOUND)
async def cancel_campaign(queue: QueueDep, campaign_id: CampaignId) -> CancelledView:
    """Ends every call of the campaign not yet dialed (live calls finish); later calls naming
    it are refused."""
    try:
        done = await CampaignEngine(queue).cancel(campaign_id)
    except CampaignNotFound:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found") from None  # fmt: skip
    return CancelledView(campaign_id=campaign_id, status="cancelled", cancelled_calls=done)
