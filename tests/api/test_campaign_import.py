"""POST /api/campaigns/{campaign_id}/calls: a campaign's call list as CSV, on the real app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import SettingsFactory, app_client

from callqueue.api.routes import campaigns as campaign_routes
from callqueue.csv_import import import_call_id
from callqueue.engine.reads import batch_counts, queue_snapshot
from callqueue.runtime import Runtime

CSV = (
    "Phone,name,city,priority\n"
    "+91 91234-56789,John,Pune,high\n"  # line 2
    "12345,Bad Number,Delhi,\n"  # line 3: not international
    "+919123456780,Jane,,urgent\n"  # line 4
    "+919123456781,Bad Priority,Goa,whenever\n"  # line 5
    "\n"  # line 6: blank
    "+919123456782,Ravi,Agra,\n"  # line 7
)
GOOD = {"+919123456789": "John", "+919123456780": "Jane", "+919123456782": "Ravi"}


def multipart(text: str, name: str = "calls.csv") -> dict[str, Any]:
    return {"files": {"file": (name, text.encode(), "text/csv")}}


def csv_body(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "text/csv"}}


async def test_good_rows_are_queued_and_bad_ones_listed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    reply = await client.post("/api/campaigns/spring/calls", **multipart(CSV))
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["campaign_id"] == "spring" and body["batch_id"] == "import-spring"
    assert (body["rows"], body["queued"], body["duplicates"], body["rejected_count"]) == (
        5, 3, 0, 2,
    )  # fmt: skip
    assert body["rejected_by_kind"]["invalid"] == 2 and body["blank_lines"] == 1
    assert [r["line"] for r in body["rejected"]] == [3, 5]
    [phone_error] = body["rejected"][0]["errors"]
    assert phone_error["loc"] == ["Phone"] and "international" in phone_error["msg"]
    assert body["rejected"][1]["errors"] == [
        {"loc": ["priority"], "msg": "Input should be 'urgent', 'high', 'normal' or 'low'",
         "type": "enum"}
    ]  # fmt: skip
    assert body["rejected_truncated"] is False

    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 3 and snap.queued == 3
    assert snap.queued_by_priority["high"] == 1 and snap.queued_by_priority["urgent"] == 1
    for number, name in GOOD.items():
        record = await runtime.queue.get(import_call_id("spring", number))
        assert record is not None, number
        assert record.spec.campaign_id == "spring"
        assert record.spec.phone_number == number
        assert record.spec.config["variables"]["name"] == name
        assert record.spec.batch_id == "import-spring"
    john = await runtime.queue.get(import_call_id("spring", "+919123456789"))
    assert john is not None and john.spec.config["variables"] == {"name": "John", "city": "Pune"}
    jane = await runtime.queue.get(import_call_id("spring", "+919123456780"))
    assert jane is not None and jane.spec.config["variables"] == {"name": "Jane"}  # empty city
    batch = await batch_counts(runtime.queue, "import-spring")
    assert batch is not None and batch.total == 3


async def test_reposting_queues_nothing_twice(client: httpx.AsyncClient, runtime: Runtime) -> None:
    first = await client.post("/api/campaigns/spring/calls", **multipart(CSV))
    assert first.status_code == 201 and first.json()["queued"] == 3
    again = await client.post("/api/campaigns/spring/calls", **multipart(CSV))
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["queued"], body["duplicates"], body["rejected_count"]) == (0, 3, 2)
    assert body["duplicates_differing"] == 0
    # Rows moved, as text/csv this time: the ids follow the numbers, not the positions.
    lines = CSV.splitlines()
    moved = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"
    third = await client.post("/api/campaigns/spring/calls", **csv_body(moved))
    assert third.status_code == 200, third.text
    assert (third.json()["queued"], third.json()["duplicates"]) == (0, 3)
    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 3 and snap.queued == 3


async def test_text_csv_body(client: httpx.AsyncClient, runtime: Runtime) -> None:
    text = "mobile;First Name\n+919123456789;Ana\n+919123456780;Bo\n"
    reply = await client.post(
        "/api/campaigns/autumn/calls",
        params=[("var", "First Name=first_name"), ("priority", "low")],
        content=text.encode(),
        headers={"content-type": "text/csv; charset=utf-8"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["queued"] == 2
    record = await runtime.queue.get(import_call_id("autumn", "+919123456789"))
    assert record is not None
    assert record.spec.config["variables"] == {"first_name": "Ana"}
    assert record.spec.priority == "low"
    snap = await queue_snapshot(runtime.queue)
    assert snap.queued_by_priority["low"] == 2


async def test_mapping_options_as_query_parameters(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    text = "ref,tel,name\nr-1,+919123456789,A\nr-2,+919123456780,B\n"
    params = {"phone_column": "tel", "id_column": "ref", "all_columns_as_variables": "false",
              "batch_size": "1"}  # fmt: skip
    reply = await client.post("/api/campaigns/c1/calls", params=params, **multipart(text))
    assert reply.status_code == 201, reply.text
    record = await runtime.queue.get("r-2")
    assert record is not None and record.spec.campaign_id == "c1"
    assert "variables" not in record.spec.config
    # The same ids with other values: a conflict naming the id column.
    changed = text.replace("+919123456780", "+919123456782")
    again = await client.post("/api/campaigns/c1/calls", params=params, **multipart(changed))
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["duplicates"], body["rejected_by_kind"]["conflict"]) == (1, 1)
    assert body["rejected"][0]["line"] == 3
    assert body["rejected"][0]["errors"][0]["loc"] == ["ref"]
    assert (await queue_snapshot(runtime.queue)).enqueued == 2


async def test_same_number_twice_is_one_call(client: httpx.AsyncClient, runtime: Runtime) -> None:
    text = "phone,name\n+919123456789,First\n+91 9123456789,Second\n+919123456789,First\n"
    reply = await client.post("/api/campaigns/c2/calls", **multipart(text))
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert (body["queued"], body["duplicates"], body["duplicates_differing"]) == (1, 2, 1)
    assert body["rejected_count"] == 0
    record = await runtime.queue.get(import_call_id("c2", "+919123456789"))
    assert record is not None and record.spec.config["variables"] == {"name": "First"}
    assert (await queue_snapshot(runtime.queue)).enqueued == 1


async def test_do_not_call_rows_and_campaign_defaults(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    made = await client.post("/api/campaigns", json={
        "campaign_id": "sale", "call_config": {"flow_name": "sale", "variables": {"offer": "10%"}},
    })  # fmt: skip
    assert made.status_code == 201, made.text
    assert (await client.post("/api/dnc", json={"numbers": ["+919123456780"]})).status_code < 300
    text = "phone,name\n+919123456789,A\n+919123456780,B\n"
    reply = await client.post("/api/campaigns/sale/calls", **multipart(text))
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["rejected_by_kind"]["dnc"] == 1
    error = {"loc": ["phone"], "msg": "is on the do-not-call list", "type": "do_not_call"}
    assert body["rejected"] == [{"line": 3, "kind": "dnc", "errors": [error]}]
    record = await runtime.queue.get(import_call_id("sale", "+919123456789"))
    assert record is not None
    assert record.spec.config["flow_name"] == "sale"
    assert record.spec.config["variables"] == {"offer": "10%", "name": "A"}
    assert (await queue_snapshot(runtime.queue)).enqueued == 1


@pytest.mark.parametrize(
    ("request_args", "loc", "needle"),
    [
        (multipart("name,email\nJohn,j@example.com\n"), ["query", "phone_column"],
         "no phone number column"),
        (csv_body(""), ["body"], "is empty"),
        ({"json": {"calls": []}}, ["body"], "multipart/form-data"),
        ({"files": {"other": ("a.csv", b"phone\n+919123456789\n")}}, ["body", "file"], "'file'"),
        ({"params": {"phone_column": "tel"}, **multipart("phone\n+919123456789\n")},
         ["query", "phone_column"], "no column 'tel'"),
        ({"params": {"var": "=x"}, **multipart("phone\n+919123456789\n")}, ["query", "var"],
         "COL=NAME"),
        ({"content": b"phone\n", "headers": {"content-type": "text/csv; charset=latin-1"}},
         ["body"], "UTF-8"),
    ],
)  # fmt: skip
async def test_files_that_cannot_be_imported_change_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    request_args: dict[str, Any],
    loc: list[str],
    needle: str,
) -> None:
    reply = await client.post("/api/campaigns/c3/calls", **request_args)
    assert reply.status_code == 422, reply.text
    [detail] = reply.json()["detail"]
    assert detail["loc"] == loc
    assert needle in detail["msg"]
    snap = await queue_snapshot(runtime.queue)
    assert snap.enqueued == 0 and snap.queued == 0


async def test_a_file_not_utf8_queues_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """Refused whole although its first row is good: the file is checked before queuing."""
    data = "phone,name\n+919123456780,A\n+919123456789,Jos\xe9\n".encode("latin-1")
    reply = await client.post("/api/campaigns/c3/calls",
                              files={"file": ("latin.csv", data, "text/csv")})  # fmt: skip
    assert reply.status_code == 422, reply.text
    [detail] = reply.json()["detail"]
    assert detail["loc"] == ["body", "file"]
    assert detail["msg"] == (
        "latin.csv: line 3 is not UTF-8 (byte 0xe9): save the file as CSV UTF-8"
    )
    assert (await queue_snapshot(runtime.queue)).enqueued == 0


async def test_a_malformed_form(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post("/api/campaigns/c4/calls", content=b"garbage",
                              headers={"content-type": "multipart/form-data"})  # fmt: skip
    assert reply.status_code == 400, reply.text
    [detail] = reply.json()["detail"]
    assert detail["type"] == "invalid_body" and "multipart form" in detail["msg"]
    assert (await queue_snapshot(runtime.queue)).enqueued == 0


async def test_campaign_id_too_long(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reply = await client.post(f"/api/campaigns/{'x' * 129}/calls", **multipart("phone\n"))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["path", "campaign_id"]


async def test_the_upload_is_capped(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_routes, "MAX_IMPORT_BYTES", 2000)
    text = "phone,name\n" + "".join(f"+9198{i:08d},name {i}\n" for i in range(200))
    assert len(text) > 2000
    for args in (multipart(text), csv_body(text)):
        reply = await client.post("/api/campaigns/big/calls", **args)
        assert reply.status_code == 413, reply.text
        assert reply.json()["detail"][0]["type"] == "too_large"
    assert (await queue_snapshot(runtime.queue)).enqueued == 0


async def test_uploads_over_64_kb(client: httpx.AsyncClient, runtime: Runtime) -> None:
    text = "phone,name\n" + "".join(f"+9198{i:08d},name {i}\n" for i in range(4000))
    assert len(text) > 64 * 1024
    reply = await client.post("/api/campaigns/big/calls", **multipart(text))
    assert reply.status_code == 201, reply.text
    assert (await queue_snapshot(runtime.queue)).enqueued == 4000


async def test_api_keys_apply(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings(api_keys="secret")) as (client, runtime):
        text = "phone\n+919123456789\n"
        refused = await client.post("/api/campaigns/k/calls", **multipart(text))
        assert refused.status_code == 401
        assert (await queue_snapshot(runtime.queue)).enqueued == 0
        reply = await client.post("/api/campaigns/k/calls", headers={"X-API-Key": "secret"},
                                  files={"file": ("a.csv", text.encode())})  # fmt: skip
        assert reply.status_code == 201, reply.text


async def test_documented_in_openapi(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    route = schema["paths"]["/api/campaigns/{campaign_id}/calls"]["post"]
    assert route["summary"] == "Import calls from a CSV file"
    assert "queues nothing twice" in route["description"]
    params = {p["name"]: p for p in route["parameters"]}
    assert set(params) >= {"campaign_id", "phone_column", "id_column", "var",
                           "all_columns_as_variables", "priority", "batch_size"}  # fmt: skip
    assert all(p.get("description") for p in params.values())
    content = route["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "text/csv"}
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert {"200", "201", "413", "422"} <= set(route["responses"])
    assert route["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ImportAnswer"
    )
