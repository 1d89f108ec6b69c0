"""Plain settings the engine needs; ``callqueue.config`` fills them from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from callqueue.models import RetryPolicy

HEARTBEAT_S = 2.0  # how often a worker says it is alive (with its reaper pass)
WORKER_TTL_S = 5 * HEARTBEAT_S  # a worker silent this long no longer counts as alive


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """Limits and timings shared by every process that uses one queue.

    Every API and worker process of a queue must run with the same values: the limits are
    enforced inside Redis with whatever values the caller passes.
    """

    max_live_calls: int = 100  # MAX_CONCURRENT_CALLS; 0 = no cap
    rate_per_second: float = 10.0  # RATE_LIMIT_PER_SECOND; 0 = no limit
    # Extra milliseconds added to the one-second window. A dial is issued a little after its
    # grant; the dispatcher refuses to dial later than this margin after asking, so the carrier
    # never sees more than the limit in any sliding second.
    rate_margin_ms: int = 15
    ring_timeout_s: int = 60
    default_max_duration_s: int = 1800
    grace_s: int = 60  # on top of ring timeout + max duration before an attempt counts as lost
    dial_lease_s: float = 30.0  # longest a dial request may take; the dispatcher enforces it
    retention_s: int = 7 * 24 * 3600  # finished calls are kept this long
    rate_backoff_s: float = 10.0  # after a carrier push-back, dial at half rate this long
    history_limit: int = 50
    promote_limit: int = 1000  # due scheduled calls moved to ready per claim
    # One person, one line: never two live calls to the same number at once (across campaigns);
    # a call whose number is busy waits `line_wait_s` and is looked at again.
    one_call_per_number: bool = True
    line_wait_s: float = 15.0
    # At most this many attempts per number per day (UTC), over every campaign; 0: no cap.
    max_attempts_per_number_per_day: int = 0
    # A worker silent this long is gone: what it had in flight is taken over (see reap.lua).
    # It says it is alive every fifth of this (``heartbeat_s``).
    worker_ttl_s: float = WORKER_TTL_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        checks = {
            "max_live_calls": self.max_live_calls >= 0,
            "rate_per_second": self.rate_per_second >= 0,
            "rate_margin_ms": 0 <= self.rate_margin_ms <= 1000,
            "ring_timeout_s": self.ring_timeout_s > 0,
            "default_max_duration_s": self.default_max_duration_s > 0,
            "grace_s": self.grace_s >= 0,
            "dial_lease_s": self.dial_lease_s > 0,
            "retention_s": self.retention_s > 0,
            "history_limit": self.history_limit >= 5,
            "promote_limit": self.promote_limit > 0,
            "line_wait_s": self.line_wait_s > 0,
            "max_attempts_per_number_per_day": self.max_attempts_per_number_per_day >= 0,
            "worker_ttl_s": self.worker_ttl_s >= 0.5,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid queue options: {', '.join(bad)}")

    @property
    def heartbeat_s(self) -> float:
        """How often a worker renews its heartbeat (and runs its reaper pass)."""
        return self.worker_ttl_s / 5

    def longest_life_s(self, max_duration_s: int | None) -> float:
        """The longest an attempt can hold its slot, counted from its claim: the carrier may get
        the request as late as the end of the dial lease, then ring and talk for at most ring
        timeout + max duration; grace covers late callbacks."""
        duration = max_duration_s if max_duration_s is not None else self.default_max_duration_s
        return self.dial_lease_s + self.ring_timeout_s + duration + self.grace_s

    def rate_window(self) -> tuple[int, int]:
        """(grants allowed, window ms) for the sliding-log limiter.

        A fractional rate (0.5/s) becomes a longer window: 1 grant per 2000 ms.
        """
        if self.rate_per_second <= 0:
            return 0, 1000
        if self.rate_per_second >= 1:
            return int(self.rate_per_second), 1000 + self.rate_margin_ms
        return 1, round(1000 / self.rate_per_second) + self.rate_margin_ms
