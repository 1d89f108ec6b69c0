"""A local HTTP server that behaves like Plivo's Voice API, for tests and benchmarks.

::

    async with FakePlivo(auth_id="MAXXXX", auth_token="token") as plivo:
        settings = ...(plivo_api_url=plivo.url, ...)
        ...                                   # the app dials; the fake plays each call
        await plivo.settled(timeout=10)       # every call ended, every callback delivered
        assert plivo.max_live <= 5

What it serves (paths as Plivo's, HTTP Basic auth with the auth id and token):

* ``POST /v1/Account/{auth_id}/Call/``: Make a Call (JSON body; a form body is accepted too).
  201 ``{"api_id", "message": "call fired", "request_uuid"}``, then the call is played in the
  background as its :class:`Scenario` says, with signed form-encoded callbacks (Signature V3)
  to ``ring_url``, ``answer_url`` (fetched when the callee answers; what it returns is kept),
  ``machine_detection_url`` and ``hangup_url`` (default: ``answer_url``), exactly as given.
* ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/``: hang up (a request uuid is accepted for
  a call not yet answered, as Plivo does for queued calls); 204, then the hangup callback with
  ``CallStatus=completed`` (answered) or ``cancel`` (not yet answered). 404 when unknown/ended.
* ``DELETE /v1/Account/{auth_id}/Request/{request_uuid}/``: cancel a call not yet answered.
* ``GET /v1/Account/{auth_id}/``: account details (a credentials check).

Callback field values follow Plivo's documentation: CallStatus values from the call-status
page, HangupCauseCode / HangupCauseName / HangupSource from the hangup-causes page, the machine
detection fields from the asynchronous machine detection page. Callback delivery follows
Plivo's callback configuration: a URL fragment ``#rc=..&rp=..&ct=..&rt=..`` sets retries,
retry policy and timeouts; the defaults are one retry, on connect or read timeouts only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.carriers.plivo_signature import sign_v3
from callqueue.testing.fake_server import (
    CallbackOutcome,
    FakeCarrierServer,
    _now_wall,
    _retry_after,
    _scenario_source,
    _seconds,
    serve_asgi,
)

__all__ = [
    "ANSWER_URL_ERROR",
    "API_HANGUP",
    "BUSY_LINE",
    "CANCELED",
    "CONCURRENCY_LIMIT_BREACHED",
    "DESTINATION_OUT_OF_SERVICE",
    "INVALID_DESTINATION",
    "MACHINE_DETECTED",
    "NORMAL_HANGUP",
    "REJECTED",
    "REQUEST_TIMEOUT",
    "RING_TIMEOUT",
    "SCHEDULED_HANGUP",
    "ApiRequest",
    "CallRecord",
    "CallbackKind",
    "CallbackRecord",
    "FakePlivo",
    "HangupCause",
    "Outcome",
    "Scenario",
    "by_callee_suffix",
    "serve_asgi",
]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "busy", "no_answer", "failed", "machine", "timeout"]
CallbackKind = Literal["ring", "answer", "fallback", "machine_detection", "hangup"]
ScenarioSource = Callable[[dict[str, Any]], "Scenario"]


# --------------------------------------------------------------------------------- hangup causes


@dataclass(frozen=True, slots=True)
class HangupCause:
    """What the hangup callback says about why a call ended.

    ``cause`` goes in ``HangupCause`` (the telephony cause name), ``name`` in
    ``HangupCauseName``, ``code`` in ``HangupCauseCode`` and ``source`` in ``HangupSource``.
    """

    cause: str
    name: str
    code: int
    source: str


#: The callee hung up after talking.
NORMAL_HANGUP = HangupCause("NORMAL_CLEARING", "Normal Hangup", 4000, "Callee")
#: An answered call hung up through the Hangup Call API.
API_HANGUP = HangupCause("NORMAL_CLEARING", "Normal Hangup", 4000, "API Request")
#: A call hung up through the API before it was answered.
CANCELED = HangupCause("ORIGINATOR_CANCEL", "Canceled", 1000, "API Request")
BUSY_LINE = HangupCause("USER_BUSY", "Busy Line", 3010, "Carrier")
REJECTED = HangupCause("CALL_REJECTED", "Rejected", 3020, "Carrier")
#: Rang until the ring timeout.
RING_TIMEOUT = HangupCause("NO_ANSWER", "Ring Timeout Reached", 6010, "Plivo")
DESTINATION_OUT_OF_SERVICE = HangupCause(
    "DESTINATION_OUT_OF_ORDER", "Destination Out Of Service", 2010, "Carrier"
)
INVALID_DESTINATION = HangupCause(
    "UNALLOCATED_NUMBER", "Invalid Destination Address", 2000, "Plivo"
)
#: The carrier did not answer the call set-up in time (``CallStatus=timeout``).
REQUEST_TIMEOUT = HangupCause("RECOVERY_ON_TIMER_EXPIRE", "Request timeout", 3070, "Carrier")
#: ``machine_detection=hangup`` and a machine answered.
MACHINE_DETECTED = HangupCause("NORMAL_CLEARING", "Machine Detected", 9100, "Plivo")
#: The call reached its ``time_limit``.
SCHEDULED_HANGUP = HangupCause("ALLOTTED_TIMEOUT", "Scheduled Hangup", 6000, "Plivo")
#: The answer URL (and the fallback URL) could not be reached.
ANSWER_URL_ERROR = HangupCause("NORMAL_CLEARING", "Error Reaching Answer URL", 7011, "Error")
#: India: the account's concurrent-call limit was reached; the call fails at once.
CONCURRENCY_LIMIT_BREACHED = HangupCause(
    "CALL_REJECTED", "Concurrency Limit Breached", 5030, "Plivo"
)
_INTERNAL_ERROR = HangupCause("NORMAL_TEMPORARY_FAILURE", "Internal Error", 5010, "Plivo")

#: Error codes the fake can answer a Make-a-Call request with (``Scenario.api_error_code``).
API_ERROR_MESSAGES: dict[int, str] = {5030: "Concurrency Limit Breached"}
#: HTTP status of an ``api_error_code`` answer when the scenario gives none.
API_ERROR_DEFAULT_STATUS = 403

_STATUS_MESSAGES: dict[int, str] = {
    400: "invalid request",
    401: "Authentication credentials invalid",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}

_UNANSWERED: dict[str, tuple[str, HangupCause]] = {
    "busy": ("busy", BUSY_LINE),
    "failed": ("failed", DESTINATION_OUT_OF_SERVICE),
    "timeout": ("timeout", REQUEST_TIMEOUT),
}


# ------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """How one Make-a-Call request plays out.

    ``ring_s`` is the ringing time before the answer (or, for busy / failed / timeout, the
    set-up time before the call fails); ``talk_s`` the time from answer to hangup.
    """

    outcome: Outcome = "answered"
    ring_s: float = 0.05
    talk_s: float = 0.1
    #: Answer the API request with this HTTP status (429, 500, 401, 400, ...): no call.
    api_status: int | None = None
    #: Answer the API request with an error body carrying this code (e.g. 5030): no call.
    api_error_code: int | None = None
    #: Delay before the API answers (the call is placed all the same when it is accepted).
    api_delay_s: float = 0.0
    #: A ``Retry-After`` header (seconds) on a refused API request (Plivo's own is undocumented).
    retry_after_s: float | None = None
    #: Send every callback (not the answer URL fetch) twice.
    duplicate_callbacks: bool = False
    #: Hold the ring callback until the hangup callback has been delivered.
    hangup_before_ring: bool = False
    #: Delay before each callback is sent (network lag; callbacks can then overtake).
    callback_delay_s: float = 0.0
    #: Replace the hangup cause of the outcome (e.g. ``failed`` with CONCURRENCY_LIMIT_BREACHED).
    hangup_cause: HangupCause | None = None
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
    """A scenario source that looks at the callee number's last digits.

    The longest matching suffix wins: ``by_callee_suffix({"0": Scenario(outcome="busy"),
    "99": Scenario(outcome="no_answer")})`` makes numbers ending in 0 busy, in 99 unanswered.
    """
    ordered = sorted(rules.items(), key=lambda item: len(item[0]), reverse=True)

    def choose(body: dict[str, Any]) -> Scenario:
        callee = str(body.get("to", ""))
        for suffix, scenario in ordered:
            if callee.endswith(suffix):
                return scenario
        return default

    return choose


# ---------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request to the fake's API, as answered."""

    at: float  # time.monotonic() at arrival
    method: str
    path: str
    status: int
    body: dict[str, Any]
    response: dict[str, Any] | None
    request_uuid: str | None = None
    to: str | None = None

    @property
    def is_make_call(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/Call")


@dataclass(slots=True)
class CallbackRecord(CallbackOutcome):
    """One callback delivery (with its retries) from the fake to the app."""

    at: float  # time.monotonic() of the first attempt
    kind: CallbackKind
    url: str  # as called (no fragment; for GET, without the added parameters)
    method: str
    request_uuid: str
    call_uuid: str
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

    request_uuid: str
    call_uuid: str
    body: dict[str, Any]
    scenario: Scenario
    created_at: float
    start_time: datetime
    counts_live: bool = True
    state: Literal["queued", "ringing", "in-progress", "ended"] = "queued"
    call_status: str | None = None  # final CallStatus
    hangup_cause: HangupCause | None = None
    answered_at: float | None = None
    answer_time: datetime | None = None
    ended_at: float | None = None
    end_time: datetime | None = None
    answer_status: int | None = None  # what the answer URL returned
    answer_body: str | None = None
    machine: bool | None = None  # machine detection's verdict, when it ran
    hangup_params: dict[str, str] | None = None
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    hangup_delivered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def to(self) -> str:
        return str(self.body.get("to", ""))

    @property
    def from_(self) -> str:
        return str(self.body.get("from", ""))

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def param(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None or value == "":
            return None
        return str(value)


# ------------------------------------------------------------------------------------ helpers


def _wall(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def _nonce() -> str:
    return str(secrets.randbelow(10**20)).zfill(20)


def _split_fragment(url: str) -> tuple[str, dict[str, str]]:
    """The URL to call (no fragment) and Plivo's callback options from its fragment."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.fragment, keep_blank_values=True))
    return urlunsplit(parts._replace(fragment="")), options


def _int_option(options: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(options.get(name, default))
    except ValueError:
        value = default
    return max(lo, min(hi, value))


def _machine_detection(value: Any) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return text if text in ("true", "hangup") else None


class FakePlivo(FakeCarrierServer[ApiRequest]):
    """Plivo's Voice API on 127.0.0.1 (see the module docstring), with a ledger of what
    happened: :attr:`api_requests`, :attr:`callbacks`, :attr:`calls`, :attr:`live_history`,
    :attr:`max_live`. :attr:`url` is the PLIVO_API_URL to use; :attr:`live` counts the calls
    accepted and not yet ended (ringing and connecting count, as in Plivo)."""

    _name = "FakePlivo"
    _log = log

    def __init__(
        self,
        auth_id: str = "MAXXXXXXXXXXXXXXXXXX",
        auth_token: str = "token",
        scenario: Scenario | ScenarioSource | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_retries: int | None = None,
        callback_retry_policy: str | None = None,
        callback_retry_delay_s: float = 0.05,
        callback_timeout_s: float = 5.0,
        concurrency_limit: int | None = None,
        concurrency_breach: Literal["hangup", "api"] = "hangup",
        api_rate_limit: tuple[int, float] | None = None,
        strict_numbers: bool = True,
        extra_signing_tokens: tuple[str, ...] = (),
        bill_rate: str = "0.00850",
    ) -> None:
        """
        ``callback_retries`` / ``callback_retry_policy`` replace the per-URL fragment options
        (Plivo's ``rc`` / ``rp``; defaults 1 and ``ct,rt``). ``callback_timeout_s`` caps the
        read timeout of one callback attempt. ``concurrency_limit``: calls over that many live
        calls fail with 5030, as a hangup cause (``"hangup"``) or as an API error (``"api"``).
        ``api_rate_limit=(300, 5.0)``: a 429 for requests over 300 in any 5 s.
        ``strict_numbers``: ``to`` / ``from`` must be digits only (no ``+``).
        ``extra_signing_tokens``: more auth tokens, each adding a comma-separated signature.
        """
        super().__init__(host, port, callback_retry_delay_s, callback_timeout_s, api_rate_limit)
        self._scenario: ScenarioSource = _scenario_source(scenario, DEFAULT_SCENARIO, Scenario)
        self.auth_id = auth_id
        self.auth_token = auth_token
        self._retries = callback_retries
        self._retry_policy = callback_retry_policy
        self._concurrency_limit = concurrency_limit
        self._concurrency_breach = concurrency_breach
        self._strict_numbers = strict_numbers
        self._signing_tokens = (auth_token, *extra_signing_tokens)
        self._bill_rate = bill_rate

        self.callbacks: list[CallbackRecord] = []
        self.calls: dict[str, CallRecord] = {}  # by request uuid
        self._by_call_uuid: dict[str, CallRecord] = {}

    # ---------------------------------------------------------------------------- ledger

    @property
    def call_requests(self) -> list[ApiRequest]:
        """The Make-a-Call requests, whatever they were answered."""
        return [r for r in self.api_requests if r.is_make_call]

    def call(self, request_uuid: str) -> CallRecord:
        return self.calls[request_uuid]

    def call_by_uuid(self, call_uuid: str) -> CallRecord:
        return self._by_call_uuid[call_uuid]

    def callbacks_for(
        self, request_uuid: str, kind: CallbackKind | None = None
    ) -> list[CallbackRecord]:
        return [
            c
            for c in self.callbacks
            if c.request_uuid == request_uuid and (kind is None or c.kind == kind)
        ]

    def _is_call_request(self, request: ApiRequest) -> bool:
        return request.is_make_call

    # ------------------------------------------------------------------------------- API

    def _routes(self) -> list[Route]:
        routes = []
        for suffix in ("/", ""):
            routes += [
                Route(f"/v1/Account/{{auth_id}}/Call{suffix}", self._make_call, methods=["POST"]),
                Route(
                    f"/v1/Account/{{auth_id}}/Call/{{call_id}}{suffix}",
                    self._hangup_call,
                    methods=["DELETE"],
                ),
                Route(
                    f"/v1/Account/{{auth_id}}/Request/{{request_uuid}}{suffix}",
                    self._cancel_request,
                    methods=["DELETE"],
                ),
                Route(f"/v1/Account/{{auth_id}}{suffix}", self._account, methods=["GET"]),
            ]
        return routes

    def _unrouted(self, request: Request, status: int) -> Response:
        return self._respond(request, status, self._error(status), {})

    @staticmethod
    def _error(status: int, message: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "api_id": str(uuid.uuid4()),
            "error": message or _STATUS_MESSAGES.get(status, "error"),
            **extra,
        }

    def _respond(
        self,
        request: Request,
        status: int,
        payload: dict[str, Any] | None,
        body: dict[str, Any],
        *,
        at: float | None = None,
        request_uuid: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        to = body.get("to")
        api_request = ApiRequest(
            at=time.monotonic() if at is None else at,
            method=request.method,
            path=request.url.path,
            status=status,
            body=body,
            response=payload,
            request_uuid=request_uuid,
            to=None if to is None else str(to),
        )
        return self._record(api_request, status, payload, headers)

    async def _guard(self, request: Request, at: float) -> Response | None:
        status = self._refusal(request, at, self.auth_id, self.auth_token, "auth_id")
        if status is None:
            return None
        return self._respond(request, status, self._error(status), {}, at=at)

    async def _read_body(self, request: Request) -> dict[str, Any] | None:
        content_type = request.headers.get("content-type", "")
        try:
            if "application/x-www-form-urlencoded" in content_type:
                form = await request.form()
                return {key: str(value) for key, value in form.items()}
            raw = await request.body()
            if not raw.strip():
                return {}
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _invalid(self, body: dict[str, Any]) -> str | None:
        for name in ("from", "to", "answer_url"):
            if body.get(name) in (None, ""):
                return f"{name} is a mandatory parameter"
        for name in ("from", "to"):
            number = str(body[name])
            digits = number[1:] if not self._strict_numbers and number.startswith("+") else number
            if not digits.isdigit():
                return (
                    f"{name} must be a phone number with its country code, digits only "
                    f"(got {number!r})"
                )
        for name in ("answer_url", "ring_url", "hangup_url", "fallback_url"):
            value = body.get(name)
            if value not in (None, "") and not str(value).startswith(("http://", "https://")):
                return f"{name} must be an http(s) URL"
        return None

    async def _make_call(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at)
        if refused is not None:
            return refused
        body = await self._read_body(request)
        if body is None:
            return self._respond(request, 400, self._error(400, "invalid JSON body"), {}, at=at)
        problem = self._invalid(body)
        if problem is not None:
            return self._respond(request, 400, self._error(400, problem), body, at=at)
        try:
            scenario = self._scenario(body)
        except Exception:
            log.exception("the fake plivo scenario raised")
            return self._respond(request, 500, self._error(500), body, at=at)

        if scenario.refuses_api:
            if scenario.api_delay_s > 0:
                await asyncio.sleep(scenario.api_delay_s)
            if scenario.api_error_code is not None:
                code = scenario.api_error_code
                status = scenario.api_status or API_ERROR_DEFAULT_STATUS
                payload = self._error(
                    status, API_ERROR_MESSAGES.get(code, f"error {code}"), error_code=code
                )
            else:
                status = scenario.api_status or 500
                payload = self._error(status)
            headers = _retry_after(scenario.retry_after_s)
            return self._respond(request, status, payload, body, at=at, headers=headers)

        breach = self._concurrency_limit is not None and self._live >= self._concurrency_limit
        if breach and self._concurrency_breach == "api":
            code = CONCURRENCY_LIMIT_BREACHED.code
            payload = self._error(
                API_ERROR_DEFAULT_STATUS, API_ERROR_MESSAGES[code], error_code=code
            )
            return self._respond(request, API_ERROR_DEFAULT_STATUS, payload, body, at=at)
        if breach:
            scenario = replace(
                scenario, outcome="failed", ring_s=0.0, hangup_cause=CONCURRENCY_LIMIT_BREACHED
            )

        call = CallRecord(
            request_uuid=str(uuid.uuid4()),
            call_uuid=str(uuid.uuid4()),
            body=body,
            scenario=scenario,
            created_at=at,
            start_time=_now_wall(),
            counts_live=not breach,
        )
        self.calls[call.request_uuid] = call
        self._by_call_uuid[call.call_uuid] = call
        if call.counts_live:
            self._set_live(+1)
        self._spawn(self._run_call(call), name=f"call:{call.request_uuid}")
        if scenario.api_delay_s > 0:
            await asyncio.sleep(scenario.api_delay_s)
        payload = {
            "api_id": str(uuid.uuid4()),
            "message": "call fired",
            "request_uuid": call.request_uuid,
        }
        return self._respond(request, 201, payload, body, at=at, request_uuid=call.request_uuid)

    async def _hangup_call(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at)
        if refused is not None:
            return refused
        call_id = request.path_params["call_id"]
        call = self._by_call_uuid.get(call_id)
        if call is None:
            queued = self.calls.get(call_id)
            if queued is not None and queued.answered_at is None:
                call = queued
        if call is None or call.ended or call.hangup_requested.is_set():
            return self._respond(request, 404, self._error(404, "call not found"), {}, at=at)
        call.hangup_requested.set()
        return self._respond(request, 204, None, {}, at=at, request_uuid=call.request_uuid)

    async def _cancel_request(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at)
        if refused is not None:
            return refused
        call = self.calls.get(request.path_params["request_uuid"])
        if (
            call is None
            or call.ended
            or call.answered_at is not None
            or call.hangup_requested.is_set()
        ):
            return self._respond(request, 404, self._error(404, "request not found"), {}, at=at)
        call.hangup_requested.set()
        return self._respond(request, 204, None, {}, at=at, request_uuid=call.request_uuid)

    async def _account(self, request: Request) -> Response:
        at = time.monotonic()
        refused = await self._guard(request, at)
        if refused is not None:
            return refused
        payload = {
            "account_type": "standard",
            "address": "",
            "api_id": str(uuid.uuid4()),
            "auth_id": self.auth_id,
            "auto_recharge": False,
            "billing_mode": "prepaid",
            "cash_credits": "100.00000",
            "city": "",
            "name": "Fake Plivo",
            "resource_uri": f"/v1/Account/{self.auth_id}/",
            "state": "",
            "timezone": "UTC",
        }
        return self._respond(request, 200, payload, {}, at=at)

    # ------------------------------------------------------------------------- the calls

    async def _run_call(self, call: CallRecord) -> None:
        await self._play_guarded(
            self._play(call), call.request_uuid, lambda: self._end(call, "failed", _INTERNAL_ERROR)
        )

    async def _play(self, call: CallRecord) -> None:
        sc = call.scenario
        if sc.api_delay_s > 0:
            await asyncio.sleep(sc.api_delay_s)
        if sc.outcome in _UNANSWERED:
            status, cause = _UNANSWERED[sc.outcome]
            if await self._pause(call, sc.ring_s):
                self._end(call, "cancel", CANCELED)
            else:
                self._end(call, status, sc.hangup_cause or cause)
            return

        call.state = "ringing"
        self._notify_change()
        ring_url = call.param("ring_url")
        if ring_url is not None:
            params = {**self._common(call, "ringing"), "Event": "Ring"}
            self._send_later(call, "ring", ring_url, call.param("ring_method"), params)
        ring_wait = sc.ring_s
        unanswered = sc.outcome == "no_answer"
        ring_timeout = _seconds(call.param("ring_timeout"))
        if ring_timeout is not None and ring_timeout < ring_wait:
            ring_wait, unanswered = ring_timeout, True
        if await self._pause(call, ring_wait):
            self._end(call, "cancel", CANCELED)
            return
        if unanswered:
            self._end(call, "no-answer", sc.hangup_cause or RING_TIMEOUT)
            return

        call.state = "in-progress"
        call.answered_at = time.monotonic()
        call.answer_time = _now_wall()
        self._notify_change()
        answered = await self._fetch_answer(call)
        if call.hangup_requested.is_set():
            self._end(call, "completed", API_HANGUP)
            return
        if not answered:
            self._end(call, "completed", ANSWER_URL_ERROR)
            return

        talk = sc.talk_s
        detection = _machine_detection(call.body.get("machine_detection"))
        if detection is not None:
            detect = min(sc.detect_s, talk)
            if await self._pause(call, detect):
                self._end(call, "completed", API_HANGUP)
                return
            talk -= detect
            call.machine = sc.outcome == "machine"
            detection_url = call.param("machine_detection_url")
            if detection_url is not None:
                params = {
                    **self._common(call, "in-progress"),
                    "Event": "MachineDetection",
                    "Machine": "true" if call.machine else "false",
                    "IfMachine": "hangup" if detection == "hangup" else "continue",
                }
                method = call.param("machine_detection_method")
                self._send_later(call, "machine_detection", detection_url, method, params)
            if call.machine and detection == "hangup":
                self._end(call, "completed", MACHINE_DETECTED)
                return

        cause = sc.hangup_cause or NORMAL_HANGUP
        time_limit = _seconds(call.param("time_limit"))
        if time_limit is not None:
            left = time_limit - (time.monotonic() - call.answered_at)
            if talk > left:
                talk, cause = max(0.0, left), SCHEDULED_HANGUP
        if await self._pause(call, talk):
            self._end(call, "completed", API_HANGUP)
            return
        self._end(call, "completed", cause)

    def _common(self, call: CallRecord, status: str) -> dict[str, str]:
        return {
            "CallUUID": call.call_uuid,
            "RequestUUID": call.request_uuid,
            "ALegUUID": call.call_uuid,
            "ALegRequestUUID": call.request_uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": "outbound",
            "CallStatus": status,
        }

    async def _fetch_answer(self, call: CallRecord) -> bool:
        params = {**self._common(call, "in-progress"), "Event": "StartApp"}
        answer_url = call.param("answer_url") or ""
        record = await self._send(call, "answer", answer_url, call.param("answer_method"), params)
        fallback_url = call.param("fallback_url")
        if not record.ok and fallback_url is not None:
            method = call.param("fallback_method")
            record = await self._send(call, "fallback", fallback_url, method, params)
        call.answer_status = record.status
        call.answer_body = record.response_body
        return record.ok

    def _end(self, call: CallRecord, status: str, cause: HangupCause) -> None:
        if call.ended:
            return
        call.state = "ended"
        call.call_status = status
        call.hangup_cause = cause
        call.ended_at = time.monotonic()
        call.end_time = _now_wall()
        if call.counts_live:
            self._set_live(-1)
        if call.answered_at is not None:
            duration = max(1, math.ceil(call.ended_at - call.answered_at))
            bill_duration = math.ceil(duration / 60) * 60
        else:
            duration = bill_duration = 0
        params = {
            **self._common(call, status),
            "Event": "Hangup",
            "HangupCause": cause.cause,
            "HangupCauseName": cause.name,
            "HangupCauseCode": str(cause.code),
            "HangupSource": cause.source,
            "Duration": str(duration),
            "BillDuration": str(bill_duration),
            "BillRate": self._bill_rate,
            "TotalCost": f"{float(self._bill_rate) * bill_duration / 60:.5f}",
            "StartTime": _wall(call.start_time),
            "AnswerTime": _wall(call.answer_time),
            "EndTime": _wall(call.end_time),
        }
        if call.machine is not None:
            params["Machine"] = "true" if call.machine else "false"
        call.hangup_params = params
        hangup_url = call.param("hangup_url") or call.param("answer_url")
        if hangup_url is not None:
            self._send_later(call, "hangup", hangup_url, call.param("hangup_method"), params)
        else:
            call.hangup_delivered.set()
        self._notify_change()

    # ------------------------------------------------------------------------- callbacks

    def _send_later(
        self,
        call: CallRecord,
        kind: CallbackKind,
        url: str,
        method: str | None,
        params: dict[str, str],
    ) -> None:
        sc = call.scenario
        self._deliver_later(
            lambda copy: self._send(call, kind, url, method, params, copy=copy),
            name=f"{kind}:{call.request_uuid}",
            copies=2 if sc.duplicate_callbacks else 1,
            delay_s=sc.callback_delay_s,
            hold=call.hangup_delivered if kind == "ring" and sc.hangup_before_ring else None,
            done=call.hangup_delivered if kind == "hangup" else None,
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
        """One callback, signed, retried as the URL's fragment (or the fake's settings) say."""
        client = self._callback_client()
        target, options = _split_fragment(url)
        verb = (method or "POST").upper()
        retries = (
            self._retries if self._retries is not None else _int_option(options, "rc", 1, 0, 5)
        )
        policy = {
            p.strip().lower()
            for p in (self._retry_policy or options.get("rp") or "ct,rt").split(",")
        }
        cap = self._callback_timeout_s
        timeout = httpx.Timeout(
            min(cap, _int_option(options, "rt", 40000, 100, 40000) / 1000),
            connect=min(cap, _int_option(options, "ct", 2000, 100, 10000) / 1000),
        )
        record = CallbackRecord(
            at=time.monotonic(),
            kind=kind,
            url=target,
            method=verb,
            request_uuid=call.request_uuid,
            call_uuid=call.call_uuid,
            params=dict(params),
            copy=copy,
        )
        self.callbacks.append(record)
        for attempt in range(1, retries + 2):
            record.attempts = attempt
            category: str
            try:
                async with self._sending:
                    response = await self._signed_request(client, verb, target, params, timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                record.status, record.error, category = None, repr(exc), "ct"
            except httpx.TransportError as exc:
                record.status, record.error, category = None, repr(exc), "rt"
            else:
                record.status, record.error = response.status_code, None
                record.response_body = response.text
                if record.ok:
                    break
                category = "5xx" if response.status_code >= 500 else "4xx"
            if attempt > retries or not ({category, "all"} & policy):
                break
            await asyncio.sleep(self._retry_delay_s * attempt)
        self._delivered(record, kind, target)
        return record

    async def _signed_request(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        params: dict[str, str],
        timeouts: httpx.Timeout,
    ) -> httpx.Response:
        nonce = _nonce()
        if method == "GET":
            called = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
            signature = ",".join(
                sign_v3(token, called, nonce, None, "GET") for token in self._signing_tokens
            )
        else:
            called = url
            signature = ",".join(
                sign_v3(token, url, nonce, params, "POST") for token in self._signing_tokens
            )
        headers = {
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-Ma-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
            "User-Agent": "PlivoHTTP/1.0 (fake)",
        }
        if method == "GET":
            return await client.get(called, headers=headers, timeout=timeouts)
        return await client.request(method, called, data=params, headers=headers, timeout=timeouts)
