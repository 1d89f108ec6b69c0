"""A status-webhook receiver for tests (and for trying webhooks out): it checks every
delivery's signature as a backend should, keeps what it got, and can fail on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callqueue.status_webhooks import verify
from callqueue.testing.fake_server import serve_asgi


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]
    verified: bool


@dataclass
class WebhookReceiver:
    secret: str
    fail_next: int = 0  # answer 500 to this many deliveries first
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)  # the ones answered 2xx
    refused: int = 0

    async def _hook(self, request: Request) -> Response:
        raw = await request.body()
        headers = dict(request.headers)
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused += 1
            return Response("try later", 500)
        ok = verify(self.secret, headers, raw)
        self.deliveries.append(Delivery(headers, orjson.loads(raw), ok))
        return Response(status_code=204 if ok else 401)

    def delivery_ids(self) -> set[str]:
        return {d.headers["x-callqueue-delivery"] for d in self.deliveries}


@asynccontextmanager
async def webhook_receiver(secret: str, fail_next: int = 0) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, fail_next)
    app = Starlette(routes=[Route("/hook", receiver._hook, methods=["POST"])])
    async with serve_asgi(app) as base:
        receiver.url = f"{base}/hook"
        yield receiver
