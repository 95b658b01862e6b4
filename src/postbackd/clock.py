"""Time, injected: the policies of the delivery engine (retry backoff, 429 resets, breakers)
read it from one object that tests can move, so they are tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Epoch seconds (X's rate-limit resets are epoch seconds)."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back, for intervals and timeouts."""
        ...


class SystemClock:
    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def now_ms(clock: Clock) -> int:
    """Epoch milliseconds, the unit of due times in the store."""
    return int(clock.time() * 1000)
