"""Backoff between retries of one delivery (PRODUCT.md 2, "Retries": exponential backoff with
jitter; base, factor and cap are settings)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float
    factor: float
    cap_s: float

    def ceiling_s(self, retry: int) -> float:
        """The delay before jitter: `base * factor**(retry - 1)`, never above the cap.
        `retry` 1 is the first retry."""
        if retry < 1:
            raise ValueError(f"retry counts from 1, got {retry}")
        # float() keeps the power a float even for an int factor (an int power of a large
        # retry would be a huge exact integer); a float power that overflows raises, and the
        # cap applies then.
        try:
            grown_s = self.base_s * float(self.factor) ** (retry - 1)
        except OverflowError:
            return self.cap_s
        return min(self.cap_s, grown_s)

    def delay_s(self, retry: int, rng: random.Random) -> float:
        """Equal jitter: half the ceiling is fixed, so the delay never collapses to 0, and
        half is uniform random, so deliveries that failed together do not retry together."""
        half_s = self.ceiling_s(retry) / 2
        return half_s + rng.uniform(0.0, half_s)
