"""POST /api/calls/bulk-queue and GET /api/batches/{batch_id}."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import SEED_CALL, nothing_queued

from callqueue.engine.reads import queue_snapshot
from callqueue.runtime import Runtime

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


def row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "phone_number": f"+9198{i:08d}",
        "campaign_id": "campaign-123",
        "call_config": {"flow_name": "wishfin-test", "variables": {"n": i}},
        **extra,
    }


async def test_seed_example(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post("/api/calls/bulk-queue", json=SEED_BULK)
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["batch_id"] == "campaign-batch-123"
    assert (body["total"], body["queued"], body["duplicates"], body["rejected_count"]) == (
        1,
        1,
        0,
        0,
    )
    assert body["rejected"] == []
    [call_id] = body["call_ids"]
    record = await runtime.queue.get(call_id)
    assert record is not None
    assert record.spec.batch_id == "campaign-batch-123"
    assert record.spec.config["variables"] == {"name": "John Doe"}


async def test_replay_queues_nothing_twice(client: httpx.AsyncClient, runtime: Runtime) -> None:
    calls = [row(i) for i in range(50)]
    calls[7]["custom_call_id"] = "mine-7"
    batch = {"batch_id": "b-replay", "calls": calls}
    first = await client.post("/api/calls/bulk-queue", json=batch)
    assert first.status_code == 201
    assert first.json()["queued"] == 50
    assert first.json()["call_ids"][7] == "mine-7"
    again = await client.post("/api/calls/bulk-queue", json=batch)
    assert again.status_code == 200, again.text
    assert again.json()["queued"] == 0
    assert again.json()["duplicates"] == 50
    assert again.json()["call_ids"] == first.json()["call_ids"]
    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 50 and snap.queued == 50


async def test_valid_rows_are_queued_next_to_invalid_ones(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    calls: list[Any] = [
        row(0),
        row(1, phone_number="12"),
        row(2, priority="bogus", max_retries=42),
        "not an object",
        row(4, unknown=1),
        row(5, priority="urgent"),
        row(6, call_config={"variables": {"n": 10**30}}),  # kept exact, then refused
    ]
    reply = await client.post("/api/calls/bulk-queue", json={"batch_id": "mixed", "calls": calls})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert (body["total"], body["queued"], body["rejected_count"]) == (7, 2, 5)
    ids = body["call_ids"]
    assert ids[0] and ids[5] and ids[1:5] == [None] * 4 and ids[6] is None
    rejected = {r["index"]: r["errors"] for r in body["rejected"]}
    assert list(rejected) == [1, 2, 3, 4, 6]
    assert [e["loc"] for e in rejected[6]] == [["call_config", "variables"]]
    assert [e["loc"] for e in rejected[1]] == [["phone_number"]]
    assert {tuple(e["loc"]) for e in rejected[2]} == {("priority",), ("max_retries",)}
    assert [e["loc"] for e in rejected[4]] == [["unknown"]]
    assert (await queue_snapshot(runtime.queue)).enqueued == 2
    record = await runtime.queue.get(ids[5])
    assert record is not None and record.spec.priority == "urgent"


async def test_all_rows_invalid_is_422(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post(
        "/api/calls/bulk-queue", json={"batch_id": "bad", "calls": [row(0, phone_number="x")] * 2}
    )
    assert reply.status_code == 422, reply.text
    locs = [d["loc"] for d in reply.json()["detail"]]
    assert locs == [["body", "calls", 0, "phone_number"], ["body", "calls", 1, "phone_number"]]
    await nothing_queued(runtime)


async def test_conflicting_rows_are_rejected(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await client.post("/api/calls/queue", json=SEED_CALL)).status_code == 201
    calls = [row(0, custom_call_id="call-456"), row(1)]
    reply = await client.post("/api/calls/bulk-queue", json={"batch_id": "c1", "calls": calls})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["call_ids"][0] is None and body["call_ids"][1]
    [rejection] = body["rejected"]
    assert rejection["index"] == 0
    assert rejection["errors"][0]["type"] == "conflict"
    assert rejection["errors"][0]["loc"] == ["custom_call_id"]

    # Rows without custom_call_id that moved in a replay collide with their old ids: refused.
    swapped = {"batch_id": "c1", "calls": [row(0, custom_call_id="other"), row(2)]}
    reply = await client.post("/api/calls/bulk-queue", json=swapped)
    assert reply.json()["rejected"][0]["index"] == 1
    assert reply.json()["rejected"][0]["errors"][0]["type"] == "conflict"
    assert (await queue_snapshot(runtime.queue)).enqueued == 3


async def test_batch_id_is_made_when_absent(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/calls/bulk-queue", json={"calls": [row(0), row(1)]})
    assert reply.status_code == 201
    batch_id = reply.json()["batch_id"]
    assert len(batch_id) == 32
    assert (await client.get(f"/api/batches/{batch_id}")).json()["total"] == 2


async def test_duplicate_rows_in_one_request(client: httpx.AsyncClient, runtime: Runtime) -> None:
    calls = [row(0, custom_call_id="dup"), row(0, custom_call_id="dup")]
    reply = await client.post("/api/calls/bulk-queue", json={"batch_id": "d", "calls": calls})
    assert reply.json()["queued"] == 1 and reply.json()["duplicates"] == 1
    assert (await queue_snapshot(runtime.queue)).enqueued == 1


async def test_bad_envelopes(client: httpx.AsyncClient, runtime: Runtime) -> None:
    cases: list[tuple[Any, list[Any]]] = [
        ({"batch_id": "x"}, ["body", "calls"]),
        ({"batch_id": "x", "calls": []}, ["body", "calls"]),
        ({"batch_id": "x", "calls": {}}, ["body", "calls"]),
        ({"batch_id": "has space", "calls": [row(0)]}, ["body", "batch_id"]),
        ({"batch_id": "x", "calls": [row(0)], "extra": 1}, ["body", "extra"]),
        ([row(0)], ["body"]),
    ]
    for body, loc in cases:
        reply = await client.post("/api/calls/bulk-queue", json=body)
        assert reply.status_code == 422, (body, reply.text)
        assert loc in [d["loc"] for d in reply.json()["detail"]], (body, reply.text)
    reply = await client.post(
        "/api/calls/bulk-queue",
        content=b'{"calls": [',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["type"] == "json_invalid"
    await nothing_queued(runtime)


async def test_more_than_10000_calls_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    calls = [{"phone_number": "+919123456789"}] * 10_001
    reply = await client.post("/api/calls/bulk-queue", json={"batch_id": "big", "calls": calls})
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", "calls"]
    assert "10000" in reply.json()["detail"][0]["msg"]
    await nothing_queued(runtime)


async def test_body_over_16_mb_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    content = b'{"calls": [' + b" " * (16 * 1024 * 1024) + b"]}"
    reply = await client.post(
        "/api/calls/bulk-queue", content=content, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413
    await nothing_queued(runtime)


@pytest.mark.slow
async def test_ten_thousand_calls(client: httpx.AsyncClient, runtime: Runtime) -> None:
    calls = [row(i) for i in range(10_000)]
    reply = await client.post("/api/calls/bulk-queue", json={"batch_id": "10k", "calls": calls})
    assert reply.status_code == 201, reply.text
    assert reply.json()["queued"] == 10_000
    assert len(set(reply.json()["call_ids"])) == 10_000
    batch = (await client.get("/api/batches/10k")).json()
    assert batch["total"] == 10_000 and batch["counts"]["queued"] == 10_000
    assert (await queue_snapshot(runtime.queue)).queued == 10_000


async def test_batch_counts(client: httpx.AsyncClient, runtime: Runtime) -> None:
    calls = [row(i) for i in range(4)]
    ids = (
        await client.post("/api/calls/bulk-queue", json={"batch_id": "bc", "calls": calls})
    ).json()["call_ids"]
    assert (await client.delete(f"/api/calls/{ids[0]}")).status_code == 200
    # A finished call removed by retention (RETENTION_SECONDS) counts as expired.
    assert (await client.delete(f"/api/calls/{ids[1]}")).status_code == 200
    await runtime.client.delete(runtime.queue.keys.call(ids[1]))
    reply = await client.get("/api/batches/bc")
    assert reply.status_code == 200
    body = reply.json()
    assert body["total"] == 4 and body["done"] is False
    assert body["counts"]["queued"] == 2
    assert body["counts"]["cancelled"] == 1
    assert body["counts"]["expired"] == 1
    assert set(body["counts"]) >= {"scheduled", "dialing", "ringing", "in_progress", "completed"}
    for call_id in ids[2:]:
        await client.delete(f"/api/calls/{call_id}")
    assert (await client.get("/api/batches/bc")).json()["done"] is True


async def test_unknown_batch_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/batches/nope")
    assert reply.status_code == 404
    assert reply.json()["detail"][0]["loc"] == ["path", "batch_id"]
