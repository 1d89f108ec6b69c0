"""The real app on the session's embedded server, one queue per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_support import SettingsFactory, started

from callqueue.api.app import create_app
from callqueue.config import Settings, load_settings
from callqueue.runtime import Runtime, open_runtime


@pytest.fixture
def make_settings(redis_url: str, unique_name: str) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "queue_name": unique_name,
            "api_keys": "",
            "carrier": "simulator",
            "agent_server_url": "http://127.0.0.1:9",  # nothing listens on the discard port
            # The seed's number in every call: one-line-per-number has tests of its own.
            "one_call_per_number": False,
            "_env_file": None,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def runtime(make_settings: SettingsFactory) -> AsyncIterator[Runtime]:
    rt = await open_runtime(make_settings())
    try:
        yield rt
    finally:
        await rt.aclose()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with started(create_app(runtime=runtime)) as c:
        yield c
