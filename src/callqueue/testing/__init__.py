"""Test and benchmark helpers: a local Plivo-compatible server and Plivo's webhook signature.

Nothing here runs in production; it lives in the package so that tests, benchmarks and
``callqueue`` users can point the Plivo carrier at a fake (``PLIVO_API_URL``).
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
    "sign_v3",
    "v3_string_to_sign",
    "verify_v3",
]
