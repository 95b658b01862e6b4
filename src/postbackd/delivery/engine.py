"""The sending side: feed due deliveries from the store, send them per X account through
the rate budget and the circuit breaker, and record what X answered.

    store --feeder--> lanes (one per signing X account) --sender--> X
                                                          `--> results --journal--> store

Memory stays bounded whatever the backlog: at most `capacity` deliveries are loaded; the
rest wait in SQLite, where they are safe across a crash anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal

from postbackd.catalog import Catalog
from postbackd.event import Event
from postbackd.index import Index
from postbackd.logs import RateLimitedLog
from postbackd.metrics import DELIVERY_OUTCOMES, STATUS_CLASSES, Metrics
from postbackd.model import Postback, XAccount
from postbackd.settings import Settings
from postbackd.store import deliveries as sql
from postbackd.store.journal import Journal
from postbackd.x.client import XClient
from postbackd.x.device import DeviceHasher
from postbackd.x.response import ResponseKind, XResponse

from .circuit import CircuitBreaker
from .circuit import State as CircuitState
from .claim import judge_answer, request_params
from .devices import DeviceNetworks
from .model import Delivery, Result, State
from .ratelimit import RateBudgets
from .retry import RetryPolicy

log = logging.getLogger(__name__)

# Loaded deliveries at most; the feeder tops up below half of it, in reads of at most
# LOAD_BATCH rows (a big read would hold the GIL away from the event loop for long).
DEFAULT_CAPACITY: Final = 20_000
LOAD_BATCH: Final = 2_000
# In-flight requests of one account at most, so a slow account cannot take every slot.
PER_ACCOUNT_IN_FLIGHT: Final = 64
_IDLE_POLL_S: Final = 1.0

Mode = Literal["send", "probe"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status_class(response: XResponse) -> str:
    if response.status == 0:
        return "timeout" if (response.error or "").startswith("timeout") else "connection_error"
    return f"{response.status // 100}xx"


@dataclass(eq=False)
class Lane:
    """The deliveries waiting for one X account, sent by their own task: an account at its
    limit, slow, or failing never delays another account's deliveries (PRODUCT.md 2)."""

    account_id: str
    queue: deque[Delivery] = field(default_factory=deque)
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Engine:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        catalog: Catalog,
        x: XClient,
        metrics: Metrics,
        devices: DeviceNetworks,
        *,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._catalog = catalog
        self._x = x
        self._metrics = metrics
        self._devices = devices
        self._capacity = capacity
        self._hasher = DeviceHasher(settings.x_hmac_key) if settings.x_hmac_key else None
        self._retry = RetryPolicy(
            settings.retry_base_s, settings.retry_factor, settings.retry_cap_s
        )
        self._rng = random.Random()
        self._budgets = RateBudgets(settings.rate_limit_requests, settings.rate_limit_window_s)
        self._circuit = CircuitBreaker(
            settings.circuit_min_requests,
            settings.circuit_window_s,
            settings.circuit_failure_ratio,
            settings.circuit_probe_interval_s,
            on_change=self._circuit_changed,
        )
        self._slots = asyncio.Semaphore(settings.x_max_connections * 2)
        self._outcomes = {o: metrics.deliveries.labels(o) for o in DELIVERY_OUTCOMES}
        self._answers = {k: metrics.x_answers.labels(k) for k in ResponseKind}
        self._requests = {c: metrics.x_requests.labels(c) for c in STATUS_CLASSES}
        self._warn = RateLimitedLog(log)
        # Every delivery in memory, from load until its new state is committed: the feeder
        # skips these ids, so nothing is sent twice by this process.
        self._loaded: dict[int, Delivery] = {}
        self._lanes: dict[str, Lane] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._cursor: tuple[int, int] = (0, 0)
        self._feed = asyncio.Event()
        self._release = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None
        self._stopping = False
        # Results gathered during one pass of the event loop, written as one journal job.
        self._results: list[tuple[Delivery, Result]] = []
        self._last_write: asyncio.Future[object] | None = None
        self.done = {"delivered": 0, "dead": 0, "held": 0, "skipped": 0, "retried": 0}

    # --- life --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._hasher is None:
            log.warning("POSTBACKD_X_HMAC_KEY is not set: claims cannot be sent until it is")
        self._feeder = asyncio.create_task(self._feed_loop(), name="delivery-feeder")
        self._releaser = asyncio.create_task(self._release_loop(), name="delivery-releaser")
        for task in (self._feeder, self._releaser):
            task.add_done_callback(self._died)
        self._catalog.subscribe(lambda _: self._release.set())
        # Held rows left by an earlier run get the signing rule once more.
        self._release.set()
        self._feed.set()

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped", task.get_name(), exc_info=task.exception())

    def rewind(self, due_ms: int) -> None:
        """Rows became pending due at `due_ms` or later (accepted, released, replayed): let
        the feeder scan from there. The cursor may have passed `due_ms` while they were
        being committed, which would otherwise leave them unloaded."""
        self._cursor = min(self._cursor, (due_ms, -1))
        self._feed.set()

    async def stop(self, grace_s: float) -> None:
        """Stop picking work, give in-flight requests `grace_s` to finish, keep the rest."""
        self._stopping = True
        for task in (self._feeder, self._releaser, *(lane.task for lane in self._lanes.values())):
            if task is not None:
                task.cancel()
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning(
                    "%d requests to X were still in flight after %.1f s; they stay pending",
                    len(pending),
                    grace_s,
                )
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
        await asyncio.gather(
            *(t for t in (self._feeder, self._releaser, *lanes) if t), return_exceptions=True
        )
        # What X answered before the stop is recorded now, not sent again after the start.
        if self._results:
            self._flush()
        if self._last_write is not None:
            await asyncio.wait([self._last_write])

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self._lanes.values())

    async def refresh_queue_depth(self) -> dict[str, int]:
        counts = await self._journal.call(sql.count_by_state, _now_ms())
        counts["in_flight"] = self.in_flight
        for state in ("scheduled", "ready", "in_flight", "held", "dead"):
            self._metrics.queue_depth.labels(state).set(counts.get(state, 0))
        return counts

    # --- feeding -------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        while True:
            # The timeout also wakes the feeder for deliveries whose delay or backoff ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._feed.wait(), timeout=_IDLE_POLL_S)
            self._feed.clear()
            while len(self._loaded) < self._capacity // 2 and not self._stopping:
                room = min(self._capacity - len(self._loaded), LOAD_BATCH)
                rows = await self._journal.call(sql.load_due, self._cursor, _now_ms(), room)
                if not rows:
                    break
                last = Delivery(*rows[-1])
                self._cursor = (last.due_ms, last.id)
                for row in rows:
                    d = Delivery(*row)
                    if d.id not in self._loaded:
                        self._loaded[d.id] = d
                        self._route(d)
                if len(rows) < room:
                    break

    def _postback_of(self, d: Delivery, index: Index) -> Postback:
        """The postback as it is now (an edit may give it an account), else as accepted."""
        current = index.postbacks.get(d.postback_id)
        if current is not None:
            return current
        return Postback(
            id=d.postback_id, app_id=d.app_id, network=d.network,  # type: ignore[arg-type]
            event_name=d.event_name, x_app_id=d.x_app_id, conversion_type=d.conversion_type,
            x_account_id=d.x_account_id, delivery_delay_s=0, retry_attempts=d.retry_attempts,
            delivery_method="all", enabled=True, created_at="",
        )  # fmt: skip

    def _route(self, d: Delivery) -> None:
        """Queue the delivery on its signing account's lane, or hold it (PRODUCT.md 1)."""
        account, reason = self._catalog.index.signing_account(
            self._postback_of(d, self._catalog.index)
        )
        if account is None:
            self._finish(d, "held", reason, account_id=None)
            return
        lane = self._lanes.get(account.id)
        if lane is None:
            lane = self._lanes[account.id] = Lane(account.id)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._lane_loop(lane), name=f"lane-{len(self._lanes)}")
            lane.task.add_done_callback(self._died)
        lane.queue.append(d)
        lane.wake.set()

    async def _release_loop(self) -> None:
        """After a configuration change, held deliveries get the signing rule again."""
        while True:
            await self._release.wait()
            self._release.clear()
            now = _now_ms()
            released = await self._journal.submit(partial(sql.release_held, now_ms=now))
            if released:
                log.info("%d held deliveries released for another look", released)
                self.rewind(now)
            await asyncio.sleep(0.2)  # coalesce bursts of configuration changes

    # --- sending -------------------------------------------------------------------------

    async def _lane_loop(self, lane: Lane) -> None:
        budget = self._budgets.get(lane.account_id)
        while True:
            if not lane.queue or lane.in_flight >= PER_ACCOUNT_IN_FLIGHT:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            account = self._catalog.index.accounts.get(lane.account_id)
            if account is None or not account.authenticated:
                # 401 or a deleted account: everything queued here goes back to the rule
                # (held, or another account's lane); yield before looking again.
                queued, lane.queue = lane.queue, deque()
                for d in queued:
                    self._route(d)
                await asyncio.sleep(0)
                continue
            wait_s = budget.try_take()
            if wait_s > 0:
                # Woken early by every answer of this account: X's headers may move the
                # window's end (a local window's guess is often far too long).
                started = time.monotonic()
                await self._nap(lane, wait_s)
                self._metrics.rate_limit_wait.inc(time.monotonic() - started)
                continue
            mode = self._circuit.acquire()
            if mode is None:
                budget.give_back()
                # Woken early when the circuit closes (see _circuit_changed).
                await self._nap(lane, max(self._circuit.seconds_until_probe(), 0.05))
                continue
            await self._slots.acquire()
            d = lane.queue.popleft()
            lane.in_flight += 1
            task = asyncio.create_task(self._send(lane, account, d, mode))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    @staticmethod
    async def _nap(lane: Lane, seconds: float) -> None:
        lane.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lane.wake.wait(), timeout=seconds)

    async def _send(self, lane: Lane, account: XAccount, d: Delivery, mode: Mode) -> None:
        probe = mode == "probe"
        try:
            event = Event.from_json(d.event_body)
            index = self._catalog.index
            if self._hasher is None:
                self._circuit_unused(probe)
                self._requeue(lane, d, front=False, delay_s=_IDLE_POLL_S * 5)
                return
            params = request_params(d, event, index, self._hasher)
            if params is None:
                self._circuit_unused(probe)
                self._finish(d, "skipped", "no_device_id", account_id=None)
                return
            response = await self._x.send_conversion(
                params, account.access_token, account.access_token_secret
            )
            self._observe(d, response, probe, lane.account_id)
            await self._handle(lane, account, d, event, response, probe)
        except asyncio.CancelledError:
            # Shutdown: the delivery stays pending in the store for the next start.
            self._loaded.pop(d.id, None)
            raise
        except Exception:
            log.exception("delivery %d failed unexpectedly; it will be retried", d.id)
            self._retry_or_dead(d, None, "internal error", lane.account_id)
        finally:
            lane.in_flight -= 1
            self._slots.release()
            lane.wake.set()

    def _circuit_unused(self, probe: bool) -> None:
        if probe:
            self._circuit.release_probe()

    def _observe(self, d: Delivery, response: XResponse, probe: bool, account_id: str) -> None:
        self._requests[_status_class(response)].inc()
        self._metrics.x_request_duration.observe(response.duration_s)
        self._answers[response.kind].inc()
        x_failed = response.kind is ResponseKind.RETRYABLE
        self._circuit.record(d.id, not x_failed, probe=probe)
        info = response.rate_limit
        if info is not None:
            self._budgets.get(account_id).observe(info.limit, info.remaining, info.reset_epoch_s)

    async def _handle(
        self,
        lane: Lane,
        account: XAccount,
        d: Delivery,
        event: Event,
        response: XResponse,
        probe: bool,
    ) -> None:
        kind = response.kind
        if kind is ResponseKind.OK:
            decision, claim, attribution = judge_answer(
                d, event, response.body, self._catalog.index
            )
            self._metrics.claims.labels(decision.outcome).inc()
            if attribution is not None:
                self._metrics.attributions.labels(attribution.engagement_type).inc()
                self._devices.remember(attribution.app_id, attribution.device_key, d.network)
            self._finish(
                d, "delivered", None, account_id=account.id, status=response.status,
                attempts=d.attempts + 1, claim=claim, attribution=attribution,
            )  # fmt: skip
        elif kind is ResponseKind.RATE_LIMITED:
            # Reference, 429: wait for the window to reset; no retry is used up.
            info = response.rate_limit
            self._budgets.get(account.id).block_until(info.reset_epoch_s if info else None)
            self._requeue(lane, d, front=True)
        elif kind is ResponseKind.UNAUTHORIZED:
            # Reference, 401: the credentials no longer work. Hold, never drop.
            if account.authenticated:
                reason = f"X answered {response.describe()} to a claim request"
                self._warn.warning(
                    f"401:{account.id}", f"X account {account.id} unauthenticated: {reason}"
                )
                await self._catalog.record_authentication(account.id, False, reason)
            self._finish(d, "held", "account_unauthenticated", account_id=account.id,
                         status=response.status, error=response.describe())  # fmt: skip
        elif kind is ResponseKind.RETRYABLE:
            if probe or self._circuit.state != "closed":
                # PRODUCT.md 2: behind an open circuit, and for a failed probe, no retry is
                # used: a long outage must not turn the backlog dead.
                self._requeue(lane, d, front=True)
            else:
                self._warn.warning(
                    "x-retryable", f"X failed a claim request: {response.describe()}"
                )
                self._retry_or_dead(d, response.status or None, response.describe(), account.id)
        else:
            # Reference, "Errors": other 4xx are permanent; X's code is kept.
            self._finish(d, "dead", response.describe(), account_id=account.id,
                         status=response.status, error=response.describe(),
                         attempts=d.attempts + 1)  # fmt: skip

    def _requeue(self, lane: Lane, d: Delivery, *, front: bool, delay_s: float = 0.0) -> None:
        if self._stopping:
            self._loaded.pop(d.id, None)
            return
        if delay_s:
            loop = asyncio.get_running_loop()
            loop.call_later(delay_s, lambda: self._requeue(lane, d, front=front))
            return
        if front:
            lane.queue.appendleft(d)
        else:
            lane.queue.append(d)
        lane.wake.set()

    def _retry_or_dead(
        self, d: Delivery, status: int | None, error: str, account_id: str | None
    ) -> None:
        attempts = d.attempts + 1
        if attempts > d.retry_attempts:
            self._finish(d, "dead", error, account_id=account_id, status=status, error=error,
                         attempts=attempts)  # fmt: skip
            return
        self._outcomes["retried"].inc()
        self.done["retried"] += 1
        due = _now_ms() + int(self._retry.delay_s(attempts, self._rng) * 1000)
        self._finish(d, "scheduled", None, account_id=account_id, status=status, error=error,
                     attempts=attempts, due_ms=due)  # fmt: skip

    def _finish(
        self,
        d: Delivery,
        state: State,
        reason: str | None,
        *,
        account_id: str | None,
        status: int | None = None,
        error: str | None = None,
        attempts: int | None = None,
        due_ms: int | None = None,
        claim: object = None,
        attribution: object = None,
    ) -> None:
        """Record the delivery's new state; it leaves memory once that is committed."""
        result = Result(
            delivery_id=d.id,
            state=state,
            reason=reason,
            attempts=d.attempts if attempts is None else attempts,
            due_ms=d.due_ms if due_ms is None else due_ms,
            account_id=account_id,
            last_status=status,
            last_error=error,
            claim=claim,  # type: ignore[arg-type]
            attribution=attribution,  # type: ignore[arg-type]
        )
        if state != "scheduled":
            self._outcomes[state].inc()
            self.done[state] = self.done.get(state, 0) + 1
        if state in ("delivered", "dead"):
            self._metrics.delivery_lag.observe(max(0.0, (_now_ms() - d.first_due_ms) / 1000))
        if not self._results:
            asyncio.get_running_loop().call_soon(self._flush)
        self._results.append((d, result))

    def _flush(self) -> None:
        batch, self._results = self._results, []
        now = _now_ms()
        future = self._journal.submit(
            lambda conn: sql.write_results(conn, [r for _, r in batch], now)
        )
        future.add_done_callback(lambda f: self._committed(batch, f))
        self._last_write = future

    def _committed(
        self, batch: list[tuple[Delivery, Result]], future: asyncio.Future[object]
    ) -> None:
        for d, _ in batch:
            self._loaded.pop(d.id, None)
        if future.cancelled() or future.exception() is not None:
            log.error(
                "could not record %d delivery results; they stay pending and will be resent",
                len(batch),
            )
        self._feed.set()

    def _circuit_changed(self, state: CircuitState) -> None:
        self._metrics.set_circuit_state(state)
        if state == "open":
            log.warning("X is failing broadly: circuit open, sending paused, probing")
        elif state == "closed":
            log.info("X answers again: circuit closed, sending resumed")
            for lane in self._lanes.values():
                lane.wake.set()
