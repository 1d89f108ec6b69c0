"""Small input holes, closed, over real HTTP against the real server: paging parameters out of
range, call ids that could not be read back, phone numbers with an extension, credentials in
the query string (refused, and blanked in the access log)."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_support import SEED_CALL, SettingsFactory, nothing_queued, seed_call, served

from callqueue.api.auth import redact_query
from callqueue.api.routes.campaigns import MAX_OFFSET
from callqueue.api.routes.dnc import MAX_CURSOR
from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import Runtime, open_runtime
from callqueue.schemas.calls import ID_PATTERN, RESERVED_IDS


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with served(runtime) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


def assert_422_naming(reply: httpx.Response, loc: list[Any]) -> None:
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc for d in detail), detail


# -- paging ------------------------------------------------------------------------------------

# Every paging parameter of every route: (path, parameter, smallest, largest).
PAGING = [
    ("/api/campaigns", "offset", 0, MAX_OFFSET),
    ("/api/campaigns", "limit", 1, 500),
    ("/api/dnc", "cursor", 0, MAX_CURSOR),
    ("/api/dnc", "count", 1, 5000),
    ("/api/queue/dead-letter", "limit", 1, 1000),
    ("/api/status-webhooks", "limit", 1, 1000),
]


async def test_the_reported_offset_is_a_422_naming_it(http: httpx.AsyncClient) -> None:
    reply = await http.get("/api/campaigns", params={"offset": 9223372036854775807})
    assert_422_naming(reply, ["query", "offset"])


@pytest.mark.parametrize(("path", "name", "low", "high"), PAGING)
async def test_paging_parameters_are_range_checked(
    http: httpx.AsyncClient, path: str, name: str, low: int, high: int
) -> None:
    # Past either end, past what Redis counts in (signed and unsigned 64 bits), and far past.
    over = [b for b in (2**63, 2**64) if b > high]
    for bad in (low - 1, high + 1, *over, -(2**63) - 1, 10**30):
        assert_422_naming(await http.get(path, params={name: bad}), ["query", name])
    for good in (low, high):
        reply = await http.get(path, params={name: good})
        assert reply.status_code == 200, (good, reply.text)


async def test_the_import_batch_size_is_range_checked(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    csv = {"content": b"phone\n+919123456789\n", "headers": {"content-type": "text/csv"}}
    for bad in (0, 10_001, 2**64):
        reply = await http.post("/api/campaigns/c1/calls", params={"batch_size": bad}, **csv)
        assert_422_naming(reply, ["query", "batch_size"])
    assert (await queue_snapshot(runtime.queue)).enqueued == 0


# -- call ids ----------------------------------------------------------------------------------


def _ids_to_try() -> list[str]:
    """Every id of 1 to 3 characters over letters, digits and the punctuation allowed (so the
    dots land everywhere), plus the longest."""
    chars = "a0_.:@-"
    ids = ["".join(p) for n in (1, 2, 3) for p in itertools.product(chars, repeat=n)]
    return [i for i in ids if re.fullmatch(ID_PATTERN, i) and i not in RESERVED_IDS] + ["x" * 128]


async def test_every_accepted_call_id_can_be_read_back(http: httpx.AsyncClient) -> None:
    ids = _ids_to_try()
    rows = [seed_call(custom_call_id=i, phone_number=f"+9198765{n:05d}") for n, i in enumerate(ids)]
    reply = await http.post("/api/calls/bulk-queue", json={"batch_id": "ids", "calls": rows})
    assert reply.status_code == 201, reply.text
    assert reply.json()["call_ids"] == ids
    for call_id in ids:
        for path in (f"/api/calls/{call_id}/status", f"/api/calls/{call_id}"):
            got = await http.get(path)
            assert got.status_code == 200, (call_id, path, got.text)
            assert got.json()["call_id"] == call_id
    cancelled = await http.delete(f"/api/calls/{ids[-2]}")
    assert cancelled.status_code == 200 and cancelled.json()["call_id"] == ids[-2]


@pytest.mark.parametrize("call_id", [".", "..", "...", ".hidden", "a/b", "a%2Fb", "a?b", "a#b"])
async def test_ids_that_cannot_be_read_back_are_refused_everywhere(
    http: httpx.AsyncClient, runtime: Runtime, call_id: str
) -> None:
    reply = await http.post("/api/calls/queue", json=seed_call(custom_call_id=call_id))
    assert_422_naming(reply, ["body", "custom_call_id"])
    bulk = {"calls": [seed_call(custom_call_id=call_id), seed_call(custom_call_id="ok-1")]}
    reply = await http.post("/api/calls/bulk-queue", json=bulk)
    assert reply.status_code == 201, reply.text
    (rejected,) = reply.json()["rejected"]
    assert rejected["index"] == 0 and rejected["errors"][0]["loc"] == ["custom_call_id"]
    csv = f"phone,custom_call_id\n+919123456780,{call_id}\n+919123456781,ok-2\n".encode()
    reply = await http.post(
        "/api/campaigns/c1/calls", content=csv, headers={"content-type": "text/csv"}
    )
    assert reply.status_code == 201, reply.text
    answer = reply.json()
    assert answer["queued"] == 1 and answer["rejected_count"] == 1
    assert answer["rejected"][0]["errors"][0]["loc"] == ["custom_call_id"]
    assert_422_naming(
        await http.post("/api/calls/bulk-queue", json={"batch_id": call_id, "calls": [SEED_CALL]}),
        ["body", "batch_id"],
    )
    assert_422_naming(
        await http.post("/api/campaigns", json={"campaign_id": call_id}), ["body", "campaign_id"]
    )
    assert (await queue_snapshot(runtime.queue)).enqueued == 2  # ok-1 and ok-2 only


async def test_the_documented_id_rule_is_the_enforced_one(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()["components"]["schemas"]
    field = schema["QueueCallRequest"]["properties"]["custom_call_id"]
    assert ID_PATTERN in str(field)
    assert "not starting with a dot" in str(field)


# -- extensions --------------------------------------------------------------------------------


# The forms of the report; tests/unit/test_numbers.py has more.
@pytest.mark.parametrize("number", ["+91 9123 456 702 ext 5", "x5", ";ext=5"])
async def test_an_extension_is_refused_naming_phone_number(
    http: httpx.AsyncClient, runtime: Runtime, number: str
) -> None:
    if not number.startswith("+"):
        number = "+91 9123 456 702" + number
    reply = await http.post("/api/calls/queue", json=seed_call(phone_number=number))
    assert_422_naming(reply, ["body", "phone_number"])
    assert "extension" in reply.json()["detail"][0]["msg"]
    await nothing_queued(runtime)
    bulk = {"calls": [seed_call(phone_number=number), seed_call(custom_call_id="ok")]}
    reply = await http.post("/api/calls/bulk-queue", json=bulk)
    assert reply.json()["rejected"][0]["errors"][0]["loc"] == ["phone_number"]
    csv = f'phone\n"{number}"\n+919123456781\n'.encode()
    reply = await http.post(
        "/api/campaigns/c1/calls", content=csv, headers={"content-type": "text/csv"}
    )
    answer = reply.json()
    assert answer["queued"] == 1 and answer["rejected"][0]["errors"][0]["loc"] == ["phone"]
    reply = await http.post("/api/dnc", json={"numbers": [number]})
    assert_422_naming(reply, ["body", "numbers", 0])
    reply = await http.get("/api/dnc", params={"number": number})
    assert_422_naming(reply, ["query", "number", 0])


# -- credentials in the query string -------------------------------------------------------------

NAMES = ["api_key", "apikey", "API-KEY", "x-api-key", "key", "token", "access_token", "auth"]


@pytest.mark.parametrize("name", NAMES)
async def test_credentials_in_the_query_are_refused(
    http: httpx.AsyncClient, runtime: Runtime, name: str
) -> None:
    for method, path, body in (
        ("GET", "/api/queue/status", None),
        ("GET", "/api/health", None),
        ("POST", "/api/calls/queue", SEED_CALL),  # the hot path
        ("POST", "/api/dnc", {"numbers": ["+919123456780"]}),
    ):
        reply = await http.request(method, path, params={name: "s3cr3t"}, json=body)
        assert reply.status_code == 400, (path, reply.text)
        (detail,) = reply.json()["detail"]
        assert detail["loc"] == ["query", name]
        assert detail["type"] == "credentials_in_query"
        assert "X-API-Key" in detail["msg"] and "s3cr3t" not in reply.text
    await nothing_queued(runtime)
    assert await runtime.queue.dnc_contains(["+919123456780"]) == [False]


async def test_credentials_in_the_query_are_refused_even_with_a_good_key(
    make_settings: SettingsFactory,
) -> None:
    runtime = await open_runtime(make_settings(api_keys="k1"))
    try:
        async with served(runtime) as url, httpx.AsyncClient(base_url=url) as client:
            good = {"X-API-Key": "k1"}
            ok = await client.get("/api/queue/status", params={"limit": 1}, headers=good)
            assert ok.status_code == 200
            reply = await client.get("/api/queue/status", params={"api_key": "k1"}, headers=good)
            assert reply.status_code == 400
            reply = await client.post("/api/calls/queue?api_key=k1", json=SEED_CALL)
            assert reply.status_code == 400
            await nothing_queued(runtime)
    finally:
        await runtime.aclose()


async def test_the_access_log_blanks_credentials(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        await http.get("/api/dnc?count=5&api_key=s3cr3t&Token=t0k3n&api%5Fkey=an0ther")
        await http.get("/api/dnc?count=6")
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 2, lines
    assert "/api/dnc?count=5&api_key=[redacted]&Token=[redacted]&api%5Fkey=[redacted]" in lines[0]
    assert not any(s in "".join(lines) for s in ("s3cr3t", "t0k3n", "an0ther"))
    assert "/api/dnc?count=6 " in lines[1]


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/a?key=1", "/a?key=[redacted]"),
        ("/a?keys=1&monkey=2", "/a?keys=1&monkey=2"),
        ("/a?x=1&access-token=2&y", "/a?x=1&access-token=[redacted]&y"),
        ("/a?api+key=1", "/a?api+key=1"),
        ("/a", "/a"),
    ],
)
def test_redact_query(target: str, logged: str) -> None:
    assert redact_query(target) == logged
