"""call_config.machine_detection as callers send it (JSON booleans or the strings), stored in
one form, and what each carrier is asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_support import SettingsFactory, app_client, nothing_queued, seed_call

from callqueue.runtime import Runtime, make_dispatcher
from callqueue.testing import FakePlivo, FakeTwilio

PLIVO_ID, TWILIO_SID, TOKEN = "MA" + "X" * 18, "AC" + "1" * 32, "token"
CLOSED = "http://127.0.0.1:9"  # callbacks of these calls are not needed here


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(True, "true"), ("true", "true"), ("hangup", "hangup"), (False, None), ("false", None)],
)
async def test_booleans_and_strings_are_accepted(
    client: httpx.AsyncClient, sent: object, stored: str | None
) -> None:
    body = seed_call(call_config={"flow_name": "f", "machine_detection": sent})
    reply = await client.post("/api/calls/queue", json=body)
    assert reply.status_code == 201, reply.text
    config = (await client.get("/api/calls/call-456")).json()["call_config"]
    assert config.get("machine_detection") == stored
    # The same call sent again in another accepted form is the same call: a replay.
    if stored == "true":
        other = True if sent == "true" else "true"
        body["call_config"]["machine_detection"] = other
        assert (await client.post("/api/calls/queue", json=body)).status_code == 200


@pytest.mark.parametrize("sent", [1, "yes", "True", "on", ["true"]])
async def test_other_values_are_422_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime, sent: object
) -> None:
    reply = await client.post(
        "/api/calls/queue", json=seed_call(call_config={"machine_detection": sent})
    )
    assert reply.status_code == 422, reply.text
    locs = [d["loc"] for d in reply.json()["detail"]]
    assert ["body", "call_config", "machine_detection"] in locs, locs
    await nothing_queued(runtime)


async def test_campaign_defaults_take_the_boolean(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/api/campaigns", json={"campaign_id": "amd", "call_config": {"machine_detection": True}}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["settings"]["call_config"] == {"machine_detection": "true"}
    call = {"phone_number": "+919123456789", "campaign_id": "amd", "custom_call_id": "m1"}
    assert (await client.post("/api/calls/queue", json=call)).status_code == 201
    config = (await client.get("/api/calls/m1")).json()["call_config"]
    assert config["machine_detection"] == "true"


async def dial_one(
    make_settings: SettingsFactory, config: dict[str, Any], carrier: dict[str, Any],
    dialed: Callable[[], Awaitable[None]],
) -> None:  # fmt: skip
    """Queues one call over HTTP and lets the real dispatcher dial it until ``dialed()``."""
    settings = make_settings(agent_check="off", public_url=CLOSED, **carrier)
    async with app_client(settings) as (client, runtime):
        body = seed_call(scheduled_at=None, call_config=config)
        assert (await client.post("/api/calls/queue", json=body)).status_code == 201
        dispatcher = make_dispatcher(runtime)
        await dispatcher.start()
        try:
            await dialed()
        finally:
            await dispatcher.stop(2)


@pytest.mark.parametrize(("sent", "expected"), [(True, "true"), ("hangup", "hangup")])
async def test_plivo_is_asked_for_its_own_values(
    make_settings: SettingsFactory, sent: object, expected: str
) -> None:
    async with FakePlivo(PLIVO_ID, TOKEN) as plivo:

        async def dialed() -> None:
            await plivo.wait_until(lambda: bool(plivo.call_requests))

        carrier = {"carrier": "plivo", "plivo_auth_id": PLIVO_ID, "plivo_auth_token": TOKEN,
                   "plivo_number": "+14155550100", "plivo_api_url": plivo.url}  # fmt: skip
        await dial_one(make_settings, {"machine_detection": sent}, carrier, dialed)
        [request] = plivo.call_requests
        assert request.body["machine_detection"] == expected
        assert "/api/webhooks/plivo/machine" in request.body["machine_detection_url"]


@pytest.mark.parametrize("sent", [True, "true", "hangup"])
async def test_twilio_is_asked_for_its_own_values(
    make_settings: SettingsFactory, sent: object
) -> None:
    async with FakeTwilio(TWILIO_SID, TOKEN) as twilio:

        async def dialed() -> None:
            await twilio.wait_until(lambda: bool(twilio.create_requests))

        carrier = {"carrier": "twilio", "twilio_account_sid": TWILIO_SID,
                   "twilio_auth_token": TOKEN, "twilio_number": "+14155550100",
                   "twilio_api_url": twilio.url}  # fmt: skip
        await dial_one(make_settings, {"machine_detection": sent}, carrier, dialed)
        [request] = twilio.create_requests
        assert request.get("MachineDetection") == "Enable"
        assert request.get("AsyncAmd") == "true"
