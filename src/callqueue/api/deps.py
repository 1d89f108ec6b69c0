"""What routes get from the app: its settings, runtime and queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from callqueue.config import Settings
from callqueue.engine.queue import CallQueue
from callqueue.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_queue(request: Request) -> CallQueue:
    return get_runtime(request).queue


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[CallQueue, Depends(get_queue)]
