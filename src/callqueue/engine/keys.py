"""Every Redis key name, built in this one place.

All keys of a queue share the hash tag ``{<queue>}`` so every script touches one cluster slot:
the engine runs unchanged on a single server, Redis Cluster, or a managed Redis/Valkey.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def check_queue_name(name: str) -> str:
    if not _QUEUE_NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is invalid: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return name


@dataclass(frozen=True, slots=True)
class QueueKeys:
    queue: str

    def __post_init__(self) -> None:
        check_queue_name(self.queue)

    @property
    def prefix(self) -> str:
        return f"cq:{{{self.queue}}}:"

    def call(self, call_id: str) -> str:
        """Hash with one call's spec, state, attempts and history."""
        return f"{self.prefix}c:{call_id}"

    @property
    def call_prefix(self) -> str:
        """Passed in KEYS to scripts that pop call ids (claim, reap): same slot as the rest."""
        return f"{self.prefix}c:"

    # -- campaigns: the scripts derive these names from ``prefix`` (see ckey in _lib.lua) --------
    def campaign(self, campaign_id: str) -> str:
        """HASH of a campaign's settings and state."""
        return f"{self.prefix}cp:{campaign_id}"

    def campaign_ready(self, campaign_id: str) -> str:
        """ZSET of a campaign's queued calls; score = priority rank * 2^40 + arrival sequence.
        The calls of no campaign are campaign ``""``."""
        return f"{self.prefix}r:{campaign_id}"

    def campaign_live(self, campaign_id: str) -> str:
        """ZSET of a campaign's attempts holding a live-call slot; score = end of longest life."""
        return f"{self.prefix}lv:{campaign_id}"

    def campaign_rate_log(self, campaign_id: str) -> str:
        """ZSET sliding log of a campaign's dial grants (its own dial-rate limiter)."""
        return f"{self.prefix}rt:{campaign_id}"

    def campaign_stats(self, campaign_id: str) -> str:
        """HASH of a campaign's counters (enqueued, open, dialed, outcomes, durations)."""
        return f"{self.prefix}cs:{campaign_id}"

    def campaign_dials_per_second(self, campaign_id: str) -> str:
        """HASH epoch-second -> a campaign's dials granted, about the last minute."""
        return f"{self.prefix}cd:{campaign_id}"

    def campaign_window_parked(self, campaign_id: str) -> str:
        """ZSET call id -> the due time a campaign's calling window parked the call to (its
        sched score). A hint, checked on use: entries of calls that moved on are left to
        trimming and the key's expiry (see lua/_park.lua)."""
        return f"{self.prefix}wp:{campaign_id}"

    def campaign_window_recheck(self, campaign_id: str) -> str:
        """ZSET like ``campaign_window_parked``: the entries a change of the window set aside,
        still to be looked at again (recheck.lua)."""
        return f"{self.prefix}wr:{campaign_id}"

    @property
    def window_rechecks(self) -> str:
        """HASH campaign id -> 0 | 1 (one more sweep after this one): rechecks under way."""
        return f"{self.prefix}wrecheck"

    @property
    def campaign_index(self) -> str:
        """ZSET of campaigns with queued calls that may be dialed; score = priority rank of the
        first queued call * 2^40 + the campaign's pass (campaigns take turns by pass)."""
        return f"{self.prefix}camps"

    @property
    def campaigns(self) -> str:
        """ZSET of every campaign id by creation time (the registry)."""
        return f"{self.prefix}campaigns"

    @property
    def campaigns_done(self) -> str:
        """ZSET of campaigns made by their first call (never given settings) that completed,
        by when: reap forgets them once they have been completed for the retention. The
        scripts derive it from ``prefix``."""
        return f"{self.prefix}campaigns_done"

    # -- status webhooks ---------------------------------------------------------------------
    @property
    def hooks(self) -> str:
        """STREAM outbox of status webhooks (consumer group ``hooks``); the scripts add to it."""
        return f"{self.prefix}hooks"

    @property
    def hooks_retry(self) -> str:
        """ZSET delivery json -> when its next try is due."""
        return f"{self.prefix}hookretry"

    @property
    def hooks_failed(self) -> str:
        """HASH delivery id -> json of a delivery given up (kept for the API)."""
        return f"{self.prefix}hookfail"

    @property
    def hooks_failed_index(self) -> str:
        """ZSET delivery id -> when it was given up."""
        return f"{self.prefix}hookfailidx"

    @property
    def lines(self) -> str:
        """HASH number -> the call live on it (one person, one line)."""
        return f"{self.prefix}lines"

    def number_attempts(self, day: int) -> str:
        """HASH number -> attempts on UTC day ``day`` (days since 1970), for the daily cap."""
        return f"{self.prefix}npd:{day}"

    @property
    def zone_offsets(self) -> str:
        """HASH time zone -> its UTC offsets around now (what claim needs for calling windows)."""
        return f"{self.prefix}tzoff"

    @property
    def scheduled(self) -> str:
        """ZSET of calls waiting for a time (scheduled_at or retry backoff); score = due ms."""
        return f"{self.prefix}sched"

    @property
    def live(self) -> str:
        """ZSET of attempts holding a live-call slot; score = end of the attempt's longest life."""
        return f"{self.prefix}live"

    @property
    def leases(self) -> str:
        """ZSET of calls a worker is dialing; score = dial lease deadline."""
        return f"{self.prefix}lease"

    @property
    def rate_log(self) -> str:
        """ZSET sliding log of dial grants in the current window (the global rate limiter)."""
        return f"{self.prefix}rate"

    @property
    def seq(self) -> str:
        """Arrival counter, keeps FIFO within a priority."""
        return f"{self.prefix}seq"

    @property
    def stats(self) -> str:
        """HASH of counters (enqueued, dialed, outcomes, durations)."""
        return f"{self.prefix}stats"

    @property
    def dials_per_second(self) -> str:
        """HASH epoch-second -> dials granted, trimmed to the last minute."""
        return f"{self.prefix}dps"

    @property
    def finished(self) -> str:
        """ZSET of terminal calls by finish time (trimmed by retention)."""
        return f"{self.prefix}done"

    @property
    def dead(self) -> str:
        """ZSET of failed calls by finish time: the dead-letter view."""
        return f"{self.prefix}dead"

    @property
    def control(self) -> str:
        """HASH of queue-wide switches (paused)."""
        return f"{self.prefix}ctl"

    @property
    def workers(self) -> str:
        """ZSET worker id -> last heartbeat ms."""
        return f"{self.prefix}workers"

    def worker_calls(self, worker_id: str) -> str:
        """Set: the attempts a worker has in flight (claimed, not yet settled), so that what a
        dead worker leaves behind is found at once. Scripts derive it from ``prefix``
        (worker_calls_key in _lib.lua)."""
        return f"{self.prefix}wc:{worker_id}"

    @property
    def worker_info(self) -> str:
        """Hash: worker id -> its traits ('e': its calls end with its process, as the
        simulator's do), kept with its heartbeat in ``workers``."""
        return f"{self.prefix}winfo"

    @property
    def hangups(self) -> str:
        """LIST of live calls whose cancel needs a carrier hang-up."""
        return f"{self.prefix}hangups"

    @property
    def wake_channel(self) -> str:
        """Pub/sub channel: work arrived, a slot freed, an earlier due time, or a hang-up."""
        return f"{self.prefix}wake"

    @property
    def dnc(self) -> str:
        """SET of E.164 numbers never to call (the do-not-call list)."""
        return f"{self.prefix}dnc"

    def batch(self, batch_id: str) -> str:
        """SET of the call ids of one bulk batch."""
        return f"{self.prefix}b:{batch_id}"
