"""Circuit breakers in front of X (PRODUCT.md 2, "Outages" and "Isolation"): one per X account,
and one broad breaker for X failing across accounts.

    closed --(failing)--> open --(probe due, acquire)--> half_open
    half_open --(probe answered)--> closed
    half_open --(probe failed)--> open, with a new probe timer
    half_open --(release_probe)--> open, the probe still due

Only a probe closes a circuit: any other answer that arrives while it is open comes from a
request sent before it opened (`acquire` gives no "send" while open), which says nothing of X
now. A good one of those makes the next probe due at once.

An account's breaker (`CircuitBreaker`) opens when, over the last `window_s` seconds while
closed, the account sent at least `min_requests` requests and at least `failure_ratio` of the
deliveries it sent failed (5xx, timeout, connection error), from at least two deliveries.
Failures are counted per delivery, so one delivery retrying many times counts once and can
never open the circuit alone; requests are counted per delivery too for the ratio, else every
retry would dilute it. Its own failures pause only that account: a slow account's timeouts
are its own, not an outage of X.

The broad breaker (`BroadBreaker`) opens when, over the window, at least `min_requests`
requests went out and the accounts whose own circuit is open are at least two and at least
`failure_ratio` of the accounts that sent them: a share of accounts, which no single account,
however busy, can make up alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal, TypeVar

K = TypeVar("K")
State = Literal["closed", "open", "half_open"]
Mode = Literal["send", "probe"]


class _Breaker:
    """The state machine both breakers share; subclasses say when "closed" turns "open"."""

    __slots__ = (
        "_clock",
        "_failure_ratio",
        "_min_requests",
        "_on_change",
        "_probe_at",
        "_probe_interval_s",
        "_state",
        "_window_s",
    )

    def __init__(
        self,
        min_requests: int,
        window_s: float,
        failure_ratio: float,
        probe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self._min_requests = min_requests
        self._window_s = window_s
        self._failure_ratio = failure_ratio
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._on_change = on_change
        self._state: State = "closed"
        self._probe_at = 0.0
        self._reset_window()

    @property
    def state(self) -> State:
        return self._state

    def acquire(self) -> Mode | None:
        """May a request go? "send" while closed; "probe" when open and a probe is due (one
        at a time); None otherwise: hold the delivery, its retries untouched."""
        if self._state == "closed":
            return "send"
        if self._state == "open" and self._clock() >= self._probe_at:
            self._set("half_open")
            return "probe"
        return None

    def seconds_until_probe(self) -> float:
        """0 when closed; while a probe is out, its answer decides first, so one interval."""
        if self._state == "closed":
            return 0.0
        if self._state == "half_open":
            return self._probe_interval_s
        return max(0.0, self._probe_at - self._clock())

    def release_probe(self) -> None:
        """The probe slot went unused (nothing was sent): open again, the probe still due."""
        if self._state == "half_open":
            self._set("open")

    def _probe_answered(self, ok: bool, now_s: float) -> None:
        if ok:
            self._reset_window()
            self._set("closed")
        else:
            self._open(now_s)

    def _open(self, now_s: float) -> None:
        self._probe_at = now_s + self._probe_interval_s
        # While not closed nothing is counted; the next closed period starts afresh, so
        # the failures that opened the circuit cannot open it again after a good probe.
        self._reset_window()
        self._set("open")

    def _earlier_send_ok(self, now_s: float) -> None:
        self._probe_at = min(self._probe_at, now_s)

    def _reset_window(self) -> None:
        raise NotImplementedError

    def _set(self, state: State) -> None:
        if state == self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(state)


class CircuitBreaker(_Breaker):
    """One X account's breaker, counting its deliveries."""

    __slots__ = ("_failing", "_recent", "_sent")
    # The window while closed: (time, delivery id, ok) in time order, and per delivery the
    # number of its requests and of its failures in it.
    _recent: deque[tuple[float, int, bool]]
    _sent: dict[int, int]
    _failing: dict[int, int]

    def record(self, delivery_id: int, ok: bool, *, probe: bool = False) -> None:
        """The outcome of one request: ok when X answered with any status but a 5xx (a 4xx or
        429 shows X is up); not ok for a 5xx, a timeout or a connection error."""
        now_s = self._clock()
        if probe and self._state == "half_open":
            self._probe_answered(ok, now_s)
        elif self._state == "closed":
            self._add(now_s, delivery_id, ok)
            if not ok and self._fails_broadly():
                self._open(now_s)
        elif ok and self._state == "open":
            self._earlier_send_ok(now_s)

    def _add(self, now_s: float, delivery_id: int, ok: bool) -> None:
        recent = self._recent
        while recent and recent[0][0] <= now_s - self._window_s:
            _, old_id, old_ok = recent.popleft()
            _decrement(self._sent, old_id)
            if not old_ok:
                _decrement(self._failing, old_id)
        recent.append((now_s, delivery_id, ok))
        self._sent[delivery_id] = self._sent.get(delivery_id, 0) + 1
        if not ok:
            self._failing[delivery_id] = self._failing.get(delivery_id, 0) + 1

    def _fails_broadly(self) -> bool:
        failing = len(self._failing)
        return (
            len(self._recent) >= self._min_requests
            and failing >= 2  # a single failing delivery never opens the circuit
            and failing >= self._failure_ratio * len(self._sent)
        )

    def _reset_window(self) -> None:
        self._recent = deque()
        self._sent = {}
        self._failing = {}


class BroadBreaker(_Breaker):
    """X failing across accounts: counts the accounts whose own breaker is open."""

    __slots__ = ("_failing", "_recent", "_sent")
    # While closed: (time, account) per request in the window, requests per account.
    _recent: deque[tuple[float, str]]
    _sent: dict[str, int]

    def __init__(
        self,
        min_requests: int,
        window_s: float,
        failure_ratio: float,
        probe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        super().__init__(min_requests, window_s, failure_ratio, probe_interval_s, clock, on_change)
        # Accounts whose own circuit is not closed, kept whatever this breaker's state.
        self._failing: set[str] = set()

    def record(self, account_id: str, ok: bool, *, probe: bool = False) -> None:
        """One request of the account and whether X answered it (see CircuitBreaker.record)."""
        now_s = self._clock()
        if probe and self._state == "half_open":
            self._probe_answered(ok, now_s)
        elif self._state == "closed":
            self._prune(now_s)
            self._recent.append((now_s, account_id))
            self._sent[account_id] = self._sent.get(account_id, 0) + 1
            if not ok:
                self._check(now_s)
        elif ok and self._state == "open":
            self._earlier_send_ok(now_s)

    def account_failing(self, account_id: str, failing: bool) -> None:
        """An account's own circuit opened (True) or closed again (False)."""
        if failing:
            self._failing.add(account_id)
            if self._state == "closed":
                self._check(self._clock())
        else:
            self._failing.discard(account_id)

    def forget(self, account_id: str) -> None:
        self._failing.discard(account_id)

    def _prune(self, now_s: float) -> None:
        recent = self._recent
        while recent and recent[0][0] <= now_s - self._window_s:
            _decrement(self._sent, recent.popleft()[1])

    def _check(self, now_s: float) -> None:
        self._prune(now_s)
        active = self._sent
        failing = sum(1 for account in self._failing if account in active)
        if (
            len(self._recent) >= self._min_requests
            and failing >= 2  # one account, however failing, is never a broad outage
            and failing >= self._failure_ratio * len(active)
        ):
            self._open(now_s)

    def _reset_window(self) -> None:
        self._recent = deque()
        self._sent = {}


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
