"""Plivo's Voice API as a carrier (``CARRIER=plivo``, the default when PLIVO_AUTH_ID is set).

One pooled async HTTP client; every answer of Make-a-Call maps to a :class:`DialResult`:

* 201: accepted, ``request_uuid`` kept; callbacks follow on the hangup/ring/machine URLs.
* 400/404/422 (the number or request is wrong): rejected, the attempt fails, no retry.
* 401/403: the credentials do not work: UNUSABLE, nothing burned, dispatch pauses.
* 429 or the concurrency-breach error 5030: refused with push-back (no attempt used, the global
  dial rate backs off); other 5xx and connection errors: refused (no attempt used).
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

CONCURRENCY_BREACH = "5030"


@dataclass(frozen=True, slots=True)
class PlivoConfig:
    auth_id: str
    auth_token: str
    number: str  # caller id, E.164 or digits
    public_url: str  # where Plivo reaches this service's webhooks
    api_url: str = "https://api.plivo.com"
    agent_server_url: str = "http://localhost:8765"
    timeout_s: float = 10.0  # must stay below the dial lease
    # Requests in flight at once (dials plus hang-ups). Kept near QUEUE_WORKERS: httpcore scans
    # its whole pool on every request, so an oversized pool costs CPU on every dial.
    max_connections: int = 20


def plivo_digits(number: str) -> str:
    """Plivo wants numbers as digits with the country code and no '+'."""
    return "".join(ch for ch in number if ch.isdigit())


def webhook_url(public_url: str, kind: str, call_id: str, attempt: int) -> str:
    query = urlencode({"call_id": call_id, "attempt": attempt})
    return f"{public_url.rstrip('/')}/api/webhooks/plivo/{kind}?{query}"


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:200]
    return str(body)[:200]


class PlivoCarrier:
    name = "plivo"

    def __init__(self, config: PlivoConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or carrier_client(
            config.api_url, (config.auth_id, config.auth_token), config.timeout_s,
            config.max_connections,
        )  # fmt: skip
        self._calls = f"/v1/Account/{config.auth_id}/Call/"

    def request_body(self, request: DialRequest) -> dict[str, Any]:
        c, cfg = self.config, request.config
        body: dict[str, Any] = {
            "from": plivo_digits(c.number),
            "to": plivo_digits(request.to),
            "answer_url": answer_url(request, c.agent_server_url),
            "answer_method": "POST",
            "ring_url": webhook_url(c.public_url, "ring", request.call_id, request.attempt),
            "ring_method": "POST",
            "hangup_url": webhook_url(c.public_url, "hangup", request.call_id, request.attempt),
            "hangup_method": "POST",
            "time_limit": request.max_duration_s,
            "ring_timeout": request.ring_timeout_s,
        }
        detection = cfg.get("machine_detection")
        if detection:
            body["machine_detection"] = "hangup" if detection == "hangup" else "true"
            body["machine_detection_url"] = webhook_url(
                c.public_url, "machine", request.call_id, request.attempt
            )
            body["machine_detection_method"] = "POST"
        if cfg.get("caller_name"):
            body["caller_name"] = cfg["caller_name"]
        return body

    async def dial(self, request: DialRequest) -> DialResult:
        response = await send_dial(
            "Plivo", self._client.post(self._calls, json=self.request_body(request))
        )
        return response if isinstance(response, DialResult) else self.map_response(response)

    @staticmethod
    def map_response(response: httpx.Response) -> DialResult:
        status, text = response.status_code, _error_text(response)
        if status in (200, 201):
            body = response.json()
            uuid = body.get("request_uuid")
            if isinstance(uuid, list):
                uuid = uuid[0] if uuid else ""
            return DialResult(DialKind.ACCEPTED, carrier_call_id=str(uuid or ""))
        if status == 429 or CONCURRENCY_BREACH in text:
            retry = response.headers.get("Retry-After")
            delay = float(retry) if retry and retry.replace(".", "", 1).isdigit() else 1.0
            return DialResult(
                DialKind.REFUSED,
                reason=f"Plivo {status}: {text}",
                retry_after_s=delay,
                throttle=True,
            )
        if status in (401, 403):
            return DialResult(DialKind.UNUSABLE, reason=f"Plivo {status}: {text}")
        if 400 <= status < 500:
            return DialResult(DialKind.REJECTED, reason=f"Plivo {status}: {text}")
        return DialResult(
            DialKind.REFUSED, reason=f"Plivo {status}: {text}", retry_after_s=2.0, fault=True
        )

    async def hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> bool:
        """Hangs up by call UUID (known once a callback named it), else cancels the request."""
        if not carrier_call_id:
            return False
        base = f"/v1/Account/{self.config.auth_id}"
        for path in (f"{base}/Call/{carrier_call_id}/", f"{base}/Request/{carrier_call_id}/"):
            try:
                response = await self._client.delete(path)
            except httpx.HTTPError as exc:
                log.warning("Plivo hang-up of %s failed: %r", call_id, exc)
                return False
            if response.status_code in (200, 202, 204):
                return True
        return False

    async def check_credentials(self) -> tuple[bool, str]:
        """Account lookup: (ok, reason)."""
        try:
            response = await self._client.get(f"/v1/Account/{self.config.auth_id}/")
        except httpx.HTTPError as exc:
            return False, f"Plivo unreachable at {self.config.api_url}: {exc!r}"
        if response.status_code == 200:
            return True, "credentials accepted"
        return False, f"Plivo answered {response.status_code}: {_error_text(response)}"

    async def aclose(self) -> None:
        await self._client.aclose()
