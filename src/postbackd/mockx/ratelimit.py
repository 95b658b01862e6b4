"""Fixed-window request budgets, one per (endpoint, OAuth token), like X's rate limits.

Reference, "Rate limits": the scope is the OAuth token; every answer carries
`x-rate-limit-limit`, `x-rate-limit-remaining` and `x-rate-limit-reset` (epoch seconds at
which the window restarts), a 429 included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateState:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch_s: int

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset_epoch_s),
        }


@dataclass(slots=True)
class _Window:
    start_s: float
    count: int = 0


class FixedWindowLimiter:
    """Consecutive windows of `window_s` from a key's first request: a request after a
    window ended counts in the window of the grid it falls in, so windows neither drift nor
    stretch. A client that waits for the reported reset (a whole second, rounded up) and
    then sends finds its next window already open and gets the full limit per `window_s`.
    Limit and window size are read per call, so a runtime change applies at once."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def take(self, key: Hashable, limit: int, window_s: float) -> RateState:
        """Spend one request of the key's budget when any is left."""
        window = self._current(key, window_s)
        allowed = window.count < limit
        if allowed:
            window.count += 1
        return self._state(window, allowed, limit, window_s)

    def peek(self, key: Hashable, limit: int, window_s: float) -> RateState:
        """The budget as it stands, spending nothing (for answers that are not counted)."""
        window = self._current(key, window_s)
        return self._state(window, window.count < limit, limit, window_s)

    def clear(self) -> None:
        self._windows.clear()

    def _current(self, key: Hashable, window_s: float) -> _Window:
        now_s = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now_s)
        elif now_s >= window.start_s + window_s:
            passed = max(1, math.floor((now_s - window.start_s) / window_s))
            window = self._windows[key] = _Window(window.start_s + passed * window_s)
        return window

    @staticmethod
    def _state(window: _Window, allowed: bool, limit: int, window_s: float) -> RateState:
        return RateState(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - window.count),
            reset_epoch_s=math.ceil(window.start_s + window_s),
        )
