"""A local HTTP server that behaves like Twilio's Programmable Voice API, for tests and
benchmarks.

::

    async with FakeTwilio(account_sid="AC...", auth_token="token") as twilio:
        settings = ...(twilio_api_url=twilio.url, ...)
        ...                                   # the app dials; the fake plays each call
        await twilio.settled(timeout=10)      # every call ended, every callback delivered
        assert twilio.max_live <= 5

What it serves (paths as Twilio's, HTTP Basic auth with the account SID and auth token; errors
as Twilio's JSON ``{"code", "message", "more_info", "status"}``):

* ``POST /2010-04-01/Accounts/{sid}/Calls.json``: create a call (form-encoded; ``To``, ``From``,
  ``Url``, ``Method``, ``StatusCallback``, ``StatusCallbackMethod``, ``StatusCallbackEvent``
  (repeated), ``Timeout``, ``TimeLimit``, ``MachineDetection``, ``AsyncAmd``,
  ``AsyncAmdStatusCallback``). 201 with the call resource (``sid`` ``CA...``, ``status``
  ``queued``), then the call is played in the background as its :class:`Scenario` says: signed
  (``X-Twilio-Signature``) status callbacks for the requested events (only ``completed`` when
  none is named), the ``Url`` fetched when the callee answers, the machine-detection verdict
  posted to ``AsyncAmdStatusCallback``.
* ``POST /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json`` with ``Status``: ``canceled`` ends a
  queued or ringing call and leaves an answered one alone; ``completed`` ends the call whatever
  its state. 200 with the resource; 404 (20404) for an unknown call.
* ``GET /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json``: the call resource.
* ``GET /2010-04-01/Accounts/{sid}.json``: the account (a credentials check).

Callback fields follow Twilio's documentation of status callbacks: ``CallSid``, ``AccountSid``,
``From``, ``To``, ``Called``, ``Caller``, ``Direction`` (``outbound-api``), ``ApiVersion``,
``CallStatus``, ``CallbackSource`` (``call-progress-events``), ``Timestamp`` (RFC 2822),
``SequenceNumber`` (per call, from 0, in the order the events happened), ``CallDuration`` at the
end, ``SipResponseCode`` when the call was not answered; the machine-detection callback carries
``CallSid``, ``AccountSid``, ``AnsweredBy`` and ``MachineDetectionDuration`` (ms).

Where the documentation is silent the fake makes a choice and says so: a call hung up with
``Status=completed`` before it was answered ends ``canceled``; an answer URL that fails ends the
call ``completed`` with ``ErrorCode`` 11200; status callbacks are not retried unless asked
(``callback_retries``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.carriers.twilio_signature import sign
from callqueue.testing.fake_server import (
    CallbackOutcome,
    FakeCarrierServer,
    _now_wall,
    _retry_after,
    _scenario_source,
    _seconds,
)

__all__ = [
    "API_ERRORS",
    "CallRecord",
    "CallbackKind",
    "CallbackRecord",
    "FakeTwilio",
    "Outcome",
    "Scenario",
    "TwilioApiRequest",
    "by_callee_suffix",
]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "busy", "no_answer", "failed", "machine"]
CallbackKind = Literal["status", "amd", "answer"]
CallState = Literal["queued", "ringing", "in-progress", "ended"]
ScenarioSource = Callable[[dict[str, str]], "Scenario"]

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
PROGRESS_EVENTS = ("initiated", "ringing", "answered", "completed")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

#: Error codes the fake answers with: (HTTP status, message), from Twilio's error dictionary.
API_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21201: (400, "No 'To' number is specified"),
    21205: (400, "Url parameter is required"),
    21211: (400, "Invalid 'To' Phone Number"),
    21212: (400, "Invalid 'From' Phone Number"),
    21213: (400, "No 'From' number is specified"),
    21214: (400, "'To' phone number cannot be reached"),
    21217: (400, "Phone number does not appear to be valid"),
    13224: (400, "Twilio does not support calling this number or the number is invalid"),
}
#: The fake's catch-all for a parameter it cannot use (Status=other on an update).
INVALID_PARAMETER = 20001
_CODE_OF_STATUS = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
#: An answer URL that could not be fetched (Twilio: "HTTP retrieval failure").
HTTP_RETRIEVAL_FAILURE = 11200
#: SIP answers put in ``SipResponseCode`` when a call is not answered.
SIP_BUSY, SIP_NOT_ANSWERED, SIP_UNAVAILABLE = 486, 487, 503


# ------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """How one create-call request plays out.

    ``ring_s`` is the ringing time before the answer (or, for busy / failed, the set-up time
    before the call fails); ``talk_s`` the time from answer to hangup.
    """

    outcome: Outcome = "answered"
    ring_s: float = 0.05
    talk_s: float = 0.1
    #: Answer the API request with this HTTP status (429, 500, 401, 400, ...): no call.
    api_status: int | None = None
    #: The Twilio error code of that answer (21211, 20429, ...); derived from the status if None.
    api_error_code: int | None = None
    #: Delay before the API answers (the call is placed all the same when it is accepted).
    api_delay_s: float = 0.0
    #: A ``Retry-After`` header (seconds) on a refused API request.
    retry_after_s: float | None = None
    #: Send every callback (not the answer URL fetch) twice.
    duplicate_callbacks: bool = False
    #: Hold every progress callback (initiated, ringing, answered) until the final one has been
    #: delivered: they arrive out of order (their SequenceNumber still tells the true order).
    completed_before_ringing: bool = False
    #: Delay before each callback is sent (network lag; callbacks can then overtake).
    callback_delay_s: float = 0.0
    #: ``SipResponseCode`` of a call that was not answered (e.g. 404: no such number).
    sip_response_code: int | None = None
    #: ``ErrorCode`` on the final callback (e.g. 13224 with outcome ``failed``).
    error_code: int | None = None
    #: The machine-detection verdict; default ``machine_start`` for outcome ``machine`` (or
    #: ``machine_end_beep`` with DetectMessageEnd), ``human`` otherwise.
    answered_by: str | None = None
    #: Time after the answer at which machine detection reports.
    detect_s: float = 0.02

    @property
    def refuses_api(self) -> bool:
        return self.api_error_code is not None or (
            self.api_status is not None and self.api_status not in (200, 201)
        )


DEFAULT_SCENARIO = Scenario()


def by_callee_suffix(
    rules: Mapping[str, Scenario], default: Scenario = DEFAULT_SCENARIO
) -> ScenarioSource:
    """A scenario source that looks at the callee number's last digits (the longest matching
    suffix wins)."""
    ordered = sorted(rules.items(), key=lambda item: len(item[0]), reverse=True)

    def choose(params: dict[str, str]) -> Scenario:
        callee = params.get("To", "")
        for suffix, scenario in ordered:
            if callee.endswith(suffix):
                return scenario
        return default

    return choose


# ---------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True, slots=True)
class TwilioApiRequest:
    """One request to the fake's API, as answered."""

    at: float  # time.monotonic() at arrival
    method: str
    path: str
    status: int
    params: dict[str, list[str]]
    response: dict[str, Any] | None
    call_sid: str | None = None

    def get(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None

    @property
    def is_create(self) -> bool:
        return self.method == "POST" and self.path.endswith("/Calls.json")

    @property
    def is_update(self) -> bool:
        return self.method == "POST" and "/Calls/" in self.path

    @property
    def to(self) -> str | None:
        return self.get("To")


@dataclass(slots=True)
class CallbackRecord(CallbackOutcome):
    """One callback delivery (with its retries) from the fake to the app."""

    at: float  # time.monotonic() of the first attempt
    kind: CallbackKind
    url: str  # as called (for GET, without the added parameters)
    method: str
    call_sid: str
    params: dict[str, str]
    copy: int = 1  # 2 for the duplicate of a duplicated callback
    attempts: int = 0
    status: int | None = None  # HTTP status of the last attempt; None when none answered
    error: str | None = None  # transport error of the last attempt
    response_body: str = ""
    finished_at: float | None = None


@dataclass(slots=True, eq=False)
class CallRecord:
    """One call the fake accepted, and what became of it."""

    sid: str
    account_sid: str
    params: dict[str, list[str]]
    scenario: Scenario
    created_at: float
    date_created: datetime
    state: CallState = "queued"
    status: str = "queued"  # Twilio's CallStatus now (the final one once ended)
    answered_at: float | None = None
    start_time: datetime | None = None
    ended_at: float | None = None
    end_time: datetime | None = None
    duration: int | None = None
    answer_status: int | None = None  # what the answer URL returned
    answer_body: str | None = None
    answered_by: str | None = None  # machine detection's verdict, once it ran
    sequence: int = 0  # next SequenceNumber
    final_params: dict[str, str] | None = None
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    final_delivered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values and values[-1] != "" else None

    @property
    def to(self) -> str:
        return self.param("To") or ""

    @property
    def from_(self) -> str:
        return self.param("From") or ""

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def events(self) -> set[str]:
        """The progress events to report (``completed`` only when none is named)."""
        named: set[str] = set()
        for value in self.params.get("StatusCallbackEvent", []):
            named.update(v.lower() for v in value.replace(",", " ").split())
        return named or {"completed"}

    def resource(self) -> dict[str, Any]:
        """The call as the REST API shows it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "direction": "outbound-api",
            "status": self.status,
            "answered_by": self.answered_by,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(_now_wall()),
            "start_time": _rfc2822(self.start_time),
            "end_time": _rfc2822(self.end_time),
            "duration": None if self.duration is None else str(self.duration),
            "price": None,
            "price_unit": "USD",
            "parent_call_sid": None,
            "phone_number_sid": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "annotation": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }


# ------------------------------------------------------------------------------------ helpers


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment) if moment is not None else None


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# ------------------------------------------------------------------------------------ the server


class FakeTwilio(FakeCarrierServer[TwilioApiRequest]):
    """Twilio's Voice API on 127.0.0.1 (see the module docstring), with a ledger of what
    happened: :attr:`api_requests`, :attr:`callbacks`, :attr:`calls`, :attr:`live_history`,
    :attr:`max_live`. :attr:`url` is the TWILIO_API_URL to use; :attr:`live` counts the calls
    accepted and not yet ended (queued and ringing count)."""

    _name = "FakeTwilio"
    _log = log

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = "token",
        scenario: Scenario | ScenarioSource | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_retries: int = 0,
        callback_retry_delay_s: float = 0.05,
        callback_timeout_s: float = 5.0,
        api_rate_limit: tuple[int, float] | None = None,
    ) -> None:
        """
        ``callback_retries``: more attempts for a callback that failed to connect, timed out or
        got a 5xx (Twilio's default is none). ``callback_timeout_s`` caps one attempt.
        ``api_rate_limit=(100, 1.0)``: a 429 (20429) for requests over 100 in any second.
        """
        super().__init__(host, port, callback_retry_delay_s, callback_timeout_s, api_rate_limit)
        self._scenario: ScenarioSource = _scenario_source(scenario, DEFAULT_SCENARIO, Scenario)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._retries = callback_retries

        self.callbacks: list[CallbackRecord] = []
        self.calls: dict[str, CallRecord] = {}  # by CallSid

    # ---------------------------------------------------------------------------- ledger

    @property
    def create_requests(self) -> list[TwilioApiRequest]:
        """The create-call requests, whatever they were answered."""
        return [r for r in self.api_requests if r.is_create]

    @property
    def update_requests(self) -> list[TwilioApiRequest]:
        """The call updates (hang-ups), whatever they were answered."""
        return [r for r in self.api_requests if r.is_update]

    def call(self, sid: str) -> CallRecord:
        return self.calls[sid]

    def callbacks_for(self, sid: str, kind: CallbackKind | None = None) -> list[CallbackRecord]:
        return [c for c in self.callbacks if c.call_sid == sid and (kind is None or c.kind == kind)]

    def _is_call_request(self, request: TwilioApiRequest) -> bool:
        return request.is_create

    # ------------------------------------------------------------------------------- API

    def _routes(self) -> list[Route]:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        return [
            Route(f"{base}/Calls.json", self._create_call, methods=["POST"]),
            Route(f"{base}/Calls/{{call_sid}}.json", self._update_call, methods=["POST"]),
            Route(f"{base}/Calls/{{call_sid}}.json", self._fetch_call, methods=["GET"]),
            Route(f"{base}.json", self._account, methods=["GET"]),
        ]

    def _unrouted(self, request: Request, status: int) -> Response:
        code = _CODE_OF_STATUS.get(status)
        return self._respond(request, status, self._error(status, code), {})

    @staticmethod
    def _error(status: int, code: int | None, message: str | None = None) -> dict[str, Any]:
        text = message or (API_ERRORS[code][1] if code in API_ERRORS else "error")
        return {
            "code": code,
            "message": text,
            "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
            "status": status,
        }

    def _respond(
        self,
        request: Request,
        status: int,
        payload: dict[str, Any] | None,
        params: dict[str, list[str]],
        *,
        at: float | None = None,
        call_sid: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        api_request = TwilioApiRequest(
            at=time.monotonic() if at is None else at,
            method=request.method,
            path=request.url.path,
            status=status,
            params=params,
            response=payload,
            call_sid=call_sid,
        )
        return self._record(api_request, status, payload, headers)

    async def _guard(
        self, request: Request, at: float, params: dict[str, list[str]]
    ) -> Response | None:
        status = self._refusal(request, at, self.account_sid, self.auth_token, "account_sid")
        if status is None:
            return None
        code = _CODE_OF_STATUS[status]
        return self._respond(request, status, self._error(status, code), params, at=at)

    @staticmethod
    async def _form(request: Request) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        if request.method != "POST":
            return params
        form = await request.form()
        for name, value in form.multi_items():
            params.setdefault(name, []).append(str(value))
        return params

    @staticmethod
    def _invalid(params: dict[str, list[str]]) -> int | None:
        """The error code of a create-call request Twilio would refuse, or None."""

        def one(name: str) -> str:
            values = params.get(name)
            return values[-1] if values else ""

        if not one("To"):
            return 21201
        if not one("From"):
            return 21213
        if not (one("Url") or one("Twiml") or one("ApplicationSid")):
            return 21205
        if not E164.match(one("To")):
            return 21211
        if not E164.match(one("From")):
            return 21212
        for name in ("Url", "StatusCallback", "AsyncAmdStatusCallback", "FallbackUrl"):
            value = one(name)
            if value and not value.startswith(("http://", "https://")):
                return 21205
        return None

    async def _create_call(self, request: Request) -> Response:
        at = time.monotonic()
        params = await self._form(request)
        refused = await self._guard(request, at, params)
        if refused is not None:
            return refused
        problem = self._invalid(params)
        if problem is not None:
            status = API_ERRORS[problem][0]
            return self._respond(request, status, self._error(status, problem), params, at=at)
        single = {name: values[-1] for name, values in params.items()}
        try:
            scenario = self._scenario(single)
        except Exception:
            log.exception("the fake twilio scenario raised")
            return self._respond(request, 500, self._error(500, 20500), params, at=at)

        if scenario.refuses_api:
            if scenario.api_delay_s > 0:
                await asyncio.sleep(scenario.api_delay_s)
            code = scenario.api_error_code
            status = scenario.api_status or (API_ERRORS[code][0] if code in API_ERRORS else 400)
            if code is None:
                code = _CODE_OF_STATUS.get(status)
            headers = _retry_after(scenario.retry_after_s)
            payload = self._error(status, code)
            return self._respond(request, status, payload, params, at=at, headers=headers)

        call = CallRecord(
            sid=_new_sid("CA"),
            account_sid=self.account_sid,
            params=params,
            scenario=scenario,
            created_at=at,
            date_created=_now_wall(),
        )
        self.calls[call.sid] = call
        self._set_live(+1)
        self._spawn(self._run_call(call), name=f"call:{call.sid}")
        if scenario.api_delay_s > 0:
            await asyncio.sleep(scenario.api_delay_s)
        return self._respond(request, 201, call.resource(), params, at=at, call_sid=call.sid)

    def _known_call(
        self, request: Request, at: float, params: dict[str, list[str]]
    ) -> CallRecord | Response:
        call = self.calls.get(request.path_params["call_sid"])
        if call is None:
            message = f"The requested resource {request.url.path} was not found"
            return self._respond(request, 404, self._error(404, 20404, message), params, at=at)
        return call

    async def _update_call(self, request: Request) -> Response:
        at = time.monotonic()
        params = await self._form(request)
        refused = await self._guard(request, at, params)
        if refused is not None:
            return refused
        found = self._known_call(request, at, params)
        if isinstance(found, Response):
            return found
        call = found
        wanted = (params.get("Status") or [""])[-1].lower()
        if wanted not in ("", "canceled", "completed"):
            payload = self._error(400, INVALID_PARAMETER, f"Invalid Status: {wanted!r}")
            return self._respond(request, 400, payload, params, at=at, call_sid=call.sid)
        if wanted and not call.ended and not call.hangup_requested.is_set():
            if call.state in ("queued", "ringing"):
                call.status = "canceled"
                call.hangup_requested.set()
            elif wanted == "completed":  # canceled leaves an answered call alone
                call.status = "completed"
                call.hangup_requested.set()
        return self._respond(request, 200, call.resource(), params, at=at, call_sid=call.sid)

    async def _fetch_call(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at, {})
        if refused is not None:
            return refused
        found = self._known_call(request, at, {})
        if isinstance(found, Response):
            return found
        return self._respond(request, 200, found.resource(), {}, at=at, call_sid=found.sid)

    async def _account(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at, {})
        if refused is not None:
            return refused
        payload = {
            "sid": self.account_sid,
            "owner_account_sid": self.account_sid,
            "friendly_name": "Fake Twilio",
            "status": "active",
            "type": "Full",
            "date_created": _rfc2822(_now_wall()),
            "date_updated": _rfc2822(_now_wall()),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}.json",
        }
        return self._respond(request, 200, payload, {}, at=at)

    # ------------------------------------------------------------------------- the calls

    async def _run_call(self, call: CallRecord) -> None:
        await self._play_guarded(
            self._play(call), call.sid, lambda: self._end(call, "failed", sip=SIP_UNAVAILABLE)
        )

    def _verdict(self, call: CallRecord) -> str:
        sc = call.scenario
        if sc.answered_by:
            return sc.answered_by
        if sc.outcome != "machine":
            return "human"
        detect_end = (call.param("MachineDetection") or "").lower() == "detectmessageend"
        return "machine_end_beep" if detect_end else "machine_start"

    async def _play(self, call: CallRecord) -> None:
        sc = call.scenario
        if sc.api_delay_s > 0:
            await asyncio.sleep(sc.api_delay_s)
        self._progress(call, "initiated", "initiated")
        if sc.outcome in ("busy", "failed"):
            if await self._pause(call, sc.ring_s):
                self._end(call, "canceled", sip=SIP_NOT_ANSWERED)
            elif sc.outcome == "busy":
                self._end(call, "busy", sip=sc.sip_response_code or SIP_BUSY)
            else:
                self._end(call, "failed", sip=sc.sip_response_code or SIP_UNAVAILABLE)
            return

        if call.hangup_requested.is_set():
            self._end(call, "canceled", sip=SIP_NOT_ANSWERED)
            return
        call.state = call.status = "ringing"
        self._notify_change()
        self._progress(call, "ringing", "ringing")
        ring_wait = sc.ring_s
        unanswered = sc.outcome == "no_answer"
        ring_timeout = _seconds(call.param("Timeout"))
        if ring_timeout is None:
            ring_timeout = 60.0
        if ring_timeout < ring_wait:
            ring_wait, unanswered = ring_timeout, True
        if await self._pause(call, ring_wait):
            self._end(call, "canceled", sip=SIP_NOT_ANSWERED)
            return
        if unanswered:
            self._end(call, "no-answer", sip=sc.sip_response_code or SIP_NOT_ANSWERED)
            return

        call.state = call.status = "in-progress"
        call.answered_at = time.monotonic()
        call.start_time = _now_wall()
        self._notify_change()
        detection = (call.param("MachineDetection") or "").lower() in ("enable", "detectmessageend")
        in_background = (call.param("AsyncAmd") or "").lower() == "true"
        talk = sc.talk_s
        if detection and not in_background:
            # Synchronous detection holds the call (and the answer URL) until the verdict.
            detect = min(sc.detect_s, talk)
            if await self._pause(call, detect):
                self._end(call, "completed")
                return
            talk -= detect
            call.answered_by = self._verdict(call)
        extra = {"AnsweredBy": call.answered_by} if call.answered_by else {}
        self._progress(call, "answered", "in-progress", extra)
        answered = await self._fetch_answer(call, extra)
        if call.hangup_requested.is_set():
            self._end(call, "completed")
            return
        if not answered:
            self._end(call, "completed", error=HTTP_RETRIEVAL_FAILURE)
            return

        if detection and in_background:
            detect = min(sc.detect_s, talk)
            if await self._pause(call, detect):
                self._end(call, "completed")
                return
            talk -= detect
            call.answered_by = self._verdict(call)
            amd_url = call.param("AsyncAmdStatusCallback")
            if amd_url is not None:
                params = {
                    "CallSid": call.sid,
                    "AccountSid": call.account_sid,
                    "AnsweredBy": call.answered_by,
                    "MachineDetectionDuration": str(int(detect * 1000)),
                }
                method = call.param("AsyncAmdStatusCallbackMethod")
                self._send_later(call, "amd", amd_url, method, params)

        time_limit = _seconds(call.param("TimeLimit"))
        if time_limit is not None:
            talk = min(talk, max(0.0, time_limit - (time.monotonic() - call.answered_at)))
        await self._pause(call, talk)
        self._end(call, "completed")

    def _common(self, call: CallRecord, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "Caller": call.from_,
            "To": call.to,
            "Called": call.to,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
            "CallStatus": status,
        }

    def _progress(
        self,
        call: CallRecord,
        event: str,
        status: str,
        extra: Mapping[str, str] | None = None,
        *,
        final: bool = False,
    ) -> bool:
        """A status callback for ``event``, when the call asked for it (True when one is sent)."""
        url = call.param("StatusCallback")
        if url is None or event not in call.events or self._closing:
            return False
        params = {
            **self._common(call, status),
            **(extra or {}),
            "CallbackSource": "call-progress-events",
            "Timestamp": format_datetime(_now_wall()),
            "SequenceNumber": str(call.sequence),
        }
        call.sequence += 1
        if final:
            call.final_params = params
        method = call.param("StatusCallbackMethod")
        self._send_later(call, "status", url, method, params, final=final)
        return True

    async def _fetch_answer(self, call: CallRecord, extra: Mapping[str, str]) -> bool:
        url = call.param("Url")
        if url is None:  # Twiml or ApplicationSid: nothing of ours to fetch
            return True
        params = {**self._common(call, "in-progress"), **extra}
        record = await self._send(call, "answer", url, call.param("Method"), params)
        call.answer_status = record.status
        call.answer_body = record.response_body
        return record.ok

    def _end(
        self, call: CallRecord, status: str, *, sip: int | None = None, error: int | None = None
    ) -> None:
        if call.ended:
            return
        call.state = "ended"
        call.status = status
        call.ended_at = time.monotonic()
        call.end_time = _now_wall()
        self._set_live(-1)
        if call.answered_at is not None:
            call.duration = max(0, math.ceil(call.ended_at - call.answered_at))
        else:
            call.duration = 0
        extra: dict[str, str] = {"CallDuration": str(call.duration)}
        if status != "completed" and sip is not None:
            extra["SipResponseCode"] = str(sip)
        code = error if error is not None else call.scenario.error_code
        if code is not None:
            extra["ErrorCode"] = str(code)
        in_background = (call.param("AsyncAmd") or "").lower() == "true"
        if call.answered_by and not in_background:
            extra["AnsweredBy"] = call.answered_by
        if not self._progress(call, "completed", status, extra, final=True):
            call.final_delivered.set()  # nothing sent: nothing for held callbacks to wait for
        self._notify_change()

    # ------------------------------------------------------------------------- callbacks

    def _send_later(
        self,
        call: CallRecord,
        kind: CallbackKind,
        url: str,
        method: str | None,
        params: dict[str, str],
        *,
        final: bool = False,
    ) -> None:
        sc = call.scenario
        held = kind == "status" and not final and sc.completed_before_ringing
        self._deliver_later(
            lambda copy: self._send(call, kind, url, method, params, copy=copy),
            name=f"{kind}:{call.sid}",
            copies=2 if sc.duplicate_callbacks else 1,
            delay_s=sc.callback_delay_s,
            hold=call.final_delivered if held else None,
            done=call.final_delivered if final else None,
        )

    async def _send(
        self,
        call: CallRecord,
        kind: CallbackKind,
        url: str,
        method: str | None,
        params: dict[str, str],
        *,
        copy: int = 1,
    ) -> CallbackRecord:
        """One callback, signed, retried as the fake's settings say."""
        client = self._callback_client()
        verb = (method or "POST").upper()
        cap = self._callback_timeout_s
        timeout = httpx.Timeout(cap, connect=min(cap, 2.0))
        record = CallbackRecord(
            at=time.monotonic(),
            kind=kind,
            url=url,
            method=verb,
            call_sid=call.sid,
            params=dict(params),
            copy=copy,
        )
        self.callbacks.append(record)
        for attempt in range(1, self._retries + 2):
            record.attempts = attempt
            retry = False
            try:
                async with self._sending:
                    response = await self._signed_request(client, verb, url, params, timeout)
            except httpx.TransportError as exc:
                record.status, record.error, retry = None, repr(exc), True
            else:
                record.status, record.error = response.status_code, None
                record.response_body = response.text
                retry = response.status_code >= 500
            if not retry or attempt > self._retries:
                break
            await asyncio.sleep(self._retry_delay_s * attempt)
        self._delivered(record, kind, url)
        return record

    async def _signed_request(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        params: dict[str, str],
        timeouts: httpx.Timeout,
    ) -> httpx.Response:
        headers = {"User-Agent": "TwilioProxy/1.1 (fake)"}
        if method == "GET":
            called = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
            headers["X-Twilio-Signature"] = sign(self.auth_token, called, None)
            return await client.get(called, headers=headers, timeout=timeouts)
        headers["X-Twilio-Signature"] = sign(self.auth_token, url, params)
        return await client.request(method, url, data=params, headers=headers, timeout=timeouts)
