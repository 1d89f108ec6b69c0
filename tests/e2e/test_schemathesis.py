"""Schemathesis against the API's own OpenAPI document, over real HTTP.

`callqueue up` (the API and a worker on the simulated carrier, as an operator runs it) runs as
a process on the suite's server with API keys, a webhook secret and carrier callback tokens
configured, so every route does its real work: the key is checked, calls are queued and
dialed, signatures are checked. Every operation in the document is exercised with
generated valid and invalid input (explicit examples, boundary "coverage" cases, then random
ones), and a stateful run chains operations through the links schemathesis infers. The run
must find no server error and no answer the document does not declare (status code, content
type, headers, body schema), and every protected route must refuse a request without a key.

Generation is derandomized with a fixed seed and no example database, so a run is the same on
every machine; the example count keeps it near a minute here. Nothing is excluded: a route
that fails is a bug to fix (or a document to correct), not an operation to skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from e2e_support import FAST_CALLS, clean_env, free_port, running, wait_healthy
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

from callqueue.api.app import create_app
from callqueue.config import load_settings

API_KEY = "schemathesis-key"
SEED = 20_251_107
#: Generated requests per operation (explicit examples and boundary cases come on top).
MAX_EXAMPLES = 12
#: Steps of each chain of linked calls in the stateful run (MAX_EXAMPLES chains).
STATEFUL_STEPS = 20

#: Checks that make the promise: no 5xx, and nothing answered that the document does not say.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",  # a protected route must refuse a request without a key
)

CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {
        "mode": "all",  # valid and invalid input
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    "auth": {"openapi": {"APIKeyHeader": {"api_key": API_KEY}, "HTTPBearer": {"bearer": API_KEY}}},
    "request-timeout": 30,
    # No state kept between runs (it would make a run depend on the ones before it).
    "cache": {"enabled": False},
}

#: What the service is given besides where it runs: callbacks and status webhooks are
#: configured, so that they are checked (not refused with 503 as on a service that cannot
#: verify or sign them).
SERVICE = {
    "API_KEYS": API_KEY,
    "WEBHOOK_SECRET": "st-webhook-secret",
    "PLIVO_AUTH_TOKEN": "st-plivo-token",
    "TWILIO_AUTH_TOKEN": "st-twilio-token",
    "CARRIER": "simulator",
}


def document() -> dict[str, Any]:
    """The app's OpenAPI document, built at collection: schemathesis makes one test per
    operation from it (its loader that waits for a fixture does not work on pytest 9.2). The
    fixture below checks that the running service serves this same document."""
    settings = load_settings(**{k.lower(): v for k, v in SERVICE.items()}, _env_file=None)
    return create_app(settings).openapi()


schema = schemathesis.openapi.from_dict(document(), config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture(scope="module")
def api_base(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`callqueue up` on a free port, on a queue of its own. (With the API alone, /api/health
    would rightly answer 503 as soon as a call is due: no worker.)"""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        REDIS_URL=redis_url,
        QUEUE_NAME="st" + secrets.token_hex(4),
        HOST="127.0.0.1",
        PORT=str(port),
        PUBLIC_URL=base,
        **{**FAST_CALLS, **SERVICE},
    )
    with running(["up"], env, tmp_path_factory.mktemp("schemathesis"), "up") as api:
        wait_healthy(base, api)
        assert httpx.get(f"{base}/openapi.json").json() == schema.raw_schema
        yield base


@pytest.mark.schemathesis
@schema.parametrize()
def test_every_operation_conforms(case: Case, api_base: str) -> None:
    case.call_and_validate(base_url=api_base)


@pytest.mark.schemathesis
def test_operation_sequences_conform(api_base: str) -> None:
    """Chains of calls along the links schemathesis infers from the document (an id one
    answer gives, used by the next request). Run by schemathesis's own engine, as its command
    line does: its steps depend on the live service's answers, which a plain hypothesis state
    machine takes for flaky data generation."""
    only_stateful = {
        "examples": {"enabled": False},
        "coverage": {"enabled": False},
        "fuzzing": {"enabled": False},
        "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
    }
    config = SchemathesisConfig.from_dict({**CONFIG, "base-url": api_base, "phases": only_stateful})
    live = schemathesis.openapi.from_url(f"{api_base}/openapi.json", config=config)
    problems: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(live).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            for checks in event.recorder.checks.values():
                problems += [
                    f"{check.name}: {check.failure_info.failure.title}\n"
                    + "\n".join(step.curl for step in check.failure_info.steps)
                    for check in checks
                    if check.failure_info is not None
                ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{event.label}: {event.value!r}")
    assert scenarios, "no stateful scenario ran"
    assert not problems, "\n\n".join(problems)


#: Paging values past what Redis can take, found by the run above: each was a 500 (Redis
#: "value is not an integer or out of range").
OUT_OF_RANGE = [
    "/api/campaigns?offset=9223372036854775807",
    "/api/dnc?cursor=18446744073709551616",
]


@pytest.mark.parametrize("path", OUT_OF_RANGE)
def test_paging_out_of_range_is_a_422(api_base: str, path: str) -> None:
    reply = httpx.get(f"{api_base}{path}", headers={"X-API-Key": API_KEY})
    assert reply.status_code == 422, reply.text
    name = path.split("?")[1].split("=")[0]
    assert reply.json()["detail"][0]["loc"] == ["query", name]
