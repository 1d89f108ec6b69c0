"""The do-not-call list over HTTP: single and bulk changes, checks at queue time."""

from __future__ import annotations

import httpx
from api_support import seed_call

from callqueue.runtime import Runtime


async def test_listed_numbers_are_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    added = await client.post("/api/dnc", json={"numbers": ["+91 91234-56789", "nonsense"]})
    assert added.status_code == 200
    body = added.json()
    assert body["changed"] == 1 and body["numbers"] == ["+919123456789"]
    assert [r["index"] for r in body["rejected"]] == [1]

    refused = await client.post("/api/calls/queue", json=seed_call())
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "phone_number"]
    assert "do-not-call" in refused.json()["detail"][0]["msg"]
    assert await runtime.queue.get("call-456") is None

    bulk = await client.post(
        "/api/calls/bulk-queue",
        json={
            "batch_id": "b1",
            "calls": [
                seed_call(custom_call_id="x1"),
                seed_call(custom_call_id="x2", phone_number="+919123456780"),
            ],
        },
    )
    assert bulk.status_code == 201
    assert bulk.json()["call_ids"] == [None, "x2"]
    assert bulk.json()["rejected"][0]["errors"][0]["type"] == "do_not_call"

    check = await client.get(
        "/api/dnc", params=[("number", "+919123456789"), ("number", "+919123456780")]
    )
    assert check.json()["listed"] == {"+919123456789": True, "+919123456780": False}
    page = await client.get("/api/dnc")
    assert page.json() == {"numbers": ["+919123456789"], "next_cursor": 0, "listed": None}

    removed = await client.request("DELETE", "/api/dnc", json={"numbers": ["+919123456789"]})
    assert removed.json()["changed"] == 1
    assert (await client.post("/api/calls/queue", json=seed_call())).status_code == 201


async def test_bad_dnc_requests_change_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    bodies: list[dict[str, list[str]]] = [
        {"numbers": []},
        {"numbers": ["nope"]},
        {"nums": ["+919123456789"]},
    ]
    for body in bodies:
        reply = await client.post("/api/dnc", json=body)
        assert reply.status_code == 422, body
    assert (await client.get("/api/dnc", params={"number": "abc"})).status_code == 422
    assert await runtime.queue.dnc_page() == (0, [])
