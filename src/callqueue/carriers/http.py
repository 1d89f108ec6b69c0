"""What the HTTP carriers share: one pooled client, and the rule for a dial request that got
no HTTP answer (never left: refused, no attempt used; may have left: ambiguous, slot held)."""

from __future__ import annotations

from collections.abc import Awaitable

import httpx

from callqueue.carriers.base import DialKind, DialResult


def carrier_client(
    base_url: str,
    auth: tuple[str, str],
    timeout_s: float,
    max_connections: int,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        auth=auth,
        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": "callqueue", **(headers or {})},
    )


async def send_dial(
    carrier: str, request: Awaitable[httpx.Response]
) -> httpx.Response | DialResult:
    """The carrier's answer, or the DialResult for a request that got none."""
    try:
        return await request
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # The request never left: nothing can be ringing.
        return DialResult(
            DialKind.REFUSED,
            reason=f"{carrier} unreachable: {exc!r}",
            retry_after_s=2.0,
            fault=True,
        )
    except httpx.TimeoutException as exc:
        return DialResult(
            DialKind.AMBIGUOUS, reason=f"{carrier} did not answer: {exc!r}", fault=True
        )
    except httpx.HTTPError as exc:
        return DialResult(
            DialKind.AMBIGUOUS, reason=f"{carrier} request failed: {exc!r}", fault=True
        )
