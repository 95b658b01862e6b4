"""A brake on guessing the API token at the sign-in form: after FAILURES wrong tokens from
one address within WINDOW_S, that address is refused until the oldest failure ages out.

A generated token (32 random bytes) cannot be guessed anyway; a short configured one
could, and this keeps the console from being the faster way to try.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

FAILURES: Final = 10
WINDOW_S: Final = 60.0
# Addresses remembered at most; the least recently failing are forgotten first.
MAX_ADDRESSES: Final = 10_000


class Throttle:
    def __init__(
        self,
        failures: int = FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = failures
        self._window_s = window_s
        self._clock = clock
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()

    def _live(self, who: str) -> deque[float]:
        times = self._recent.get(who)
        if times is None:
            return deque()
        horizon = self._clock() - self._window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._recent[who]
        return times

    def blocked(self, who: str) -> bool:
        return len(self._live(who)) >= self._failures

    def failed(self, who: str) -> None:
        times = self._live(who)
        times.append(self._clock())
        self._recent[who] = times
        self._recent.move_to_end(who)
        while len(self._recent) > MAX_ADDRESSES:
            self._recent.popitem(last=False)

    def succeeded(self, who: str) -> None:
        self._recent.pop(who, None)
