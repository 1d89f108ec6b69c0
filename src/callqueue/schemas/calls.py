"""Request bodies: what a caller may send, validated and normalised at the edge.

Unknown fields are refused everywhere (``extra="forbid"``) so that a typo surfaces as an error
instead of being silently ignored. Phone numbers are normalised to E.164.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
import phonenumbers
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    field_validator,
)

from callqueue.models import Priority
from callqueue.numbers import parse_international, time_zones
from callqueue.windows import zone_exists, zones_of_parsed

#: Ids a caller gives (custom_call_id, batch_id, a created campaign's id) are read back in URL
#: paths: only characters that need no escaping there, and not a dot first, so that no id is a
#: dot segment ("." or "..") that clients and proxies take out of a path.
ID_PATTERN = r"^[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"
ID_CHARS = "letters, digits and _ . : @ -, not starting with a dot"
MAX_VARIABLES = 50
MAX_VARIABLES_BYTES = 8 * 1024
MAX_SCHEDULE_AHEAD = timedelta(days=366)
MAX_BULK_CALLS = 10_000
RESERVED_IDS = frozenset({"active"})

SEED_CALL: dict[str, Any] = {
    "phone_number": "+919123456789",
    "campaign_id": "campaign-123",
    "call_config": {
        "voice": "en-US",
        "max_duration": 1800,
        "recording_enabled": True,
        "flow_name": "wishfin-test",
        "answer_url": "https://your-domain.com/outbound-answer",
        "variables": {"name": "John Doe", "email": "john@example.com"},
    },
    "custom_call_id": "call-456",
    "scheduled_at": "2025-01-15T14:30:00Z",
    "priority": "normal",
    "max_retries": 3,
}

SEED_BULK: dict[str, Any] = {
    "batch_id": "campaign-batch-123",
    "calls": [
        {
            "phone_number": "+919123456789",
            "campaign_id": "campaign-123",
            "call_config": {
                "flow_name": "wishfin-test",
                "variables": {"name": "John Doe"},
                "answer_url": "https://your-domain.com/outbound-answer",
            },
        }
    ],
}

StrictInt = Annotated[int, Field(strict=True)]


class E164(str):
    """A phone number in E.164 form that also knows the callee's time zones (IANA names; empty
    when unknown), taken from the number while it was parsed."""

    zones: tuple[str, ...]

    def __new__(cls, text: str, zones: tuple[str, ...] = ()) -> E164:
        self = super().__new__(cls, text)
        self.zones = zones
        return self


def normalize_phone(value: str) -> E164:
    """E.164 form of an international number ("+91 91234-56789" -> "+919123456789")."""
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        raise ValueError(
            "must be an international number starting with '+' and the country code, "
            "e.g. +919123456789"
        )
    try:
        number = parse_international(text)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"is not a phone number ({exc})") from None
    if number.extension:
        raise ValueError(
            f"has an extension ({number.extension}), which cannot be dialed: send the number "
            "without it"
        )
    # time_zones works out the number's type, which is what validity is: known
    # zones mean a valid number, and only numbers without zone data need the separate check.
    zones = zones_of_parsed(time_zones(number))
    if not zones and not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number for its country code")
    return E164(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), zones)


def _finite(value: JsonValue) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def http_url(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if scheme.lower() not in ("http", "https") or not sep or not rest.split("/")[0]:
        raise ValueError("must be an http:// or https:// URL")
    return value


MACHINE_DETECTION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "hangup"], "type": "string"},
              {"type": "null"}],
}  # fmt: skip


class CallConfig(BaseModel):
    """What the voice bot and the carrier need for this call."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Voice / language of the bot.",
        examples=["en-US"],
    )
    max_duration: StrictInt | None = Field(
        None,
        ge=1,
        le=14_400,
        description="Longest the call may last once answered, in seconds (1-14400); "
        "DEFAULT_MAX_DURATION when absent.",
        examples=[1800],
    )
    recording_enabled: Annotated[bool, Field(strict=True)] = Field(
        False, description="Record the call.", examples=[True]
    )
    flow_name: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Conversation flow the bot runs.",
        examples=["wishfin-test"],
    )
    answer_url: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL the carrier fetches when the callee answers.",
        examples=["https://your-domain.com/outbound-answer"],
    )
    variables: dict[str, JsonValue] | None = Field(
        None,
        description=f"Per-call values handed to the voice bot (at most {MAX_VARIABLES} keys, "
        f"{MAX_VARIABLES_BYTES} bytes as JSON).",
        examples=[{"name": "John Doe", "email": "john@example.com"}],
    )
    machine_detection: Annotated[
        Literal["true", "hangup"] | None, WithJsonSchema(MACHINE_DETECTION_SCHEMA)
    ] = Field(
        None,
        description="Answering-machine detection by the carrier: `true` (JSON true or the "
        'string "true") reports it (the attempt ends as `machine`), `"hangup"` also hangs up '
        'on a machine. Off when absent, false or "false". Stored as "true" or "hangup".',
        examples=["hangup"],
    )
    caller_name: str | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="Caller name shown to the callee where the carrier and network allow it.",
        examples=["Wishfin"],
    )

    @field_validator("machine_detection", mode="before")
    @classmethod
    def _detection(cls, value: object) -> object:
        # JSON booleans are what most callers send; the strings are the stored form.
        if value is True:
            return "true"
        if value is False or value == "false":
            return None
        return value

    @field_validator("answer_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("variables")
    @classmethod
    def _bounded(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        if value is None:
            return None
        if len(value) > MAX_VARIABLES:
            raise ValueError(f"has {len(value)} keys; at most {MAX_VARIABLES} are allowed")
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError as exc:  # integers over 64 bits, nesting over 255 levels
            raise ValueError(f"cannot be stored as JSON ({exc})") from None
        if not _finite(value):
            raise ValueError("contains NaN or Infinity, which JSON does not allow")
        if size > MAX_VARIABLES_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {MAX_VARIABLES_BYTES} allowed")
        return value


class QueueCallRequest(BaseModel):
    """One outbound call to queue."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_CALL]})

    phone_number: str = Field(
        ...,
        max_length=40,
        description="Number to call, international format with country code; normalised to "
        'E.164 ("+91 91234-56789" becomes "+919123456789").',
        examples=["+919123456789"],
    )
    campaign_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Campaign the call belongs to.",
        examples=["campaign-123"],
    )
    call_config: CallConfig = Field(
        default_factory=CallConfig,
        description="Voice bot and carrier settings for the call.",
        examples=[SEED_CALL["call_config"]],
    )
    custom_call_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
        description=f"Your id for the call: 1-128 {ID_CHARS}, and not `active`. Queuing the "
        "same id again with the same body returns the existing call (200); with a different "
        "body it is refused (409). A random id is made when absent.",
        examples=["call-456"],
    )
    scheduled_at: AwareDatetime | None = Field(
        None,
        description="When to place the call: ISO 8601 with a timezone. Absent or in the past: "
        "as soon as possible. At most a year ahead.",
        examples=["2025-01-15T14:30:00Z"],
    )
    priority: Priority = Field(
        Priority.NORMAL,
        description="urgent, high, normal or low; higher ones are dialed first.",
        examples=["normal"],
    )
    max_retries: StrictInt | None = Field(
        None,
        ge=0,
        le=10,
        description="Further attempts after a busy, unanswered or failed one (0-10). Absent: "
        "the campaign's retry policy decides (3 when it sets none).",
        examples=[3],
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL told of this call's final status (a signed POST; see "
        "'Status webhooks' in the README). Absent: its campaign's webhook_url, if any.",
        examples=["https://backend.example.com/hooks/calls"],
    )
    timezone: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The callee's IANA time zone, for the campaign's calling window. Absent: "
        "taken from the number (a number spanning several zones is called only when the "
        "window is open in all of them).",
        examples=["Asia/Kolkata"],
    )

    @field_validator("custom_call_id")
    @classmethod
    def _not_a_route(cls, value: str | None) -> str | None:
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved (GET /api/calls/{value} is another route)")
        return value

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not zone_exists(value):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Asia/Kolkata")
        return value

    @property
    def time_zones(self) -> tuple[str, ...]:
        """The callee's zones: the given one, else the number's (empty when unknown)."""
        if self.timezone is not None:
            return (self.timezone,)
        return getattr(self.phone_number, "zones", ())

    @field_validator("scheduled_at", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError(
                "must be an ISO 8601 date-time with a timezone, e.g. 2025-01-15T14:30:00Z"
            )
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _not_too_far(cls, value: datetime | None) -> datetime | None:
        if value is not None and value - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
            raise ValueError("is more than a year ahead")
        return value


class BulkQueueRequest(BaseModel):
    """Many calls at once. Each row is checked on its own: valid rows are queued even when
    others are refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_BULK]})

    batch_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=ID_PATTERN,
        description=f"Your id for the batch (1-100 {ID_CHARS}). Give one: posting the "
        "same batch again then queues nothing twice (rows without custom_call_id get an id "
        "derived from batch_id and their position). A random one is made when absent.",
        examples=["campaign-batch-123"],
    )
    calls: list[QueueCallRequest] = Field(
        ...,
        min_length=1,
        max_length=MAX_BULK_CALLS,
        description=f"The calls, 1 to {MAX_BULK_CALLS}.",
    )


class BulkEnvelope(BaseModel):
    """The bulk body with its rows still raw, so that each row can be judged on its own."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = Field(None, min_length=1, max_length=100, pattern=ID_PATTERN)
    calls: list[Any] = Field(..., min_length=1, max_length=MAX_BULK_CALLS)
