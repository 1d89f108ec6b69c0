"""Twilio's Programmable Voice as a carrier (``CARRIER=twilio``, or auto when only
TWILIO_ACCOUNT_SID is set).

One pooled async HTTP client; every answer of ``POST /2010-04-01/Accounts/{sid}/Calls.json``
maps to a :class:`DialResult` the same way Plivo's do:

* 201: accepted; the call's ``sid`` (CallSid) is the carrier id, status callbacks follow.
* 400 with a code that says the number is wrong (21211 invalid 'To', 21214 unreachable, 21217
  not valid, 13223/13224 not callable): rejected, the attempt fails, no retry. Other 4xx about
  the request: rejected as well.
* 401/403 (20003: authenticate), 404 (no such account), or a 400 about our own caller id
  (21210 unverified / 21212 invalid 'From'): UNUSABLE, nothing burned, dispatch pauses.
* 429 (20429 too many requests; "never processed and always safe to retry"): refused with
  push-back (no attempt used, the global dial rate backs off); 5xx and connection errors:
  refused (no attempt used).
* a timeout once the request may have been sent: ambiguous, the slot stays held until a
  callback or the end of the attempt's longest life.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from callqueue.carriers.base import DialKind, DialRequest, DialResult
from callqueue.carriers.http import carrier_client, send_dial
from callqueue.carriers.urls import answer_url

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
#: The events we ask Twilio to report to the status callback, in the order they happen.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
#: Error codes of a create-call answer that mean the callee's number is wrong: never retried.
INVALID_NUMBER_CODES = frozenset({13223, 13224, 21211, 21214, 21217})
#: Error codes that mean our caller id (TWILIO_NUMBER) is wrong: no call can be placed.
CALLER_ID_CODES = frozenset({21210, 21212})
AUTH_CODE = 20003
TOO_MANY_REQUESTS_CODE = 20429
#: Call statuses after which a call is over (what a hang-up can leave behind).
FINAL_STATUSES = frozenset({"completed", "canceled", "busy", "failed", "no-answer"})


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    number: str  # caller id (From), E.164
    public_url: str  # where Twilio reaches this service's webhooks
    api_url: str = "https://api.twilio.com"
    agent_server_url: str = "http://localhost:8765"
    timeout_s: float = 10.0  # must stay below the dial lease
    # Requests in flight at once (dials plus hang-ups). Kept near QUEUE_WORKERS: httpcore scans
    # its whole pool on every request, so an oversized pool costs CPU on every dial.
    max_connections: int = 20


def e164(number: str) -> str:
    """Twilio wants E.164: ``+`` then the digits with the country code."""
    return "+" + "".join(ch for ch in number if ch.isdigit())


def status_callback_url(public_url: str, call_id: str, attempt: int, *, amd: bool = False) -> str:
    """Our status webhook for one attempt; ``amd`` marks the machine-detection callback."""
    params: dict[str, str | int] = {"call_id": call_id, "attempt": attempt}
    if amd:
        params["amd"] = 1
    return f"{public_url.rstrip('/')}/api/webhooks/twilio/status?{urlencode(params)}"


def error_of(response: httpx.Response) -> tuple[int | None, str]:
    """(Twilio error code, message) of an error answer: ``{"code", "message", "more_info",
    "status"}``; the code is None when the body is not Twilio's."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    try:
        number = int(code) if code is not None else None
    except (TypeError, ValueError):
        number = None
    return number, str(body.get("message") or body.get("detail") or body)[:200]


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


class TwilioCarrier:
    name = "twilio"

    def __init__(self, config: TwilioConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or carrier_client(
            config.api_url, (config.account_sid, config.auth_token), config.timeout_s,
            config.max_connections, {"Accept": "application/json"},
        )  # fmt: skip
        self._account = f"/{API_VERSION}/Accounts/{config.account_sid}"

    def request_body(self, request: DialRequest) -> dict[str, str | list[str]]:
        """The form of the create-call request (StatusCallbackEvent is repeated, one value
        per event)."""
        c, cfg = self.config, request.config
        body: dict[str, str | list[str]] = {
            "To": e164(request.to),
            "From": e164(c.number),
            "Url": answer_url(request, c.agent_server_url),
            "Method": "POST",
            "StatusCallback": status_callback_url(c.public_url, request.call_id, request.attempt),
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": list(STATUS_EVENTS),
            "Timeout": str(request.ring_timeout_s),
            "TimeLimit": str(request.max_duration_s),
        }
        if cfg.get("machine_detection"):
            # Asynchronous: the call (and the bot) go on while Twilio listens; the verdict
            # comes to the same webhook, marked amd=1. With machine_detection=hangup, the
            # webhook hangs up when the verdict is a machine.
            body["MachineDetection"] = "Enable"
            body["AsyncAmd"] = "true"
            body["AsyncAmdStatusCallback"] = status_callback_url(
                c.public_url, request.call_id, request.attempt, amd=True
            )
            body["AsyncAmdStatusCallbackMethod"] = "POST"
        # caller_name has no Twilio counterpart: on the phone network the caller name (CNAM)
        # belongs to the From number's registration, not to the request.
        return body

    async def dial(self, request: DialRequest) -> DialResult:
        response = await send_dial(
            "Twilio",
            self._client.post(f"{self._account}/Calls.json", data=self.request_body(request)),
        )
        return response if isinstance(response, DialResult) else self.map_response(response)

    @staticmethod
    def map_response(response: httpx.Response) -> DialResult:
        status = response.status_code
        if status in (200, 201):
            try:
                body: Any = response.json()
            except ValueError:
                body = None
            sid = body.get("sid") if isinstance(body, dict) else None
            if not sid:
                # Accepted, but we cannot tell which call: the callbacks will name it.
                return DialResult(DialKind.ACCEPTED, reason="Twilio answered without a sid")
            return DialResult(DialKind.ACCEPTED, carrier_call_id=str(sid))
        code, message = error_of(response)
        reason = f"Twilio {status}" + (f" (error {code})" if code else "") + f": {message}"
        if status == 429 or code == TOO_MANY_REQUESTS_CODE:
            delay = _retry_after(response, 1.0)
            return DialResult(DialKind.REFUSED, reason=reason, retry_after_s=delay, throttle=True)
        if status in (401, 403, 404) or code == AUTH_CODE or code in CALLER_ID_CODES:
            return DialResult(DialKind.UNUSABLE, reason=reason)
        if 400 <= status < 500:
            return DialResult(DialKind.REJECTED, reason=reason)
        delay = _retry_after(response, 2.0)
        return DialResult(DialKind.REFUSED, reason=reason, retry_after_s=delay, fault=True)

    async def _update(self, call_sid: str, status: str) -> httpx.Response:
        return await self._client.post(
            f"{self._account}/Calls/{call_sid}.json", data={"Status": status}
        )

    async def hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> bool:
        """Ends the call: ``Status=canceled`` first (ends a queued or ringing call, leaves an
        answered one alone), then ``Status=completed`` when the call is still in progress."""
        if not carrier_call_id:
            return False
        try:
            response = await self._update(carrier_call_id, "canceled")
            if response.status_code == 404:
                return False
            if response.status_code == 200 and self._status_of(response) in FINAL_STATUSES:
                return True
            response = await self._update(carrier_call_id, "completed")
        except httpx.HTTPError as exc:
            log.warning("Twilio hang-up of %s failed: %r", call_id, exc)
            return False
        if response.status_code != 200:
            log.warning(
                "Twilio hang-up of %s answered %s: %s",
                call_id,
                response.status_code,
                error_of(response)[1],
            )
        return response.status_code == 200

    @staticmethod
    def _status_of(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return ""
        return str(body.get("status") or "") if isinstance(body, dict) else ""

    async def check_credentials(self) -> tuple[bool, str]:
        """Account lookup: (ok, reason)."""
        try:
            response = await self._client.get(f"{self._account}.json")
        except httpx.HTTPError as exc:
            return False, f"Twilio unreachable at {self.config.api_url}: {exc!r}"
        if response.status_code == 200:
            return True, "credentials accepted"
        code, message = error_of(response)
        suffix = f" (error {code})" if code else ""
        return False, f"Twilio answered {response.status_code}{suffix}: {message}"

    async def aclose(self) -> None:
        await self._client.aclose()
