"""What every scenario gets: the sizes of this run (full or quick), where to work, and the
engine's throughput from scenario 1, which scenarios 2, 3, 4 and 5 measure against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Sizes:
    repeat: int  # runs per scenario; the report gives their medians
    warmup_s: float  # left out of every rate: connections, caches, first windows
    measure_s: float  # scenario 1 and 2's measured time
    accounts: int  # scenario 3
    account_limit: int  # scenario 3: requests per account per window
    account_window_s: float
    account_windows: int  # scenario 3: windows measured after the first
    outage_events: int  # scenario 4
    ingest_events: int  # scenario 5
    backlog_events: int  # scenario 6
    soak_s: float  # scenario 7: how long the load runs
    soak_warmup_s: float  # scenario 7: before the first fault, the reference for memory
    soak_cycle_s: float  # scenario 7: one turn of the rotating faults
    soak_calm_s: float  # scenario 7: the load's last stretch, with no fault
    soak_drain_s: float  # scenario 7: longest wait for X to answer every accepted event
    soak_retention_s: float  # scenario 7: retention_s, where the daemon has the setting


FULL = Sizes(
    repeat=3,
    warmup_s=3.0,
    measure_s=10.0,
    accounts=200,
    account_limit=50,
    account_window_s=10.0,
    account_windows=5,
    outage_events=200_000,
    ingest_events=200_000,
    backlog_events=1_000_000,
    soak_s=1800.0,
    soak_warmup_s=120.0,
    soak_cycle_s=300.0,
    soak_calm_s=180.0,
    soak_drain_s=300.0,
    soak_retention_s=600.0,
)
QUICK = Sizes(
    repeat=1,
    warmup_s=1.5,
    measure_s=4.0,
    accounts=100,
    account_limit=25,
    account_window_s=5.0,
    account_windows=3,
    outage_events=20_000,
    ingest_events=40_000,
    backlog_events=100_000,
    soak_s=180.0,
    soak_warmup_s=30.0,
    soak_cycle_s=60.0,
    soak_calm_s=30.0,
    soak_drain_s=120.0,
    soak_retention_s=60.0,
)


@dataclass(slots=True)
class Context:
    sizes: Sizes
    quick: bool
    tmp: Path
    # Scenario 1's median claims/s, once it ran.
    engine_rate: float | None = None

    def work_dir(self, name: str) -> Path:
        return self.tmp / name
