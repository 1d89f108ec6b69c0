"""POST /api/calls/queue: the seed's body, normalisation, idempotent replays, conflicts, and
every kind of bad input (a clear 4xx naming the field, and nothing queued)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import SEED_CALL, nothing_queued, seed_call

from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import Runtime


async def test_seed_example_is_queued(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post("/api/calls/queue", json=SEED_CALL)
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["call_id"] == "call-456"
    assert body["status"] == "queued"  # scheduled_at is in the past: due now
    assert body["priority"] == "normal"
    assert body["scheduled_at"] == "2025-01-15T14:30:00Z"
    assert body["phone_number"] == "+919123456789"
    assert body["created"] is True
    record = await runtime.queue.get("call-456")
    assert record is not None
    assert record.spec.config["variables"] == {"name": "John Doe", "email": "john@example.com"}
    assert record.spec.max_retries == 3
    assert (await queue_snapshot(runtime.queue)).enqueued == 1


async def test_minimal_body_gets_a_random_id(client: httpx.AsyncClient, runtime: Runtime) -> None:
    ids = set()
    for _ in range(2):
        reply = await client.post("/api/calls/queue", json={"phone_number": "+919123456789"})
        assert reply.status_code == 201, reply.text
        call_id = reply.json()["call_id"]
        assert len(call_id) == 32 and int(call_id, 16) >= 0
        ids.add(call_id)
    assert len(ids) == 2
    record = await runtime.queue.get(ids.pop())
    assert record is not None and record.spec.max_retries is None  # the campaign decides (3)
    assert record.spec.priority == "normal"


@pytest.mark.parametrize(
    ("given", "e164"),
    [
        ("+91 91234-56789", "+919123456789"),
        ("0091 91234 56789", "+919123456789"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
async def test_phone_numbers_are_normalised(
    client: httpx.AsyncClient, given: str, e164: str
) -> None:
    reply = await client.post("/api/calls/queue", json={"phone_number": given})
    assert reply.status_code == 201, reply.text
    assert reply.json()["phone_number"] == e164
    status = await client.get(f"/api/calls/{reply.json()['call_id']}/status")
    assert status.json()["phone_number"] == e164


async def test_future_scheduled_at_is_scheduled(client: httpx.AsyncClient) -> None:
    due = datetime.now(UTC) + timedelta(hours=1)
    reply = await client.post(
        "/api/calls/queue",
        json=seed_call(custom_call_id="later", scheduled_at=due.isoformat(), priority="urgent"),
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "scheduled"
    assert reply.json()["priority"] == "urgent"
    assert reply.json()["scheduled_at"].startswith(due.strftime("%Y-%m-%dT%H:%M:%S"))
    status = (await client.get("/api/calls/later/status")).json()
    assert status["next_attempt_at"] is not None


async def test_replay_returns_the_existing_call(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post("/api/calls/queue", json=SEED_CALL)
    assert first.status_code == 201
    again = await client.post("/api/calls/queue", json=SEED_CALL)
    assert again.status_code == 200, again.text
    assert again.json()["call_id"] == "call-456"
    assert again.json()["created"] is False
    # The same request written differently is the same request.
    same = seed_call(
        phone_number="+91 91234-56789",
        scheduled_at="2025-01-15T20:00:00+05:30",
        call_config={**SEED_CALL["call_config"], "voice": "en-US"},
    )
    assert (await client.post("/api/calls/queue", json=same)).status_code == 200
    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 1 and snap.queued == 1


async def test_explicit_defaults_equal_absent_ones(client: httpx.AsyncClient) -> None:
    short = {"phone_number": "+919123456789", "custom_call_id": "d1"}
    long = {
        **short,
        "priority": "normal",
        "max_retries": None,  # absent: the campaign's policy decides (an explicit 3 is not that)
        "timezone": None,
        "campaign_id": None,
        "scheduled_at": None,
        "call_config": {"recording_enabled": False, "voice": None},
    }
    assert (await client.post("/api/calls/queue", json=short)).status_code == 201
    assert (await client.post("/api/calls/queue", json=long)).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "high"},
        {"max_retries": 2},
        {"max_retries": None},
        {"timezone": "Asia/Kolkata"},
        {"phone_number": "+14155552671"},
        {"scheduled_at": "2025-01-15T14:31:00Z"},
        {"campaign_id": "campaign-124"},
        {"call_config": {**SEED_CALL["call_config"], "variables": {"name": "Jane"}}},
    ],
)
async def test_same_id_different_body_is_409(
    client: httpx.AsyncClient, runtime: Runtime, change: dict[str, Any]
) -> None:
    assert (await client.post("/api/calls/queue", json=SEED_CALL)).status_code == 201
    reply = await client.post("/api/calls/queue", json=seed_call(**change))
    assert reply.status_code == 409, reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", "custom_call_id"]
    record = await runtime.queue.get("call-456")
    assert record is not None and record.spec.priority == "normal"  # the original is untouched
    assert (await queue_snapshot(runtime.queue)).enqueued == 1


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


BAD_BODIES: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("phone missing", {"campaign_id": "c"}, ["body", "phone_number"]),
    ("phone garbage", seed_call(phone_number="not a number"), ["body", "phone_number"]),
    ("phone no country", seed_call(phone_number="9123456789"), ["body", "phone_number"]),
    ("phone invalid", seed_call(phone_number="+91 12"), ["body", "phone_number"]),
    ("phone unassigned", seed_call(phone_number="+1 555 555 5555"), ["body", "phone_number"]),
    ("phone number type", seed_call(phone_number=919123456789), ["body", "phone_number"]),
    ("priority unknown", seed_call(priority="critical"), ["body", "priority"]),
    ("priority case", seed_call(priority="HIGH"), ["body", "priority"]),
    ("retries negative", seed_call(max_retries=-1), ["body", "max_retries"]),
    ("retries huge", seed_call(max_retries=11), ["body", "max_retries"]),
    ("retries string", seed_call(max_retries="3"), ["body", "max_retries"]),
    ("retries bool", seed_call(max_retries=True), ["body", "max_retries"]),
    ("retries float", seed_call(max_retries=2.5), ["body", "max_retries"]),
    (
        "duration zero",
        seed_call(call_config={"max_duration": 0}),
        ["body", "call_config", "max_duration"],
    ),
    (
        "duration huge",
        seed_call(call_config={"max_duration": 14401}),
        ["body", "call_config", "max_duration"],
    ),
    (
        "duration negative",
        seed_call(call_config={"max_duration": -5}),
        ["body", "call_config", "max_duration"],
    ),
    ("scheduled naive", seed_call(scheduled_at="2025-01-15T14:30:00"), ["body", "scheduled_at"]),
    ("scheduled garbage", seed_call(scheduled_at="tomorrow"), ["body", "scheduled_at"]),
    (
        "scheduled bad date",
        seed_call(scheduled_at="2025-02-30T10:00:00Z"),
        ["body", "scheduled_at"],
    ),
    ("scheduled far", seed_call(scheduled_at="2999-01-01T00:00:00Z"), ["body", "scheduled_at"]),
    ("scheduled number", seed_call(scheduled_at=1736951400), ["body", "scheduled_at"]),
    (
        "variable number over 64 bits",
        seed_call(call_config={"variables": {"n": 10**30}}),
        ["body", "call_config", "variables"],
    ),
    (
        "variables nested too deep",
        seed_call(call_config={"variables": {"n": deep(300)}}),
        ["body", "call_config", "variables"],
    ),
    ("unknown field", seed_call(priorty="high"), ["body", "priorty"]),
    (
        "unknown config field",
        seed_call(call_config={"voise": "en-US"}),
        ["body", "call_config", "voise"],
    ),
    (
        "too many variables",
        seed_call(call_config={"variables": {f"k{i}": i for i in range(51)}}),
        ["body", "call_config", "variables"],
    ),
    (
        "variables too big",
        seed_call(call_config={"variables": {"blob": "x" * 9000}}),
        ["body", "call_config", "variables"],
    ),
    (
        "variables not an object",
        seed_call(call_config={"variables": ["a"]}),
        ["body", "call_config", "variables"],
    ),
    (
        "answer_url not http",
        seed_call(call_config={"answer_url": "ftp://x/y"}),
        ["body", "call_config", "answer_url"],
    ),
    (
        "recording not bool",
        seed_call(call_config={"recording_enabled": "yes"}),
        ["body", "call_config", "recording_enabled"],
    ),
    ("call id with space", seed_call(custom_call_id="a b"), ["body", "custom_call_id"]),
    ("call id with slash", seed_call(custom_call_id="a/b"), ["body", "custom_call_id"]),
    ("call id too long", seed_call(custom_call_id="x" * 129), ["body", "custom_call_id"]),
    ("call id empty", seed_call(custom_call_id=""), ["body", "custom_call_id"]),
    ("call id reserved", seed_call(custom_call_id="active"), ["body", "custom_call_id"]),
    ("campaign empty", seed_call(campaign_id=""), ["body", "campaign_id"]),
]


@pytest.mark.parametrize(
    ("body", "loc"), [(b, loc) for _, b, loc in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
)
async def test_bad_input_is_422_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], loc: list[Any]
) -> None:
    reply = await client.post("/api/calls/queue", json=body)
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc for d in detail), detail
    assert all(d["msg"] and d["type"] for d in detail)
    assert "input" not in detail[0]  # values are not echoed back
    await nothing_queued(runtime)


async def test_all_errors_are_reported_at_once(client: httpx.AsyncClient) -> None:
    body = seed_call(phone_number="x", priority="bogus", max_retries=99, extra=1)
    reply = await client.post("/api/calls/queue", json=body)
    assert reply.status_code == 422
    locs = {tuple(d["loc"]) for d in reply.json()["detail"]}
    assert {("body", f) for f in ("phone_number", "priority", "max_retries", "extra")} <= locs


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"phone_number": "+919123456789",', {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b"null", {"content-type": "application/json"}),
        (b'{"phone_number": "+919123456789"}', {"content-type": "text/plain"}),
        (b'{"phone_number": "+919123456789"}', {}),
        (b"phone_number=%2B919123456789", {"content-type": "application/x-www-form-urlencoded"}),
        (b'{"phone_number": "\xff"}', {"content-type": "application/json"}),
        (b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}),
        (
            b'{"phone_number": "+919123456789", "call_config": {"variables": {"x": NaN}}}',
            {"content-type": "application/json"},
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "array",
        "null",
        "text-plain",
        "no-type",
        "form",
        "bad-utf8",
        "deep",
        "nan",
    ],
)
async def test_malformed_bodies_are_4xx(
    client: httpx.AsyncClient, runtime: Runtime, content: bytes, headers: dict[str, str]
) -> None:
    reply = await client.post("/api/calls/queue", content=content, headers=headers)
    assert 400 <= reply.status_code < 500, reply.text
    assert reply.json()["detail"][0]["loc"][0] == "body"
    await nothing_queued(runtime)


async def test_oversized_body_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = seed_call(call_config={"variables": {"blob": "x" * 70_000}})
    reply = await client.post("/api/calls/queue", json=body)
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"][0]["loc"] == ["body"]
    await nothing_queued(runtime)


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"phone_number": "+919123456789", "campaign_id": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    reply = await client.post(
        "/api/calls/queue", content=chunks(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413, reply.text
    await nothing_queued(runtime)
