"""A worker's dispatch loop: claim -> dial -> record, with ``concurrency`` dial requests in
flight, plus the reaper/heartbeat, and a graceful stop.

Claims ask only for as many calls as there are idle dial tasks, so a claimed call is dialed at
once. With a dial-rate limit, a call whose dial would start later than the limiter's margin
after the claim was asked for is handed back unused instead: that is what keeps the carrier from
ever seeing more than the limit in any sliding second, even when this process stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Protocol

from redis.exceptions import RedisError

from callqueue.carriers.base import Carrier, DialKind, DialRequest
from callqueue.engine.campaigns import CampaignEngine
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.options import HEARTBEAT_S, WORKER_TTL_S
from callqueue.engine.queue import CallQueue, EndFacts
from callqueue.engine.scripts import ScriptError
from callqueue.engine.waker import Waker
from callqueue.models import ClaimBlock, ClaimedCall, Outcome

log = logging.getLogger(__name__)

CARRIER_RETRY_S = 30.0  # after the carrier refused our credentials, try again this much later
RECORDING_BACKLOG_FACTOR = 4  # dials being recorded, at most, per dial slot
SAFETY_WAKE_S = 5.0  # longest sleep with nothing known to wait for (missed pub/sub, restarts)
ZONES_REFRESH_S = 3600.0  # time-zone offsets for calling windows are renewed this often
RECHECK_TICK_S = 1.0  # longest a maintenance tick spends on rechecks of parked calls


class Watch(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _DialSlot:
    """One of the ``concurrency`` dial slots, given back exactly once."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Dispatcher) -> None:
        self._owner: Dispatcher | None = owner

    def free(self) -> None:
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner._slot_freed()


class Dispatcher:
    def __init__(
        self,
        queue: CallQueue,
        carrier: Carrier,
        writer: EventWriter,
        *,
        concurrency: int = 10,
        worker_id: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency (QUEUE_WORKERS) must be at least 1")
        self.queue = queue
        self.carrier = carrier
        self.writer = writer
        self.concurrency = concurrency
        self.worker_id = worker_id or new_worker_id()
        self.heartbeat_s = heartbeat_s
        self.waker = Waker(queue.client, queue.keys.wake_channel, self._hangup)
        self._idle_count = concurrency
        # Dials whose carrier answer is still being recorded count here, not against
        # `concurrency`; bounded so a slow Redis cannot pile up unrecorded dials.
        self._max_inflight = concurrency * RECORDING_BACKLOG_FACTOR
        self._has_idle = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        # Parts that stop this worker from placing calls (carrier credentials, agent server).
        self._blocked: dict[str, str] = {}
        self._reported: set[str] = set()
        self._unblocked = asyncio.Event()
        self._watches: list[Watch] = []
        self._tasks: list[asyncio.Task[None]] = []
        limit, _ = queue.options.rate_window()
        self._margin_s = queue.options.rate_margin_ms / 1000 if limit else None
        self.dialed = 0
        self.released_late = 0
        self._zones_due = 0.0

    def add_watch(self, watch: Watch) -> None:
        """Something that may pause dispatch (the agent server's health), run with it."""
        self._watches.append(watch)

    async def start(self) -> None:
        self.writer.start()
        await self.waker.start()
        for watch in self._watches:
            await watch.start()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="claim-loop"),
            asyncio.create_task(self._maintenance_loop(), name="maintenance"),
        ]

    async def stop_requested(self) -> None:
        """Returns once a stop was asked for (``request_stop``, a signal)."""
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()
        self._has_idle.set()
        self._unblocked.set()
        self.waker.poke()

    async def stop(self, timeout_s: float = 8.0) -> None:
        """No new claims; dial requests in flight finish and are recorded."""
        self.request_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        claim_loop = self._tasks[0] if self._tasks else None
        if claim_loop is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(claim_loop, max(0.1, deadline - loop.time()))
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=max(0.1, deadline - loop.time()))
        drain = getattr(self.carrier, "drain", None)
        if drain is not None:
            await drain(max(0.0, deadline - loop.time() - 1.0))
        await self.writer.flush(max(0.1, deadline - loop.time()))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for watch in self._watches:
            await watch.aclose()
        await self.waker.aclose()
        await self.writer.aclose(0.5)
        with contextlib.suppress(Exception):  # no longer counted as alive
            await self.queue.reap(self.worker_id, leaving=True)

    # -- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            while self._blocked and not self._stopping.is_set():
                self._unblocked.clear()
                await self._unblocked.wait()
            while (
                self._idle_count == 0 or len(self._inflight) >= self._max_inflight
            ) and not self._stopping.is_set():
                self._has_idle.clear()
                await self._has_idle.wait()
            if self._stopping.is_set():
                break
            want = min(self._idle_count, self._max_inflight - len(self._inflight))
            self.waker.clear()
            asked = loop.time()
            try:
                result = await self.queue.claim(want)
            except Exception as exc:
                log.warning("claim failed: %s", exc)
                await self.waker.wait(0.5)
                continue
            for call in result.calls:
                self._start_dial(call, asked)
            if len(result.calls) == want or (result.calls and result.blocked == ClaimBlock.RATE):
                continue  # more may be ready; an empty rate bucket's reply says how long to wait
            await self.waker.wait(
                self._sleep_for(result.wait_ms, result.next_due_ms, result.server_now_ms)
            )

    @staticmethod
    def _sleep_for(wait_ms: int | None, next_due_ms: int | None, now_ms: int) -> float:
        candidates = [SAFETY_WAKE_S]
        if wait_ms is not None:
            candidates.append(wait_ms / 1000)
        if next_due_ms is not None:
            candidates.append((next_due_ms - now_ms) / 1000)
        return max(0.0, min(candidates))

    def _start_dial(self, call: ClaimedCall, asked: float) -> None:
        self._idle_count -= 1
        slot = _DialSlot(self)
        task = asyncio.create_task(self._dial(call, asked, slot))
        self._inflight.add(task)
        task.add_done_callback(lambda t: self._dial_done(t, slot))

    def _dial_done(self, task: asyncio.Task[None], slot: _DialSlot) -> None:
        self._inflight.discard(task)
        slot.free()
        self._has_idle.set()  # a claim may also have waited for the recording backlog

    def _slot_freed(self) -> None:
        self._idle_count += 1
        self._has_idle.set()

    # -- dialing -----------------------------------------------------------------------------
    def _request(self, call: ClaimedCall) -> DialRequest:
        o = self.queue.options
        max_duration = call.spec.max_duration_s or o.default_max_duration_s
        return DialRequest(
            call.call_id,
            call.attempt,
            call.spec.phone_number,
            call.spec.campaign_id,
            call.spec.config,
            o.ring_timeout_s,
            max_duration,
        )

    async def _dial(self, call: ClaimedCall, asked: float, slot: _DialSlot) -> None:
        q = self.queue
        try:
            if (
                self._margin_s is not None
                and asyncio.get_running_loop().time() - asked > self._margin_s
            ):
                self.released_late += 1
                await q.release(call, "dial would start after the rate window margin", unsent=True)
                return
            try:
                async with asyncio.timeout(q.options.dial_lease_s):
                    result = await self.carrier.dial(self._request(call))
            except Exception:  # the request may have gone out: assume it did
                log.exception("dialing %s via %s gave no answer", call.call_id, self.carrier.name)
                slot.free()
                await q.ambiguous(call)
                return
            self.dialed += 1
            # The carrier has answered the dial request: what is left is bookkeeping, so the
            # next call may be dialed meanwhile (recording overlaps the next claim). The task
            # stays in flight until it is recorded, so a graceful stop still waits for it.
            slot.free()
            if result.kind == DialKind.ACCEPTED:
                outcome = await self.writer.submit(
                    q.event_call(
                        call.call_id,
                        call.attempt,
                        "accepted",
                        token=call.token,
                        carrier_call_id=result.carrier_call_id,
                    )
                )
                if outcome.cancel_requested:
                    await self.carrier.hangup(call.call_id, call.attempt, result.carrier_call_id)
            elif result.kind == DialKind.REJECTED:
                await q.ended(
                    call.call_id,
                    call.attempt,
                    EndFacts(Outcome.REJECTED, hangup_cause=result.reason),
                )
            elif result.kind == DialKind.REFUSED:
                delay = int((result.retry_after_s or 0) * 1000)
                await q.release(call, result.reason or "refused", delay, throttle=result.throttle)
            elif result.kind == DialKind.UNUSABLE:
                await q.release(call, result.reason or "carrier unusable")
                await self.block("carrier", result.reason, retry_after_s=CARRIER_RETRY_S)
            else:
                await q.ambiguous(call)
            if result.kind == DialKind.ACCEPTED and "carrier" in self._reported:
                await self.unblock("carrier")
        except Exception:
            # The call stays tracked: its lease and longest life recover it.
            log.exception("recording the dial of %s failed", call.call_id)

    # -- readiness ---------------------------------------------------------------------------
    async def block(self, part: str, reason: str, retry_after_s: float | None = None) -> None:
        """Stops claiming while ``part`` cannot work; says why in Redis for /api/health.
        With ``retry_after_s``, dispatch tries again after that long."""
        if self._blocked.get(part) != reason:
            log.error("dispatch paused: %s: %s", part, reason)
        self._blocked[part] = reason
        self._reported.add(part)
        await self.queue.report_problem(part, reason)
        if retry_after_s is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(retry_after_s, self._retry, part)

    def _retry(self, part: str) -> None:
        self._blocked.pop(part, None)  # one more try; a failure blocks again
        self._unblocked.set()

    async def unblock(self, part: str) -> None:
        if self._blocked.pop(part, None) is not None:
            log.info("dispatch resumed: %s works again", part)
        self._unblocked.set()
        if part in self._reported:
            self._reported.discard(part)
            await self.queue.report_problem(part, "")

    async def _hangup(self, call_id: str, attempt: int, carrier_call_id: str) -> None:
        try:
            await self.carrier.hangup(call_id, attempt, carrier_call_id)
        except Exception:
            log.exception("hang-up of %s failed", call_id)

    # -- reaper and heartbeat ---------------------------------------------------------------
    async def _refresh_zones(self) -> None:
        """Renews the recorded time-zone offsets the claim checks calling windows with (an
        entry knows the zone's next change only, so it must be renewed between changes)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._zones_due:
            return
        self._zones_due = loop.time() + ZONES_REFRESH_S
        try:
            await self.queue.refresh_zones()
        except Exception as exc:
            self._zones_due = loop.time() + 60.0
            log.warning("refreshing time-zone offsets failed: %s", exc)

    async def _maintenance_loop(self) -> None:
        while True:
            delay = self.heartbeat_s
            await self._refresh_zones()
            try:
                result = await self.queue.reap(self.worker_id, worker_ttl_s=WORKER_TTL_S)
                if result.lost_attempts:
                    log.warning(
                        "%d attempts outlived their longest life: ended as lost",
                        result.lost_attempts,
                    )
                    self.waker.poke()
                if result.next_expiry_ms is not None:
                    delay = min(
                        delay,
                        max(0.0, (result.next_expiry_ms - result.server_now_ms) / 1000 + 0.001),
                    )
            except Exception as exc:
                log.warning("reap failed: %s", exc)
            await self._finish_window_rechecks()
            await asyncio.sleep(delay)

    async def _finish_window_rechecks(self) -> None:
        """Ends rechecks of calls parked by a calling window that a change of the window
        started and its process did not finish (it died, or the campaign was too large for its
        request's budget)."""
        try:
            await CampaignEngine(self.queue).recheck_parked(budget_s=RECHECK_TICK_S)
        except (RedisError, ScriptError) as exc:
            log.warning("rechecking calls parked by a calling window failed: %s", exc)
