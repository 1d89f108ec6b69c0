"""Settings from the environment (and a ``.env`` file), with the seed's variable names.

A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from callqueue.engine.durability import MAX_TIMEOUT_S, Durability, DurabilityOptions
from callqueue.engine.options import QueueOptions
from callqueue.models import Outcome, RetryPolicy


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


def _range(text: str, name: str) -> tuple[float, float]:
    parts = text.split("-") if "-" in text.strip("-") else [text, text]
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{name} must look like '1-4' (seconds)") from exc
    if lo < 0 or hi < lo:
        raise ValueError(f"{name} must be a range 0 <= low <= high")
    return lo, hi


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # -- the seed's variables --
    redis_url: str | None = Field(None, description="Redis/Valkey URL; unset: embedded server")
    queue_workers: int = Field(10, ge=1, le=10_000, description="dial requests in flight/process")
    max_concurrent_calls: int = Field(100, ge=0, description="global cap on live calls; 0 none")
    rate_limit_per_second: float = Field(10, ge=0, description="global dials per second; 0 none")
    plivo_auth_id: str | None = None
    plivo_auth_token: str | None = None
    plivo_number: str | None = None
    agent_server_url: str = "http://localhost:8765"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # -- what callqueue adds --
    redis_cluster: bool = False
    redis_tls_ca: str | None = None
    queue_name: str = Field("default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    data_dir: Path = Path(".callqueue")
    carrier: Literal["auto", "simulator", "plivo", "twilio"] = "auto"
    agent_check: Literal["auto", "on", "off"] = "auto"
    agent_check_interval: float = Field(5, gt=0, le=300)
    plivo_api_url: str = "https://api.plivo.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_number: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    public_url: str | None = None
    api_keys: str = ""
    rate_limit_margin_ms: int = Field(15, ge=0, le=1000)
    rate_backoff_seconds: float = Field(10, gt=0, le=3600)
    ring_timeout: int = Field(60, ge=1, le=600)
    default_max_duration: int = Field(1800, ge=1, le=14_400)
    call_grace_seconds: int = Field(60, ge=0, le=3600)
    dial_lease_seconds: float = Field(30, gt=0, le=600)
    retention_seconds: int = Field(7 * 24 * 3600, ge=60)
    retry_base_delay: float = Field(30, ge=0)
    retry_factor: float = Field(2, ge=1)
    retry_max_delay: float = Field(3600, ge=0)
    retry_jitter: float = Field(0.1, ge=0, le=1)
    retry_on: str = "busy,no_answer,failed,lost"
    machine_counts_as_done: bool = False
    one_call_per_number: bool = Field(
        True, description="never two live calls to the same number at once (across campaigns)"
    )
    max_attempts_per_number_per_day: int = Field(0, ge=0, le=1000)
    webhook_secret: str | None = Field(
        None, description="shared secret signing status webhooks (HMAC-SHA256)"
    )
    webhook_timeout: float = Field(10, gt=0, le=120)
    webhook_max_attempts: int = Field(12, ge=1, le=100)
    webhook_concurrency: int = Field(8, ge=1, le=256)
    sim_outcomes: str = ""  # e.g. "completed=0.7,busy=0.1,no_answer=0.2"
    sim_ring_seconds: str = "1-4"
    sim_talk_seconds: str = "5-30"
    sim_dial_latency: float = Field(0, ge=0)
    sim_refuse_rate: float = Field(0, ge=0, le=1)
    sim_reject_rate: float = Field(0, ge=0, le=1)
    sim_ledger: str | None = None
    sim_seed: int | None = None
    log_level: str = "INFO"
    log_file: str | None = None
    otel_telemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry spans, metrics and logs per request"
    )
    # After otel_telemetry: its check reads that value.
    hot_path: bool | None = Field(
        None,
        description="answer POST /api/calls/queue before the framework (api/hot.py); "
        "unset: on, unless OTEL_TELEMETRY",
    )
    shutdown_timeout: float = Field(8, gt=0, le=60)
    worker_ttl_seconds: float = Field(
        10, ge=0.5, le=600, description="a worker silent this long is gone; its calls are taken"
    )
    event_spool: Path | None = Field(
        None, description="carrier events unwritten at stop go here; default DATA_DIR/event-spool"
    )
    request_read_timeout: float = Field(
        10,
        gt=0,
        le=300,
        description="seconds a request's headers, or its body between two "
        "chunks, may take to arrive before the connection is closed (408)",
    )
    enqueue_durability: Durability = Field(
        Durability.NONE,
        description="what an enqueue waits for before it answers: none, aof (fsynced to the "
        "server's append-only file), replica (applied by a replica)",
    )
    enqueue_durability_timeout: float = Field(
        1.0, gt=0, le=MAX_TIMEOUT_S, description="seconds an enqueue waits for it, then 503"
    )

    @field_validator("retry_on")
    @classmethod
    def _check_retry_on(cls, value: str) -> str:
        names = [v.strip() for v in value.split(",") if v.strip()]
        bad = [n for n in names if n not in Outcome.__members__.values()]
        if bad:
            raise ValueError(f"unknown outcome(s) {bad}; choose from {[o.value for o in Outcome]}")
        return ",".join(names)

    @field_validator("hot_path")
    @classmethod
    def _check_hot_path(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("otel_telemetry"):
            raise ValueError(
                "cannot be true with OTEL_TELEMETRY=true: the hot path answers before the "
                "framework, so its requests would have no spans (leave HOT_PATH unset)"
            )
        return value

    @field_validator("sim_ring_seconds", "sim_talk_seconds")
    @classmethod
    def _check_range(cls, value: str) -> str:
        _range(value, "value")
        return value

    @field_validator("sim_outcomes")
    @classmethod
    def _check_mix(cls, value: str) -> str:
        _parse_mix(value)
        return value

    # -- derived --
    @property
    def carrier_name(self) -> str:
        if self.carrier != "auto":
            return self.carrier
        if self.plivo_auth_id:
            return "plivo"
        return "twilio" if self.twilio_account_sid else "simulator"

    @property
    def serves_hot_path(self) -> bool:
        """HOT_PATH, else on unless OTEL_TELEMETRY (the framework's spans then cover every
        request)."""
        return self.hot_path if self.hot_path is not None else not self.otel_telemetry

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    def queue_options(self) -> QueueOptions:
        return QueueOptions(
            max_live_calls=self.max_concurrent_calls,
            rate_per_second=self.rate_limit_per_second,
            rate_margin_ms=self.rate_limit_margin_ms,
            rate_backoff_s=self.rate_backoff_seconds,
            ring_timeout_s=self.ring_timeout,
            default_max_duration_s=self.default_max_duration,
            grace_s=self.call_grace_seconds,
            dial_lease_s=self.dial_lease_seconds,
            retention_s=self.retention_seconds,
            one_call_per_number=self.one_call_per_number,
            max_attempts_per_number_per_day=self.max_attempts_per_number_per_day,
            worker_ttl_s=self.worker_ttl_seconds,
            retry=RetryPolicy(
                retry_on=frozenset(Outcome(v) for v in self.retry_on.split(",") if v),
                base_delay_s=self.retry_base_delay,
                factor=self.retry_factor,
                max_delay_s=self.retry_max_delay,
                jitter=self.retry_jitter,
                machine_is_done=self.machine_counts_as_done,
            ),
        )

    @property
    def event_spool_path(self) -> Path:
        return self.event_spool or self.data_dir / "event-spool.jsonl"

    def durability(self) -> DurabilityOptions:
        return DurabilityOptions(self.enqueue_durability, self.enqueue_durability_timeout)

    # The simulator's settings as plain values: runtime.sim_profile builds its profile from them
    # (config sits below the carriers and knows none of their classes).
    @property
    def sim_mix(self) -> dict[Outcome, float]:
        """SIM_OUTCOMES as weights; empty when unset (the simulator's own mix)."""
        return _parse_mix(self.sim_outcomes)

    @property
    def sim_ring_range(self) -> tuple[float, float]:
        return _range(self.sim_ring_seconds, "SIM_RING_SECONDS")

    @property
    def sim_talk_range(self) -> tuple[float, float]:
        return _range(self.sim_talk_seconds, "SIM_TALK_SECONDS")


def _parse_mix(value: str) -> dict[Outcome, float]:
    mix: dict[Outcome, float] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, weight = part.partition("=")
        try:
            mix[Outcome(name.strip())] = float(weight)
        except ValueError as exc:
            raise ValueError(f"bad entry {part!r}: use outcome=weight, e.g. busy=0.1") from exc
    return mix


def load_settings(**overrides: object) -> Settings:
    """Reads the settings; raises ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            lines.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
