"""Guard rails on the hot path (api/hot.py): it answers POST /api/calls/queue before the
framework, so a middleware added to the app would not see that route. The app's middleware and
exception handlers must be exactly what the hot path declares it mirrors; HOT_PATH switches it."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import SEED_CALL, SettingsFactory, started
from starlette.types import ASGIApp, Receive, Scope, Send

from callqueue.api.app import create_app
from callqueue.api.hot import MIRRORED_MIDDLEWARE, unmirrored
from callqueue.config import ConfigError, load_settings
from callqueue.runtime import Runtime


class Recorder:
    """A middleware the hot path knows nothing about: it notes each path it sees."""

    seen: list[str]

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


class Teapot(Exception):
    pass


def test_the_app_does_nothing_around_a_request_that_the_hot_path_does_not() -> None:
    app = create_app(load_settings(_env_file=None))
    assert tuple(m.cls for m in app.user_middleware) == MIRRORED_MIDDLEWARE
    assert unmirrored(app) == []


def test_a_middleware_added_without_its_twin_on_the_hot_path_is_named() -> None:
    app = create_app(load_settings(_env_file=None))
    app.add_middleware(Recorder, seen=[])
    gaps = unmirrored(app)
    assert len(gaps) == 1 and "Recorder" in gaps[0]


def test_an_exception_handler_the_hot_path_does_not_give_is_named() -> None:
    app = create_app(load_settings(_env_file=None))

    async def teapot(request: Any, exc: Exception) -> Any:
        raise NotImplementedError

    app.add_exception_handler(Teapot, teapot)
    app.add_exception_handler(418, teapot)
    assert unmirrored(app) == [
        "exception handler for Teapot, not mirrored",
        "exception handlers for status codes [418], not mirrored",
    ]


@pytest.mark.parametrize(
    ("env", "serves"),
    [
        ({}, True),
        ({"hot_path": False}, False),
        ({"hot_path": True}, True),
        ({"otel_telemetry": True}, False),  # the framework's spans cover every request
        ({"otel_telemetry": True, "hot_path": False}, False),
    ],
)
def test_hot_path_setting(env: dict[str, Any], serves: bool) -> None:
    settings = load_settings(_env_file=None, **env)
    assert settings.serves_hot_path is serves
    assert create_app(settings).hot_path is serves


def test_hot_path_true_with_otel_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"HOT_PATH: .*OTEL_TELEMETRY"):
        load_settings(_env_file=None, otel_telemetry=True, hot_path=True)


@pytest.mark.parametrize("hot", [True, False])
async def test_what_an_unmirrored_middleware_misses(
    make_settings: SettingsFactory, runtime: Runtime, hot: bool
) -> None:
    """Why the guard exists: with the hot path on, a new middleware never sees the busiest
    route; with HOT_PATH=false it does. Both queue the call."""
    app = create_app(make_settings(hot_path=hot), runtime=runtime)
    seen: list[str] = []
    app.add_middleware(Recorder, seen=seen)
    async with started(app) as client:
        reply = await client.post("/api/calls/queue", json=SEED_CALL)
        other = await client.get("/api/queue/status")
    assert reply.status_code == 201, reply.text
    assert other.status_code == 200
    assert await runtime.queue.get(reply.json()["call_id"]) is not None
    expected = ["/api/queue/status"] if hot else ["/api/calls/queue", "/api/queue/status"]
    assert seen == expected
