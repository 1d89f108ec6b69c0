"""Test and benchmark helpers: local Plivo- and Twilio-compatible servers and the two
carriers' webhook signatures.

Nothing here runs in production; it lives in the package so that tests, benchmarks and
``callqueue`` users can point a carrier at a fake (``PLIVO_API_URL``, ``TWILIO_API_URL``).
The Twilio fake's names that would clash with the Plivo fake's are exported with a ``Twilio``
prefix (``TwilioScenario``, ``TwilioCallRecord``, ...).
"""

from callqueue.carriers.plivo_signature import sign_v3, v3_string_to_sign, verify_v3
from callqueue.testing.fake_plivo import (
    ANSWER_URL_ERROR,
    API_HANGUP,
    BUSY_LINE,
    CANCELED,
    CONCURRENCY_LIMIT_BREACHED,
    DESTINATION_OUT_OF_SERVICE,
    INVALID_DESTINATION,
    MACHINE_DETECTED,
    NORMAL_HANGUP,
    REJECTED,
    REQUEST_TIMEOUT,
    RING_TIMEOUT,
    SCHEDULED_HANGUP,
    ApiRequest,
    CallbackKind,
    CallbackRecord,
    CallRecord,
    FakePlivo,
    HangupCause,
    Outcome,
    Scenario,
    by_callee_suffix,
    serve_asgi,
)
from callqueue.testing.fake_twilio import API_ERRORS as TWILIO_API_ERRORS
from callqueue.testing.fake_twilio import CallbackRecord as TwilioCallbackRecord
from callqueue.testing.fake_twilio import CallRecord as TwilioCallRecord
from callqueue.testing.fake_twilio import FakeTwilio, TwilioApiRequest
from callqueue.testing.fake_twilio import Scenario as TwilioScenario
from callqueue.testing.fake_twilio import by_callee_suffix as twilio_by_callee_suffix

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
    "TWILIO_API_ERRORS",
    "ApiRequest",
    "CallRecord",
    "CallbackKind",
    "CallbackRecord",
    "FakePlivo",
    "FakeTwilio",
    "HangupCause",
    "Outcome",
    "Scenario",
    "TwilioApiRequest",
    "TwilioCallRecord",
    "TwilioCallbackRecord",
    "TwilioScenario",
    "by_callee_suffix",
    "serve_asgi",
    "sign_v3",
    "twilio_by_callee_suffix",
    "v3_string_to_sign",
    "verify_v3",
]
