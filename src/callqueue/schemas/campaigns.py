"""Campaign settings as the API takes them, their stored form (campaign.lua's fields), and a
campaign as GET shows it (``CampaignView``, also the body of a campaign's status webhook)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from callqueue.engine.campaigns import CampaignRetry
from callqueue.engine.reads import CampaignState
from callqueue.models import Outcome, RetryPolicy
from callqueue.schemas.calls import ID_PATTERN, CallConfig, http_url
from callqueue.schemas.views import at
from callqueue.windows import CallingWindow, zone_exists

RETRYABLE = sorted(o.value for o in Outcome if o not in (Outcome.COMPLETED, Outcome.CANCELLED))


class RetrySettings(BaseModel):
    """Which outcomes earn another attempt, how many, and how long to wait before each."""

    model_config = ConfigDict(extra="forbid")

    retry_on: list[Outcome] | None = Field(
        None, description=f"Outcomes retried: any of {RETRYABLE} ([]: none). Absent: the "
        "queue's RETRY_ON.", examples=[["busy", "no_answer"]],
    )  # fmt: skip
    max_retries: int | None = Field(
        None, ge=0, le=10, strict=True,
        description="Further attempts per call (0-10); absent: each call's own max_retries "
        "(3 when it sets none). A call's explicit max_retries wins.",
        examples=[2],
    )  # fmt: skip
    delay_seconds: float | None = Field(
        None, ge=0, le=7 * 86_400,
        description="Wait before the first retry. Absent: the queue's RETRY_BASE_DELAY.",
        examples=[300],
    )  # fmt: skip
    backoff: Literal["linear", "exponential"] = Field(
        "exponential",
        description="linear: delay x attempt number; exponential: delay x factor^(attempt-1).",
    )
    factor: float = Field(2.0, ge=1, le=10, description="Growth of exponential backoff.")
    max_delay_seconds: float = Field(
        3600, ge=0, le=7 * 86_400, description="Longest wait between attempts."
    )
    machine_counts_as_done: bool = Field(
        False, description="An answering machine ends the call as completed (not retried)."
    )

    @field_validator("retry_on")
    @classmethod
    def _retryable(cls, value: list[Outcome] | None) -> list[Outcome] | None:
        bad = [o.value for o in value or () if o.value not in RETRYABLE]
        if bad:
            raise ValueError(f"{bad} cannot be retried; choose from {RETRYABLE}")
        return value

    def engine(self, queue_policy: RetryPolicy) -> CampaignRetry:
        """The engine's policy; what was not given is the queue's (RETRY_* settings), so a
        policy that retries nothing needs no delay."""
        retry_on = queue_policy.retry_on if self.retry_on is None else self.retry_on
        delay = queue_policy.base_delay_s if self.delay_seconds is None else self.delay_seconds
        return CampaignRetry(
            retry_on=frozenset(retry_on),
            max_retries=self.max_retries,
            delay_s=delay,
            backoff=self.backoff,
            factor=self.factor,
            max_delay_s=self.max_delay_seconds,
            machine_counts_as_done=self.machine_counts_as_done,
        )

    @classmethod
    def of(cls, policy: CampaignRetry) -> RetrySettings:
        return cls(
            retry_on=sorted(policy.retry_on),
            max_retries=policy.max_retries,
            delay_seconds=policy.delay_s,
            backoff="linear" if policy.backoff == "linear" else "exponential",
            factor=policy.factor,
            max_delay_seconds=policy.max_delay_s,
            machine_counts_as_done=policy.machine_counts_as_done,
        )


class CampaignSettings(BaseModel):
    """A campaign's settings. On PATCH, only the fields sent change; null clears one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, description="Display name.")
    max_concurrent_calls: int | None = Field(
        None, ge=0, le=100_000, strict=True,
        description="Cap on this campaign's live calls (0 or null: none), on top of "
        "MAX_CONCURRENT_CALLS.", examples=[20],
    )  # fmt: skip
    rate_limit_per_second: float | None = Field(
        None, ge=0, le=10_000,
        description="This campaign's dials per second (0 or null: none), on top of "
        "RATE_LIMIT_PER_SECOND; fractions allowed (0.5 = one dial every 2 s).", examples=[2],
    )  # fmt: skip
    weight: float | None = Field(
        None, gt=0, le=1000,
        description="Share of turns against other campaigns of the same priority (default 1: "
        "equal turns; 3: three dials for every one of a weight-1 campaign).", examples=[1],
    )  # fmt: skip
    calling_window: str | None = Field(
        None, max_length=100,
        description="When calls may be placed, in the callee's local time: `tcpa` (every day "
        "08:00-21:00, US), `trai` (every day 09:00-21:00, India), or days and hours such as "
        "`mon-sat 09:00-21:00` (ranges may cross midnight: `fri-sat 22:00-02:00`). A number "
        "spanning several time zones is called only when the window is open in all of them.",
        examples=["mon-sat 09:00-21:00"],
    )  # fmt: skip
    calling_window_timezone: str | None = Field(
        None, max_length=64,
        description="IANA time zone used for numbers whose zone is unknown (and no per-call "
        "`timezone`); without it such numbers are not called while a window is set.",
        examples=["Asia/Kolkata"],
    )  # fmt: skip
    retry: RetrySettings | None = Field(
        None, description="Retry policy by outcome; absent: the queue's (RETRY_* settings)."
    )
    call_config: CallConfig | None = Field(
        None, description="Defaults for the campaign's calls; a call's own call_config fields "
        "win (variables are merged key by key).",
    )  # fmt: skip
    webhook_url: str | None = Field(
        None, max_length=2048,
        description="http(s) URL told (signed POST) of each call's final status, and when the "
        "campaign completes; a call's own webhook_url wins for that call.",
        examples=["https://backend.example.com/hooks/calls"],
    )  # fmt: skip
    webhook_events: Literal["final", "all"] | None = Field(
        None, description="final (default): final statuses only; all: every status change.",
    )  # fmt: skip

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("calling_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return CallingWindow.parse(value).to_text()

    @field_validator("calling_window_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not zone_exists(value):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Asia/Kolkata")
        return value

    def stored(self, sent: set[str], queue_retry: RetryPolicy) -> dict[str, str]:
        """The settings hash fields for the fields in ``sent`` ('' removes one); a retry
        policy's absent fields take ``queue_retry``'s values."""
        out: dict[str, str] = {}
        if "name" in sent:
            out["name"] = self.name or ""
        if "max_concurrent_calls" in sent:
            out["mc"] = str(self.max_concurrent_calls or "")
        if "rate_limit_per_second" in sent:
            out["rl"] = repr(self.rate_limit_per_second) if self.rate_limit_per_second else ""
        if "weight" in sent:
            out["w"] = repr(self.weight) if self.weight else ""
        if "calling_window" in sent:
            window = CallingWindow.parse(self.calling_window) if self.calling_window else None
            out["win"] = window.encode() if window else ""
            out["wt"] = window.to_text() if window else ""
        if "calling_window_timezone" in sent:
            out["wtz"] = self.calling_window_timezone or ""
        if "retry" in sent:
            out["rp"] = self.retry.engine(queue_retry).encode() if self.retry else ""
        if "webhook_url" in sent:
            out["wh"] = self.webhook_url or ""
        if "webhook_events" in sent:
            out["we"] = self.webhook_events or ""
        if "call_config" in sent:
            cfg = sent_config(self.call_config) if self.call_config else {}
            out["cfg"] = orjson.dumps(cfg).decode() if cfg else ""
        return out


class NewCampaign(CampaignSettings):
    """A campaign to create."""

    campaign_id: str = Field(
        ..., min_length=1, max_length=128, pattern=ID_PATTERN,
        description="Its id: the `campaign_id` its calls carry.", examples=["campaign-123"],
    )  # fmt: skip


def sent_config(config: CallConfig) -> dict[str, Any]:
    """The call_config fields that were given (not defaults), as JSON data."""
    data = config.model_dump(mode="json", include=config.model_fields_set)
    return {k: v for k, v in data.items() if v is not None}


def with_defaults(config: CallConfig, defaults: dict[str, Any] | None) -> dict[str, Any] | None:
    """A call's call_config over its campaign's defaults: the call's given fields win, and
    variables are merged key by key. None when the campaign has no defaults."""
    if not defaults:
        return None
    own = sent_config(config)
    merged = {**defaults, **own}
    if isinstance(defaults.get("variables"), dict) and isinstance(own.get("variables"), dict):
        merged["variables"] = {**defaults["variables"], **own["variables"]}
    full = CallConfig.model_validate(merged).model_dump(mode="json", exclude_none=True)
    if not full.get("variables", True):
        del full["variables"]
    return full


def settings_view(fields: dict[str, str]) -> dict[str, Any]:
    """The stored fields back as the API's settings."""
    rp = fields.get("rp")
    cfg = fields.get("cfg")
    return {
        "name": fields.get("name"),
        "max_concurrent_calls": int(fields["mc"]) if fields.get("mc") else None,
        "rate_limit_per_second": float(fields["rl"]) if fields.get("rl") else None,
        "weight": float(fields["w"]) if fields.get("w") else None,
        "calling_window": fields.get("wt") or None,
        "calling_window_timezone": fields.get("wtz") or None,
        "retry": RetrySettings.of(CampaignRetry.decode(rp)).model_dump(mode="json") if rp else None,
        "call_config": orjson.loads(cfg) if cfg else None,
        "webhook_url": fields.get("wh") or None,
        "webhook_events": fields.get("we") or None,
    }


class ProgressView(BaseModel):
    counts: dict[str, int] = Field(
        ..., description="Calls by status: queued, scheduled (waiting for a time: scheduled_at, "
        "a retry, or the calling window), dialing, ringing and in_progress now (as "
        "/api/calls/active shows them); completed, failed and cancelled in all.",
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
