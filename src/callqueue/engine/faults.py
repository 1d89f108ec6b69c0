"""Which Redis failures pass by themselves, and a retry loop for the work that must not be lost.

redis-py's exceptions are not Python's: ``redis.exceptions.ConnectionError`` and
``TimeoutError`` derive from ``RedisError``, not from the builtin ``ConnectionError``/
``TimeoutError``/``OSError``, and the errors of a server that is loading its append-only file,
of a replica being promoted, or of a cluster re-forming are ``ResponseError`` subclasses. An
``except (TimeoutError, ConnectionError, OSError)`` catches none of them. Everything that must
survive a Redis blip (carrier events, releases, reaps, webhook bookkeeping) asks
:func:`is_transient` instead, so one list decides what is retried.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as rx

log = logging.getLogger(__name__)

T = TypeVar("T")

# Connection lost, refused or timed out; the server loading its data (LOADING); the pool or the
# server out of connections. Authentication and authorisation errors are ConnectionError
# subclasses too, but they do not pass by themselves.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterDownError,  # CLUSTERDOWN, MASTERDOWN: a failover in progress
    rx.TryAgainError,  # TRYAGAIN: keys of a slot being moved
    rx.ReadOnlyError,  # READONLY: we reached a replica (the old master, demoted)
    rx.AskError,  # MOVED/ASK: the slot moved; the cluster client re-routes on retry
    rx.ClusterError,
    rx.RedisClusterException,
    builtins.ConnectionError,
    builtins.TimeoutError,  # asyncio.TimeoutError is this class since 3.11
    OSError,
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    rx.AuthenticationError,
    rx.AuthorizationError,
    rx.AuthenticationWrongNumberOfArgsError,
    rx.NoPermissionError,
)
# Error replies that name a passing state, whatever class the client raised them as (a script
# that hits them mid-run reports them inside its own error text).
_TRANSIENT_PREFIXES = ("LOADING", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY ")


def is_transient(exc: BaseException) -> bool:
    """True for a failure that retrying the same idempotent command later can get past."""
    if isinstance(exc, _PERMANENT_TYPES):
        return False
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, rx.ResponseError):
        text = str(exc).lstrip("-")
        if text.startswith(_TRANSIENT_PREFIXES):
            return True
        return "Too many connections" in text
    return False


class Backoff:
    """Exponential delays, from ``first_s`` doubling up to ``max_s``."""

    __slots__ = ("_next", "first_s", "max_s")

    def __init__(self, first_s: float = 0.05, max_s: float = 2.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    what: str,
    *,
    give_up: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> T:
    """Runs ``operation`` until it succeeds, waiting out transient Redis failures with backoff
    for as long as the process lives (or until ``give_up`` is set: then the last failure is
    raised). Any other failure is raised at once. ``operation`` must be safe to repeat: every
    engine transition is (a replayed event or release finds its work done and changes nothing).
    """
    backoff = backoff or Backoff()
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc) or (give_up is not None and give_up.is_set()):
                raise
            failures += 1
            delay = backoff.next()
            loud = failures in (1, 10) or failures % 100 == 0
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "%s: Redis unavailable (%s); try %d in %.2fs",
                what, exc, failures + 1, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
