"""Plivo callbacks: signed ones move the call, forged or unsigned ones change nothing."""

from __future__ import annotations

from api_support import SettingsFactory, app_client

from callqueue.carriers.plivo_signature import sign_v3
from callqueue.models import CallSpec, CallStatus

PUBLIC = "https://queue.example.com"
TOKEN = "plivo-token"
REQUEST_UUID = "3b1d7c7e-9d2a-4a8e-8a36-6f1c2e9b0a11"
CALL_UUID = "9f0c6a52-1b7e-4c1d-b2a4-0d5e8f3c7a22"
OTHER_UUID = "5e2b8d4f-7a61-4f0e-9c3b-1a2d3e4f5a33"


def signed(path: str, form: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    nonce = "12345678901234567890"
    return {
        "X-Plivo-Signature-V3": sign_v3(token, f"{PUBLIC}{path}", nonce, form),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


async def test_signed_callbacks_apply_and_forged_ones_are_refused(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(public_url=PUBLIC, plivo_auth_token=TOKEN, api_keys="secret")
    async with app_client(settings) as (client, runtime):
        q = runtime.queue
        await q.enqueue(CallSpec("c1", "+919123456789"))
        (call,) = (await q.claim(1)).calls
        await q.accepted(call, REQUEST_UUID)
        ring = "/api/webhooks/plivo/ring?call_id=c1&attempt=1"
        form = {"CallStatus": "ringing", "CallUUID": CALL_UUID, "RequestUUID": REQUEST_UUID}
        # No API key needed (the signature is the credential); a wrong token's signature fails.
        bad = await client.post(ring, data=form, headers=signed(ring, form, "other-token"))
        assert bad.status_code == 403
        tampered = await client.post(
            ring, data={**form, "CallUUID": OTHER_UUID}, headers=signed(ring, form)
        )
        assert tampered.status_code == 403
        record = await q.get("c1")
        assert record is not None and record.attempts[-1].carrier_call_id == REQUEST_UUID

        hangup = "/api/webhooks/plivo/hangup?call_id=c1&attempt=1"
        end = {
            "CallStatus": "completed",
            "CallUUID": CALL_UUID,
            "RequestUUID": REQUEST_UUID,
            "HangupCause": "NORMAL_CLEARING",
            "HangupCauseCode": "4000",
            "Duration": "30",
            "BillDuration": "60",
            "AnswerTime": "2026-11-28 10:00:00",
            "EndTime": "2026-11-28 10:00:30",
        }
        for _ in range(2):  # Plivo retries: the second one changes nothing
            reply = await client.post(hangup, data=end, headers=signed(hangup, end))
            assert reply.status_code == 200
        assert reply.json() == {"applied": False, "code": "dup"}
        record = await q.get("c1")
        assert record is not None and record.status == CallStatus.COMPLETED
        assert record.attempts[0].carrier_call_id == CALL_UUID
        assert record.attempts[0].duration_s == 30.0


async def test_callbacks_need_plivo_configured(make_settings: SettingsFactory) -> None:
    async with app_client(make_settings()) as (client, _):
        path = "/api/webhooks/plivo/hangup?call_id=c1&attempt=1"
        reply = await client.post(path, data={"CallStatus": "busy"})
        assert reply.status_code == 503
        missing = await client.post("/api/webhooks/plivo/hangup", data={})
        assert missing.status_code == 422
        unknown = await client.post("/api/webhooks/plivo/other?call_id=c&attempt=1")
        assert unknown.status_code in (404, 422)
