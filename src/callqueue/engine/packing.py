"""Faster command encoding: redis-py's asyncio connections pack commands in Python; hiredis
packs them in C. The engine sends thousands of arguments per bulk enqueue and a few dozen per
event, so this is a large share of its client-side CPU."""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection


def pack(args: tuple[Any, ...]) -> bytes:
    """One command as RESP, packed by hiredis."""
    first = args[0]
    # "FUNCTION LOAD" and friends arrive as one argument; the server wants two.
    if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
        args = (*first.split(), *args[1:])
    packed: bytes = hiredis.pack_command(args)
    return packed


class HiredisPacking:
    """Mixin for redis-py asyncio connections (same wire output, packed by hiredis)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [pack(args)]


class FastConnection(HiredisPacking, Connection):
    pass


class FastSSLConnection(HiredisPacking, SSLConnection):
    pass


class FastUnixConnection(HiredisPacking, UnixDomainSocketConnection):
    pass


CONNECTION_CLASSES: dict[str, type[Connection | UnixDomainSocketConnection]] = {
    "redis": FastConnection,
    "rediss": FastSSLConnection,
    "unix": FastUnixConnection,
}
