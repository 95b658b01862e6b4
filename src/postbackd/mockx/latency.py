"""Added answer latency of the simulated X, as a distribution given by a short spec string."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

LatencyKind = Literal["none", "fixed", "uniform", "lognormal"]

# z-score of the 99th percentile of the standard normal: turns (median, p99) into sigma.
_Z_P99: Final = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class Latency:
    """Added answer latency. Spec strings: `none`, `fixed:MS` (or just `MS`),
    `uniform:MIN_MS:MAX_MS`, `lognormal:MEDIAN_MS:P99_MS`."""

    kind: LatencyKind = "none"
    a_ms: float = 0.0
    b_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.a_ms < 0 or self.b_ms < 0:
            raise ValueError("latency must not be negative")
        if self.kind in ("uniform", "lognormal") and self.b_ms < self.a_ms:
            raise ValueError(f"{self.kind} latency needs its second value >= the first")
        if self.kind == "lognormal" and self.a_ms == 0:
            raise ValueError("lognormal latency needs a median above 0")

    @classmethod
    def parse(cls, spec: str) -> Latency:
        kind, _, rest = spec.strip().partition(":")
        try:
            if kind in ("", "none", "0"):
                return cls()
            if not rest:
                return cls("fixed", float(kind))
            values = [float(v) for v in rest.split(":")]
        except ValueError:
            raise ValueError(f"latency {spec!r}: values must be numbers of milliseconds") from None
        if kind == "fixed" and len(values) == 1:
            return cls("fixed", values[0])
        if kind in ("uniform", "lognormal") and len(values) == 2:
            return cls(kind, values[0], values[1])  # type: ignore[arg-type]
        raise ValueError(
            f"latency {spec!r}: expected none, fixed:MS, uniform:MIN:MAX or lognormal:MEDIAN:P99"
        )

    @property
    def spec(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "fixed":
            return f"fixed:{self.a_ms:g}"
        return f"{self.kind}:{self.a_ms:g}:{self.b_ms:g}"

    def delay_s(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a_ms / 1000
        if self.kind == "uniform":
            return rng.uniform(self.a_ms, self.b_ms) / 1000
        if self.kind == "lognormal":
            mu = math.log(self.a_ms)
            sigma = (math.log(self.b_ms) - mu) / _Z_P99
            return rng.lognormvariate(mu, sigma) / 1000
        return 0.0


# The default: answers as soon as they are ready.
NO_LATENCY: Final = Latency()
