"""What a scenario reports: its figures (medians over the repeated runs), each run's
figures, the bar's lines with pass or fail, and a timeline of one run for the chart."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.sampler import Sample


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the bar: `value` against `limit` (at least, or at most)."""

    label: str
    value: float
    limit: float
    at_least: bool
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "value": self.value,
            "limit": self.limit,
            "at_least": self.at_least,
            "unit": self.unit,
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class Point:
    t_s: float
    claims_per_s: float
    # Mean time from acceptance to X's answer of the deliveries finished in the interval.
    lag_s: float | None
    rss_mb: float
    accepted_per_s: float
    # The daemon's SQLite files, where the scenario watched them (scenario 7).
    db_mb: float | None = None


@dataclass(slots=True)
class Outcome:
    number: int
    title: str
    figures: dict[str, float] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timeline: list[Point] = field(default_factory=list)
    # Set when the scenario could not finish; its figures are then incomplete.
    error: str | None = None

    def add_run(self, figures: dict[str, float]) -> None:
        self.runs.append(figures)
        self.figures = {
            name: statistics.median(run[name] for run in self.runs if name in run)
            for name in figures
        }

    def to_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "title": self.title,
            "figures": self.figures,
            "runs": self.runs,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
            "error": self.error,
            "timeline": [
                {
                    "t_s": p.t_s,
                    "claims_per_s": p.claims_per_s,
                    "lag_s": p.lag_s,
                    "rss_mb": p.rss_mb,
                    "accepted_per_s": p.accepted_per_s,
                    "db_mb": p.db_mb,
                }
                for p in self.timeline
            ],
        }


def timeline(samples: Sequence[Sample]) -> list[Point]:
    """Claims/s and mean lag per sampling interval."""
    points = []
    for before, after in itertools.pairwise(samples):
        dt = after.t_s - before.t_s
        if dt <= 0:
            continue
        finished = after.daemon.get("lag_count", 0.0) - before.daemon.get("lag_count", 0.0)
        lag_s = None
        if finished > 0:
            lag_s = (
                after.daemon.get("lag_sum_s", 0.0) - before.daemon.get("lag_sum_s", 0.0)
            ) / finished
        accepted = after.daemon.get("accepted", 0.0) - before.daemon.get("accepted", 0.0)
        claims_per_s = (after.x_ok - before.x_ok) / dt
        db_mb = None if after.db_bytes is None else after.db_bytes / 2**20
        points.append(
            Point(after.t_s, claims_per_s, lag_s, after.rss_kb / 1024, accepted / dt, db_mb)
        )
    return points


def window(samples: Sequence[Sample], start_s: float, end_s: float) -> tuple[Sample, Sample]:
    """The first and last samples between two moments."""
    inside = [s for s in samples if start_s <= s.t_s <= end_s]
    if len(inside) < 2:
        raise RuntimeError(f"too few samples between {start_s:.1f} s and {end_s:.1f} s")
    return inside[0], inside[-1]


def rate_between(samples: Sequence[Sample], start_s: float, end_s: float) -> float:
    """Claims answered 200 per second between two moments (nearest samples inside)."""
    first, last = window(samples, start_s, end_s)
    return (last.x_ok - first.x_ok) / (last.t_s - first.t_s)


def foreign_between(samples: Sequence[Sample], start_s: float, end_s: float) -> float:
    """Cores that other processes of the machine kept busy between two moments."""
    first, last = window(samples, start_s, end_s)
    foreign_s = (last.machine_busy_s - first.machine_busy_s) - (last.own_s - first.own_s)
    return max(0.0, foreign_s / (last.t_s - first.t_s))


def first_claim_s(samples: Sequence[Sample]) -> float:
    """When X started answering claims (the first sample that counts one)."""
    for sample in samples:
        if sample.x_ok > 0:
            return sample.t_s
    raise RuntimeError("X never answered a claim")
