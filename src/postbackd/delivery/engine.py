"""The sending side, wired from small parts (STYLE: a reader finds each one by its name):

    store --loader--> lanes (one per signing X account) --send--> X
                        |  budget, breaker, in-flight cap        |
                        |                                 outcomes (what X's answer means)
                        `<------ retry / 429 / held <-----------'--> recorder --> store

    loader.py    fair loading of due deliveries, per lane (a backlog fills only its own share)
    lanes.py     a lane's next step from its rate budget, breakers and in-flight cap
    outcomes.py  X's answer -> delivered, scheduled retry, held, dead, or back to the lane
    recorder.py  results into store commits; owns deliveries until committed
    holds.py     held deliveries released when the signing rule yields an account
    ratelimit.py, circuit.py, retry.py   the policies, driven by an injected clock
    slices.py    rate budgets shared with the other daemons of a shared store

This module starts and stops them in order, routes deliveries to lanes, sends, and applies
what outcomes decide (metrics, the account's budget and authentication, device state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Collection, Coroutine, Iterable
from functools import partial
from typing import Any, Final

from postbackd.catalog import Catalog
from postbackd.clock import Clock, SystemClock, now_ms
from postbackd.errors import NotFound, StoreUnavailable
from postbackd.event import Event
from postbackd.logs import RateLimitedLog
from postbackd.metrics import (
    CLAIM_OUTCOMES,
    DELIVERY_OUTCOMES,
    ENGAGEMENT_TYPES,
    STATUS_CLASSES,
    Metrics,
)
from postbackd.model import XAccount
from postbackd.settings import Settings
from postbackd.store.base import Store
from postbackd.x.client import XClient
from postbackd.x.device import DeviceHasher
from postbackd.x.response import ResponseKind, XResponse

from . import outcomes
from .circuit import BroadBreaker, CircuitBreaker
from .circuit import State as CircuitState
from .claim import request_params
from .devices import DeviceNetworks
from .holds import Releaser
from .intake import Accepted
from .lanes import REROUTE, Lane, Send, Ticket, Wait
from .loader import DEFAULT_CAPACITY, Loader
from .model import Delivery, Result, State
from .ratelimit import RateBudgets
from .recorder import Batch, Recorder
from .retry import RetryPolicy
from .slices import BudgetSync

log = logging.getLogger(__name__)

# Without the partial HMAC key nothing can be hashed: look again this much later.
_NO_KEY_RETRY_S: Final = 5.0
# A lane whose loop failed unexpectedly tries again after this pause.
_LANE_ERROR_PAUSE_S: Final = 1.0
_DEBUG_EVERY_S: Final = 1.0
Match = Callable[[Delivery], bool]


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        catalog: Catalog,
        x: XClient,
        metrics: Metrics,
        devices: DeviceNetworks,
        *,
        capacity: int = DEFAULT_CAPACITY,
        clock: Clock | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._x = x
        self._metrics = metrics
        self._devices = devices
        self._clock = clock = clock or SystemClock()
        self._on_fatal = on_fatal
        self._hasher = DeviceHasher(settings.x_hmac_key) if settings.x_hmac_key else None
        self._retry = RetryPolicy(
            settings.retry_base_s, settings.retry_factor, settings.retry_cap_s
        )
        self._rng = random.Random()
        # --- rate budgets: this daemon's own, or shared through the store (PRODUCT.md 5)
        self._budgets: RateBudgets | BudgetSync = (
            BudgetSync(store, settings.rate_limit_requests, settings.rate_limit_window_s,
                       self._wake_lane, clock.time)
            if store.budgets_shared
            else RateBudgets(settings.rate_limit_requests, settings.rate_limit_window_s, clock.time)
        )  # fmt: skip
        self._broad = BroadBreaker(
            settings.circuit_min_requests,
            settings.circuit_window_s,
            settings.circuit_failure_ratio,
            settings.circuit_probe_interval_s,
            clock=clock.monotonic,
            on_change=self._broad_changed,
        )
        self._lane_cap = settings.account_max_in_flight
        # Requests at X or waiting for a pooled connection, all lanes together: twice the
        # pool, so a request is signed and ready while another's answer is read.
        self._slots = asyncio.Semaphore(settings.x_max_connections * 2)
        # Per-claim metrics are tallied in plain ints and histogram buckets, brought into
        # the metrics when the registry is read (metrics.py): a claim moves six of them.
        self._outcomes = metrics.counter_tally(metrics.deliveries, DELIVERY_OUTCOMES).counts
        self._answers = metrics.counter_tally(metrics.x_answers, ResponseKind).counts
        self._requests = metrics.counter_tally(metrics.x_requests, STATUS_CLASSES).counts
        self._claims = metrics.counter_tally(metrics.claims, CLAIM_OUTCOMES).counts
        self._attributions = metrics.counter_tally(metrics.attributions, ENGAGEMENT_TYPES).counts
        self._x_duration = metrics.histogram_tally(metrics.x_request_duration)
        self._lag = metrics.histogram_tally(metrics.delivery_lag)
        self._warn = RateLimitedLog(log)
        # Every delivery in memory, from load until its new state is committed: the loader
        # skips these ids, so nothing is sent twice by this process.
        self._loaded: dict[int, Delivery] = {}
        self._lanes: dict[str, Lane] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._timers: dict[int, asyncio.TimerHandle] = {}  # deliveries to requeue later
        self._loader = Loader(store, self._take, self.now_ms, capacity)
        self._recorder = Recorder(store, self.now_ms, self._written, self._lost)
        self._releaser = Releaser(store, lambda: catalog.index, self.now_ms, self._loader.rewind)
        self._tasks: list[asyncio.Task[None]] = []
        # Cancellations being committed: what they match is dropped, not sent.
        self._cancelling: list[Match] = []
        # In flight when cancelled: unless the request delivers it, it ends cancelled.
        self._cancel_after: set[int] = set()
        self._sweep: asyncio.Task[None] | None = None  # `_cancelled_elsewhere`
        self._sweep_again = False
        self._stopping = False
        self._broad_open = False
        self._debug_at: dict[ResponseKind, float] = {}
        self._open_accounts: set[str] = set()  # accounts whose own circuit is not closed
        self.done = {"delivered": 0, "dead": 0, "held": 0, "skipped": 0, "retried": 0}

    def now_ms(self) -> int:
        return now_ms(self._clock)

    # --- life --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._hasher is None:
            log.warning("POSTBACKD_X_HMAC_KEY is not set: claims cannot be sent until it is")
        parts: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("loader", self._loader.run),
            ("releaser", self._releaser.run),
        ]
        if (lease_s := self._store.lease_s) is not None:
            parts.append(("leases", partial(self._renew_leases, lease_s)))
        if isinstance(self._budgets, BudgetSync):
            parts.append(("budgets", self._budgets.run))
        for name, run in parts:
            task = asyncio.create_task(run(), name=f"delivery-{name}")
            task.add_done_callback(self._died)
            self._tasks.append(task)
        self._catalog.subscribe(lambda _: self._releaser.wake())
        self._store.watch_cancels(self._cancelled_elsewhere)
        # Held rows left by an earlier run get the signing rule once more.
        self._releaser.wake()

    async def _renew_leases(self, lease_s: float) -> None:
        """A shared store leases due deliveries to this daemon for `lease_s`: renewed three
        times per lease, so that a slow store or a busy loop never lets one run out while
        its delivery is in memory here (another daemon would send it too)."""
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                await self._store.renew_leases(self.now_ms())
            except StoreUnavailable as exc:  # tried again at the next turn
                self._warn.warning("leases", f"could not renew the leases of due work: {exc}")

    def _died(self, task: asyncio.Task[None]) -> None:
        """A part of the engine ended on its own: without it nothing would be sent, silently.
        The daemon exits non-zero instead, for its supervisor to restart it."""
        if task.cancelled() or self._stopping:
            return
        error = task.exception() or RuntimeError(f"{task.get_name()} ended")
        log.critical("%s stopped", task.get_name(), exc_info=error)
        if self._on_fatal is not None:
            self._on_fatal(error)

    def rewind(self, lane: str, due_ms: int) -> None:
        """Rows of `lane` became pending from `due_ms` (accepted, replayed)."""
        self._loader.rewind(lane, due_ms)

    def accepted(self, accepted: Accepted) -> None:
        """Events were accepted with pending deliveries. Those the store gives this daemon
        at once are taken from memory where their lane has room and no earlier work is left
        to read; the loader reads the rest (a lane's delayed ones among them)."""
        owned = accepted.owned
        taken = self._loader.hand_over(owned) if owned else set()
        for lane, due_ms in accepted.lanes.items():
            if lane not in taken:
                self._loader.rewind(lane, due_ms)
            elif (later_ms := accepted.rest.get(lane)) is not None:
                self._loader.rewind(lane, later_ms)

    def rewind_lanes(self, lanes: dict[str, int]) -> None:
        for lane, due_ms in lanes.items():
            self._loader.rewind(lane, due_ms)

    async def stop(self, grace_s: float) -> None:
        """Stop picking work, give in-flight requests `grace_s` to finish, keep the rest."""
        deadline = asyncio.get_running_loop().time() + grace_s
        self._stopping = True
        lane_tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in (*self._tasks, *lane_tasks):
            task.cancel()
        if self._sweep is not None:
            self._sweep.cancel()
        for timer in self._timers.values():
            timer.cancel()
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
        await asyncio.gather(*self._tasks, *lane_tasks, return_exceptions=True)
        if isinstance(self._budgets, BudgetSync):
            await self._budgets.close()  # what this daemon did not send, for the others
        # What X answered before the stop is recorded now, not sent again after the start.
        left_s = deadline - asyncio.get_running_loop().time()
        unwritten = await self._recorder.drain(max(left_s, 1.0))
        if unwritten:
            log.warning(
                "%d delivery results could not be recorded (the store fails); those "
                "deliveries stay pending and go out again after the start",
                unwritten,
            )

    # --- what the API reads --------------------------------------------------------------

    def in_flight_ids(self) -> list[int]:
        """Deliveries whose request is at X (PRODUCT.md 2, "Delivery states": in_flight)."""
        return [i for lane in self._lanes.values() for i in lane.in_flight]

    @property
    def in_flight(self) -> int:
        return sum(len(lane.in_flight) for lane in self._lanes.values())

    @property
    def loaded(self) -> int:
        """Deliveries in memory: queued, waiting to be queued again, or at X."""
        return len(self._loaded)

    async def refresh_queue_depth(self) -> dict[str, int]:
        counts = await self._store.count_by_state(self.now_ms())
        counts["in_flight"] = self.in_flight
        # In-flight rows are still pending in the store.
        counts["ready"] = max(0, counts.get("ready", 0) - counts["in_flight"])
        for state in ("scheduled", "ready", "in_flight", "held", "dead"):
            self._metrics.queue_depth.labels(state).set(counts.get(state, 0))
        return counts

    async def cancel(self, ids: Collection[int] | None, postback_id: str | None) -> int:
        """Cancel deliveries that have not gone out (PRODUCT.md 2): those of `ids`, or all of
        the postback. Queued ones never go; requests at X finish; the count cancelled."""
        chosen = None if ids is None else set(ids)
        match: Match = partial(_among, chosen) if chosen is not None else (
            lambda d: d.postback_id == postback_id
        )  # fmt: skip
        # Until the commit, and any read that may predate it, rows the loader reads must not
        # go out either.
        self._cancelling.append(match)
        try:
            self._drop(match)
            in_flight = {i for lane in self._lanes.values() for i, d in lane.in_flight.items()
                         if match(d)}  # fmt: skip
            self._cancel_after |= in_flight
            count = await self._store.cancel(
                None if chosen is None else sorted(chosen), postback_id, in_flight, self.now_ms()
            )
        except BaseException:
            # Not cancelled after all: what was dropped from memory is read again.
            for account_id in self._lanes:
                self._loader.rewind(account_id, 0)
            raise
        finally:
            # A read under way may predate the commit and return these rows as pending.
            self._loader.after_read(partial(self._cancelling.remove, match))
        self._outcomes["cancelled"] += count
        self.done["cancelled"] = self.done.get("cancelled", 0) + count
        return count

    def _drop(self, match: Match) -> None:
        """Deliveries not gone out that `match` takes leave memory unsent: those queued, and
        those waiting to be queued again."""
        for lane in self._lanes.values():
            kept = [d for d in lane.queue if not match(d)]
            if len(kept) < len(lane.queue):
                for d in lane.queue:
                    if match(d):
                        self._forget(d)
                lane.queue.clear()
                lane.queue.extend(kept)
        for delivery_id, timer in list(self._timers.items()):
            waiting = self._loaded.get(delivery_id)  # to be queued again later
            if waiting is not None and match(waiting):
                timer.cancel()
                del self._timers[delivery_id]
                self._forget(waiting)

    def _cancelled_elsewhere(self) -> None:
        """Another daemon of the shared store cancelled deliveries: some may be in this
        one's memory, leased to it, queued or waiting. One sweep at a time; a notice during
        a sweep asks for one more."""
        if self._sweep is not None and not self._sweep.done():
            self._sweep_again = True
            return
        self._sweep = asyncio.create_task(self._drop_cancelled(), name="delivery-cancels")

    async def _drop_cancelled(self) -> None:
        while not self._stopping:
            self._sweep_again = False
            waiting = [*(d.id for lane in self._lanes.values() for d in lane.queue),
                       *self._timers]  # fmt: skip
            try:
                cancelled = set(await self._store.cancelled_among(waiting)) if waiting else set()
            except StoreUnavailable as exc:
                self._warn.warning(
                    "cancels", f"could not learn of deliveries cancelled elsewhere: {exc}"
                )
                return
            if cancelled:
                self._drop(partial(_among, cancelled))
                log.info("%d deliveries cancelled through another daemon dropped unsent",
                         len(cancelled))  # fmt: skip
            if not self._sweep_again:
                return

    # --- loading and routing -------------------------------------------------------------

    def _take(self, d: Delivery) -> bool:
        """The loader hands over a due delivery; False when it is in memory already."""
        if d.id in self._loaded or self._stopping:
            return False
        self._loaded[d.id] = d
        self._route(d)
        return True

    def _forget(self, d: Delivery) -> None:
        """The delivery leaves memory (its state is in the store, or it is to be read again)."""
        if self._loaded.pop(d.id, None) is not None:
            self._loader.released(d.lane)

    def _route(self, d: Delivery) -> None:
        """Queue the delivery on its signing account's lane, or hold it (PRODUCT.md 1)."""
        if any(match(d) for match in self._cancelling):
            self._forget(d)
            return
        account, reason = self._catalog.index.signer_of_delivery(
            d.postback_id, d.app_id, d.network, d.x_account_id
        )
        if account is None:
            self._finish(d, outcomes.result(d, "held", reason, account_id=None))
            return
        lane = self._lane(account.id)
        lane.queue.append(d)
        lane.wake.set()

    def _lane(self, account_id: str) -> Lane:
        lane = self._lanes.get(account_id)
        if lane is None:
            s = self._settings
            breaker = CircuitBreaker(
                s.circuit_min_requests,
                s.circuit_window_s,
                s.circuit_failure_ratio,
                s.circuit_probe_interval_s,
                clock=self._clock.monotonic,
                on_change=partial(self._account_circuit_changed, account_id),
            )
            budget = self._budgets.get(account_id)
            lane = self._lanes[account_id] = Lane(account_id, self._lane_cap, budget, breaker)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._lane_loop(lane), name=f"lane-{len(self._lanes)}")
            lane.task.add_done_callback(self._died)
        return lane

    # --- sending -------------------------------------------------------------------------

    async def _lane_loop(self, lane: Lane) -> None:
        while True:
            try:
                await self._lane_turn(lane)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lane of X account %s failed; it carries on", lane.account_id)
                await asyncio.sleep(_LANE_ERROR_PAUSE_S)

    async def _lane_turn(self, lane: Lane) -> None:
        if lane.busy:
            lane.wake.clear()
            await lane.wake.wait()
            return
        await self._slots.acquire()
        step = lane.step(self._catalog.index.accounts.get(lane.account_id), self._broad)
        if isinstance(step, Send):
            task = asyncio.create_task(self._sender(lane, step.delivery, step.ticket))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            return
        self._slots.release()
        if step is REROUTE:
            # 401 or a deleted account: everything queued here goes back to the rule (held,
            # or another account's lane); yield before looking again.
            queued = list(lane.queue)
            lane.queue.clear()
            for d in queued:
                self._route(d)
            await asyncio.sleep(0)
        elif isinstance(step, Wait):
            # Woken early by every answer of this account (X's headers may move the end of
            # its window) and when a circuit closes.
            started = self._clock.monotonic()
            lane.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), timeout=step.seconds)
            if step.rate_limited:
                self._metrics.rate_limit_wait.inc(self._clock.monotonic() - started)

    async def _sender(self, lane: Lane, d: Delivery, ticket: Ticket) -> None:
        """Send `d`, then the lane's next delivery while the lane may send at once and slots
        are left for the other lanes: one task carries many requests in a row, rather than
        a task (and a turn of the lane's loop) for each. When every slot is taken, each
        request gives its slot back, in the order lanes asked for one."""
        try:
            while True:
                await self._send(lane, d, ticket)
                if self._stopping or self._slots.locked():
                    return
                step = lane.step(self._catalog.index.accounts.get(lane.account_id), self._broad)
                if not isinstance(step, Send):
                    return  # idle, a wait or a reroute: the lane's loop acts on it
                d, ticket = step.delivery, step.ticket
        finally:
            self._slots.release()
            lane.wake.set()

    async def _send(self, lane: Lane, d: Delivery, ticket: Ticket) -> None:
        settled = False

        def settle(x_ok: bool | None) -> None:
            nonlocal settled
            if not settled:
                settled = True
                lane.settle(d, ticket, self._broad, x_ok)

        try:
            event = d.event if d.event is not None else Event.from_json(d.event_body)
            if self._hasher is None:
                settle(None)
                self._requeue(lane, d, front=False, delay_s=_NO_KEY_RETRY_S)
                return
            index = self._catalog.index
            params = request_params(d, event, index, self._hasher)
            if params is None:
                settle(None)
                self._finish(d, outcomes.result(d, "skipped", "no_device_id", account_id=None))
                return
            account = ticket.account
            response = await self._x.send_conversion(
                params, account.access_token, account.access_token_secret, lane.account_id
            )
            if not response.sent:
                # No connection came free in time: X saw nothing, nothing is used up.
                settle(None)
                self._requeue(lane, d, front=True)
                return
            settle(response.kind is not ResponseKind.RETRYABLE)
            self._observe(lane, response)
            if log.isEnabledFor(logging.DEBUG):
                self._debug_answer(lane, d, response)
            await self._apply(lane, account, d, event, response, ticket)
        except asyncio.CancelledError:
            # Shutdown: the delivery stays pending in the store for the next start.
            settle(None)
            self._forget(d)
            raise
        except Exception:
            log.exception("delivery %d failed unexpectedly; it will be retried", d.id)
            settle(None)  # a fault of ours, not of X: no breaker counts it
            self._finish(d, outcomes.retry_or_dead(
                d, None, "internal error", lane.account_id, self._retry, self._rng, self.now_ms()
            ))  # fmt: skip

    def _observe(self, lane: Lane, response: XResponse) -> None:
        self._requests[response.status_class] += 1
        self._x_duration.observe(response.duration_s)
        self._answers[response.kind] += 1
        info = response.rate_limit
        limited = response.kind is ResponseKind.RATE_LIMITED
        if info is not None:
            lane.budget.observe(info.limit, info.remaining, info.reset_epoch_s, limited=limited)
        elif not limited:
            lane.budget.observe(None, None, None)

    def _debug_answer(self, lane: Lane, d: Delivery, response: XResponse) -> None:
        """`--log-level debug`: one answer of X per kind and second, sampled (a line per
        request would be thousands a second)."""
        now_s = self._clock.monotonic()
        if now_s - self._debug_at.get(response.kind, -_DEBUG_EVERY_S) < _DEBUG_EVERY_S:
            return
        self._debug_at[response.kind] = now_s
        log.debug(
            "X answered %s in %.1f ms (delivery %d, X account %s, attempt %d; one per kind "
            "and second is logged)",
            response.describe() if response.kind is not ResponseKind.OK else response.status,
            response.duration_s * 1000,
            d.id,
            lane.account_id,
            d.attempts + 1,
        )

    async def _apply(
        self,
        lane: Lane,
        account: XAccount,
        d: Delivery,
        event: Event,
        response: XResponse,
        ticket: Ticket,
    ) -> None:
        kind = response.kind
        current = True
        if kind is ResponseKind.RATE_LIMITED:
            # Reference, 429: wait for the window to reset; no retry is used up.
            info = response.rate_limit
            lane.budget.block_until(info.reset_epoch_s if info else None)
        elif kind is ResponseKind.UNAUTHORIZED:
            # Reference, 401: the credentials no longer work. Hold, never drop; but a 401
            # to credentials replaced or authenticated again since says nothing of them.
            reason = f"X answered {response.describe()} to a claim request"
            try:
                marked = await self._catalog.record_authentication(
                    account.id, False, reason, sent_with=account
                )
                current = marked is not None
            except NotFound:
                current = False  # deleted meanwhile: the rule decides again
            except StoreUnavailable as exc:
                # Not recorded (the store fails): the delivery is held all the same; the
                # account's next 401 records it once the store writes again.
                self._warn.warning("401-store", f"could not mark X account {account.id}: {exc}")
                current = True
            if current and account.authenticated:
                self._warn.warning(
                    f"401:{account.id}", f"X account {account.id} unauthenticated: {reason}"
                )
        circuit_closed = self._broad.state == "closed" and lane.breaker.state == "closed"
        if kind is ResponseKind.RETRYABLE and circuit_closed:
            self._warn.warning("x-retryable", f"X failed a claim request: {response.describe()}")
        outcome = outcomes.judge(
            d, event, response, self._catalog.index,
            account_id=account.id, credentials_current=current, circuit_closed=circuit_closed,
            probe=ticket.broad_probe or ticket.account_probe, policy=self._retry, rng=self._rng,
            now_ms=self.now_ms(),
        )  # fmt: skip
        if outcome.result is None:
            self._requeue(lane, d, front=True)
            return
        decision = outcome.decision
        if decision is not None:
            self._claims[decision.outcome] += 1
        attribution = outcome.result.attribution
        if attribution is not None:
            self._attributions[attribution.engagement_type] += 1
            self._devices.remember(
                attribution.app_id, attribution.device_key, d.network, attribution.engagement_time
            )
        self._finish(d, outcome.result)

    def _requeue(self, lane: Lane, d: Delivery, *, front: bool, delay_s: float = 0.0) -> None:
        if self._stopping:
            self._forget(d)
            return
        if d.id in self._cancel_after:
            self._finish(d, outcomes.result(d, "cancelled", "cancelled", account_id=None))
            return
        if delay_s:
            loop = asyncio.get_running_loop()
            self._timers[d.id] = loop.call_later(delay_s, self._requeue_later, lane, d)
            return
        if front:
            lane.queue.appendleft(d)
        else:
            lane.queue.append(d)
        lane.wake.set()

    def _requeue_later(self, lane: Lane, d: Delivery) -> None:
        self._timers.pop(d.id, None)
        self._requeue(lane, d, front=False)

    def _finish(self, d: Delivery, result: Result) -> None:
        """Record the delivery's new state; it leaves memory once that is committed."""
        state: State = result.state
        if d.id in self._cancel_after:
            self._cancel_after.discard(d.id)
            if state not in ("delivered", "dead", "skipped"):
                result = outcomes.result(d, "cancelled", "cancelled", account_id=None)
                state = "cancelled"
        if state == "scheduled":
            self._outcomes["retried"] += 1
            self.done["retried"] += 1
        else:
            self._outcomes[state] += 1
            self.done[state] = self.done.get(state, 0) + 1
            if state == "dead":
                self._warn.warning(
                    "dead", f"a delivery went dead: {result.last_error or result.reason}"
                )
        if state in ("delivered", "dead"):
            lag_s = (self.now_ms() - d.first_due_ms) / 1000
            self._lag.observe(max(0.0, lag_s))
        self._recorder.add(d, result)

    def _written(self, batch: Batch) -> None:
        held = False
        for d, result in batch:
            self._loader.finished(d.id)
            self._forget(d)
            if result.state == "scheduled":
                self._loader.rewind(result.account_id or d.lane, result.due_ms)
            held = held or result.state == "held"
        if held:
            # The account may have been authenticated while these were being held.
            self._releaser.wake()

    def _lost(self, batch: Batch) -> None:
        """Results that could not be written (not the store's fault): sent again."""
        for d, _ in batch:
            self._forget(d)
            self._loader.rewind(d.lane, d.due_ms)

    # --- breakers ------------------------------------------------------------------------

    def _broad_changed(self, state: CircuitState) -> None:
        self._metrics.set_circuit_state(state)
        if state == "open" and not self._broad_open:
            self._broad_open = True
            log.warning("X is failing across accounts: circuit open, sending paused, probing")
        elif state == "closed":
            self._broad_open = False
            log.info("X answers again: circuit closed, sending resumed")
            self._wake_all(self._lanes.values())

    def _account_circuit_changed(self, account_id: str, state: CircuitState) -> None:
        """An account's own breaker moved: only its lane pauses or resumes."""
        failing = state != "closed"
        self._broad.account_failing(account_id, failing)
        if failing and account_id not in self._open_accounts:
            self._open_accounts.add(account_id)
            log.warning(
                "X fails the requests of X account %s: its circuit open, its deliveries "
                "paused (their retries kept), probing",
                account_id,
            )
        elif not failing and account_id in self._open_accounts:
            self._open_accounts.discard(account_id)
            log.info("X answers X account %s again: its circuit closed, sending resumed",
                     account_id)  # fmt: skip
            lane = self._lanes.get(account_id)
            if lane is not None:
                lane.wake.set()
        self._metrics.accounts_circuit_open.set(len(self._open_accounts))

    def _wake_lane(self, account_id: str) -> None:
        """The account's budget has a slice again (delivery/slices.py)."""
        lane = self._lanes.get(account_id)
        if lane is not None:
            lane.wake.set()

    @staticmethod
    def _wake_all(lanes: Iterable[Lane]) -> None:
        for lane in lanes:
            lane.wake.set()


def _among(ids: Collection[int], d: Delivery) -> bool:
    return d.id in ids
