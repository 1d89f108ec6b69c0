"""A worker's dispatch loop: claim -> dial -> record, with ``concurrency`` dial requests in
flight, plus the reaper/heartbeat, and a graceful stop.

Every attempt this worker claims is recorded as its own (reap.lua). It renews its heartbeat
every ``heartbeat_s``; once it is older than the worker ttl, any other worker takes its attempts
over. So a worker that cannot renew it (Redis unreachable from here) for most of the ttl ends the
calls that live in its own process (the simulator's) before anyone else may decide it is gone:
no attempt is ever both live here and taken over there.

Carrier faults (unreachable, timed out, 5xx) on ``CARRIER_FAULTS_TO_BLOCK`` dial requests in a
row stop dispatch, exactly as refused credentials do: the reason goes to Redis (``/api/health``
says 503 and why), a warning is logged once, and after a backoff one call probes the carrier;
dispatch resumes by itself when the carrier answers again.

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

from callqueue.carriers.base import Carrier, DialKind, DialRequest, DialResult
from callqueue.engine.campaigns import CampaignEngine
from callqueue.engine.event_writer import EventWriter
from callqueue.engine.faults import Backoff, retry_transient
from callqueue.engine.queue import CallQueue, ReapResult
from callqueue.engine.scripts import ScriptError
from callqueue.engine.waker import Waker
from callqueue.models import ClaimBlock, ClaimedCall, EndFacts, Outcome

log = logging.getLogger(__name__)

CARRIER_RETRY_S = 30.0  # after the carrier refused our credentials, try again this much later
CARRIER_FAULTS_TO_BLOCK = 3  # dial requests in a row the carrier failed before dispatch stops
FENCE_FRACTION = 0.8  # of the worker ttl without a heartbeat: end the calls of this process
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
        heartbeat_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency (QUEUE_WORKERS) must be at least 1")
        self.queue = queue
        self.carrier = carrier
        self.writer = writer
        self.concurrency = concurrency
        self.worker_id = worker_id or new_worker_id()
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else queue.options.heartbeat_s
        self.calls_end_with_process = bool(getattr(carrier, "calls_end_with_process", False))
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
        self._carrier_faults = 0  # dial requests in a row the carrier failed
        self._carrier_backoff = Backoff(2.0, CARRIER_RETRY_S)
        self._probing = False  # after a block: one dial at a time until the carrier answers
        self._beat_ok_at: float | None = None  # loop time a heartbeat that succeeded was sent
        self._fence: asyncio.TimerHandle | None = None
        self.fenced = 0
        self._inflight_fences: set[asyncio.Task[int]] = set()
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}

    def add_watch(self, watch: Watch) -> None:
        """Something that may pause dispatch (the agent server's health), run with it."""
        self._watches.append(watch)

    async def start(self) -> None:
        self.writer.start()
        # Registered (with its traits) before the first claim, so no attempt of this worker
        # can be taken over as a real carrier's when it is the simulator's.
        await retry_transient(self._heartbeat, "first heartbeat")
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
        abandon = getattr(self.carrier, "abandon", None)
        if abandon is not None:  # calls of this process still live now end with it
            await abandon("WORKER_STOPPED")
        await self.writer.flush(max(0.1, deadline - loop.time()))
        if self._fence is not None:
            self._fence.cancel()
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
            for part in list(self._reported):  # what this worker reported is its own to clear
                await self.queue.report_problem(part, "")
            await self.queue.reap(
                self.worker_id,
                leaving=True,
                calls_end_with_worker=self.calls_end_with_process,
            )

    # -- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            while self._blocked and not self._stopping.is_set():
                self._unblocked.clear()
                await self._unblocked.wait()
            if (
                self._idle_count == 0
                or len(self._inflight) >= self._max_inflight
                or (self._probing and self._inflight)
            ):
                self._has_idle.clear()
                await self._has_idle.wait()
                continue  # blocked meanwhile? looked at again from the top
            if self._stopping.is_set():
                break
            want = min(self._idle_count, self._max_inflight - len(self._inflight))
            if self._probing:
                want = 1  # the carrier failed lately: one call finds out whether it is back
            self.waker.clear()
            asked = loop.time()
            try:
                result = await self.queue.claim(want, worker_id=self.worker_id)
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
                await self._ambiguous(call)
                return
            self.dialed += 1
            # Judged before the slot is given back: a carrier that keeps failing stops the next
            # claim at once.
            carrier_changed = self._carrier_health(result)
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
                await self.writer.submit(
                    q.event_call(
                        call.call_id,
                        call.attempt,
                        "ended",
                        end=EndFacts(Outcome.REJECTED, hangup_cause=result.reason),
                    )
                )
            elif result.kind == DialKind.REFUSED:
                delay = int((result.retry_after_s or 0) * 1000)
                await self._release(
                    call, result.reason or "refused", delay, throttle=result.throttle
                )
            elif result.kind == DialKind.UNUSABLE:
                await self._release(call, result.reason or "carrier unusable")
                await self.block("carrier", result.reason, retry_after_s=CARRIER_RETRY_S)
            else:
                await self._ambiguous(call)
            if carrier_changed:
                await self._report("carrier")
        except Exception:
            # The call stays tracked: its owner's heartbeat, its lease and its longest life
            # recover it.
            log.exception("recording the dial of %s failed", call.call_id)

    async def _release(
        self, call: ClaimedCall, reason: str, delay_ms: int = 0, *, throttle: bool = False
    ) -> None:
        await retry_transient(
            lambda: self.queue.release(call, reason, delay_ms, throttle=throttle),
            f"giving back {call.call_id}",
        )

    async def _ambiguous(self, call: ClaimedCall) -> None:
        await self.writer.submit(
            self.queue.event_call(call.call_id, call.attempt, "ambiguous", token=call.token)
        )

    def _carrier_health(self, result: DialResult) -> bool:
        """Counts carrier faults in a row; enough of them stop dispatch until it answers.
        True when the state to report changed."""
        if result.kind == DialKind.UNUSABLE:
            return False
        if not result.fault:
            self._carrier_faults = 0
            if self._probing or "carrier" in self._blocked:
                self._carrier_backoff.reset()
                return self._unblock_now("carrier")
            return False
        self._carrier_faults += 1
        if "carrier" in self._blocked:
            return False  # a dial that was under way when it blocked: the wait stays as it is
        if self._carrier_faults < CARRIER_FAULTS_TO_BLOCK and not self._probing:
            return False
        self._block_now(
            "carrier",
            f"{self.carrier.name} failing: {self._carrier_faults} dial requests in a row "
            f"got no usable answer (last: {result.reason})",
            self._carrier_backoff.next(),
        )
        return True

    # -- readiness ---------------------------------------------------------------------------
    async def block(self, part: str, reason: str, retry_after_s: float | None = None) -> None:
        """Stops claiming while ``part`` cannot work; says why in Redis for /api/health.
        With ``retry_after_s``, dispatch tries again after that long."""
        self._block_now(part, reason, retry_after_s)
        await self._report(part)

    def _block_now(self, part: str, reason: str, retry_after_s: float | None) -> None:
        if part not in self._reported:  # once per change, not at every failed probe
            log.warning("dispatch paused: %s: %s", part, reason)
        self._blocked[part] = reason
        self._reported.add(part)
        timer = self._retry_timers.pop(part, None)
        if timer is not None:
            timer.cancel()
        if retry_after_s is not None:
            loop = asyncio.get_running_loop()
            self._retry_timers[part] = loop.call_later(retry_after_s, self._retry, part)

    def _retry(self, part: str) -> None:
        self._retry_timers.pop(part, None)
        if self._blocked.pop(part, None) is not None and part == "carrier":
            self._probing = True  # one more try, one call at a time; a failure blocks again
        self._unblocked.set()

    async def unblock(self, part: str) -> None:
        if self._unblock_now(part):
            await self._report(part)

    def _unblock_now(self, part: str) -> bool:
        """True when ``part`` had been reported: the report is to be cleared."""
        self._blocked.pop(part, None)
        timer = self._retry_timers.pop(part, None)
        if timer is not None:
            timer.cancel()
        if part == "carrier":
            self._probing = False
            self._has_idle.set()
        self._unblocked.set()
        if part not in self._reported:
            return False
        log.warning("dispatch resumed: %s works again", part)
        self._reported.discard(part)
        return True

    async def _report(self, part: str) -> None:
        """Tells Redis the part's state as it is now (for /api/health and status)."""
        await retry_transient(
            lambda: self.queue.report_problem(part, self._blocked.get(part, "")
                                              if part in self._reported else ""),
            "reporting " + part,
        )  # fmt: skip

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

    async def _heartbeat(self) -> ReapResult:
        """Renews this worker's heartbeat with a reaper pass; arms the fence."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        result = await self.queue.reap(
            self.worker_id, calls_end_with_worker=self.calls_end_with_process
        )
        self._beat_ok_at = sent
        if self.calls_end_with_process:
            if self._fence is not None:
                self._fence.cancel()
            ttl = self.queue.options.worker_ttl_s
            self._fence = loop.call_at(sent + ttl * FENCE_FRACTION, self._fenced)
        return result

    def _fenced(self) -> None:
        """No heartbeat got through for most of the ttl: other workers may soon take this
        worker's attempts over, so the calls that live in this process end now (reported as
        failed once Redis is back; the takeover and the report are the same idempotent end)."""
        abandon = getattr(self.carrier, "abandon", None)
        if abandon is None or self._stopping.is_set():
            return
        self.fenced += 1
        log.warning(
            "no heartbeat reached Redis for %.1fs: ending this worker's live calls",
            self.queue.options.worker_ttl_s * FENCE_FRACTION,
        )
        task = asyncio.get_running_loop().create_task(abandon("WORKER_FENCED"))
        self._inflight_fences.add(task)
        task.add_done_callback(self._inflight_fences.discard)

    async def _maintenance_loop(self) -> None:
        while True:
            delay = self.heartbeat_s
            await self._refresh_zones()
            try:
                result = await self._heartbeat()
                if result.lost_attempts:
                    log.warning(
                        "%d attempts outlived their longest life: ended as lost",
                        result.lost_attempts,
                    )
                    self.waker.poke()
                if result.orphans_settled or result.orphans_held:
                    log.warning(
                        "took over %d attempts of workers that are gone: %d ended with them, "
                        "%d left to their carrier's callbacks",
                        result.orphans_settled + result.orphans_held,
                        result.orphans_settled,
                        result.orphans_held,
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
            # Kept well inside a heartbeat interval: the heartbeat must not fall behind.
            budget = min(RECHECK_TICK_S, self.heartbeat_s / 4)
            await CampaignEngine(self.queue).recheck_parked(budget_s=budget)
        except (RedisError, ScriptError) as exc:
            log.warning("rechecking calls parked by a calling window failed: %s", exc)
