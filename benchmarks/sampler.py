"""What the harness watches while a scenario runs: every half second (or `interval_s`), the
simulated X's counters (`/_mock/stats`), the daemon's metrics (`/metrics`) and each process's
CPU time and memory; with `data_dir`, also the size of the daemon's database and its
`/readyz`. The samples make the chart and the rates over time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks import noise
from benchmarks.procs import Proc
from postbackd.store.db import DB_NAME

INTERVAL_S = 0.5
# Series of the daemon's /metrics that the harness reads, by their text up to the value.
_SERIES = {
    'postbackd_deliveries_total{outcome="delivered"}': "delivered",
    'postbackd_deliveries_total{outcome="dead"}': "dead",
    'postbackd_deliveries_total{outcome="retried"}': "retried",
    'postbackd_events_received_total{result="accepted"}': "accepted",
    "postbackd_delivery_lag_seconds_sum": "lag_sum_s",
    "postbackd_delivery_lag_seconds_count": "lag_count",
}
# Summed over its labels (the kind of failure: disk full, I/O error, ...) into "store_errors".
_STORE_ERRORS = "postbackd_store_errors_total{"


@dataclass(slots=True)
class Sample:
    t_s: float  # seconds since the sampler started
    x: dict[str, object]  # the simulated X's /_mock/stats
    daemon: dict[str, float]  # the series of _SERIES
    cpu_s: dict[str, float]  # per process
    rss_kb: int  # the daemon's resident memory
    hwm_kb: int  # the daemon's peak resident memory so far
    machine_busy_s: float  # CPU time of the whole machine
    own_s: float  # CPU time of the benchmark's processes, this one included
    # The daemon's main thread alone (its event loop): the rest of its CPU is its other
    # threads', the store's writer above all.
    loop_cpu_s: float = 0.0
    # With `Sampler.data_dir`: the database's files (the WAL included) and /readyz's answer.
    db_bytes: int | None = None
    ready: bool | None = None

    @property
    def store_errors(self) -> int:
        """Commits of the daemon that failed so far, every kind."""
        return int(self.daemon.get("store_errors", 0.0))

    def x_count(self, status: str) -> int:
        requests = self.x.get("requests")
        by_status = requests.get("conversion_event", {}) if isinstance(requests, dict) else {}
        return int(by_status.get(status, 0))

    @property
    def x_ok(self) -> int:
        return self.x_count("200")

    @property
    def x_total(self) -> int:
        requests = self.x.get("requests")
        by_status = requests.get("conversion_event", {}) if isinstance(requests, dict) else {}
        return sum(int(n) for n in by_status.values())


def db_bytes(data_dir: Path) -> int:
    """The SQLite files of a data dir: the database, its WAL and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += (data_dir / (DB_NAME + suffix)).stat().st_size
    return total


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        key = _SERIES.get(name)
        if key is not None:
            values[key] = float(value)
        elif name.startswith(_STORE_ERRORS):
            values["store_errors"] = values.get("store_errors", 0.0) + float(value)
    return values


@dataclass(slots=True)
class Sampler:
    session: aiohttp.ClientSession
    x_url: str
    daemon_url: str | None
    daemon: Proc | None
    procs: Sequence[Proc]
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    interval_s: float = INTERVAL_S
    data_dir: Path | None = None
    _taken: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def sample(self) -> Sample:
        async with self.session.get(f"{self.x_url}/_mock/stats") as answer:
            x = await answer.json()
        metrics: dict[str, float] = {}
        if self.daemon_url is not None:
            async with self.session.get(f"{self.daemon_url}/metrics") as answer:
                metrics = parse_metrics(await answer.text())
        rss_kb, hwm_kb = self.daemon.memory_kb() if self.daemon is not None else (0, 0)
        loop_cpu_s = (
            noise.cpu_s(self.daemon.pid, self.daemon.pid) if self.daemon is not None else 0.0
        )
        size: int | None = None
        ready: bool | None = None
        if self.data_dir is not None and self.daemon_url is not None:
            size = db_bytes(self.data_dir)
            async with self.session.get(f"{self.daemon_url}/readyz") as answer:
                ready = answer.status == 200
        cpu = {p.name: p.cpu_s() for p in self.procs if p.alive()}
        sample = Sample(
            t_s=time.monotonic() - self.started,
            x=x,
            daemon=metrics,
            cpu_s=cpu,
            rss_kb=rss_kb,
            hwm_kb=hwm_kb,
            machine_busy_s=noise.machine_busy_s(),
            own_s=noise.cpu_s(os.getpid()) + sum(cpu.values()),
            loop_cpu_s=loop_cpu_s,
            db_bytes=size,
            ready=ready,
        )
        self.samples.append(sample)
        async with self._taken:
            self._taken.notify_all()
        return sample

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                await self.sample()
            interval_s = self.interval_s
            await asyncio.sleep(interval_s - (time.monotonic() - self.started) % interval_s)

    async def reach(self, t_s: float) -> None:
        """Wait until a sample at or after `t_s` (sampler time) is taken."""
        async with self._taken:
            await self._taken.wait_for(lambda: bool(self.samples) and self.samples[-1].t_s >= t_s)

    def _first_claim_s(self) -> float | None:
        return next((s.t_s for s in self.samples if s.x_ok > 0), None)

    async def claims_for(self, seconds: float, timeout_s: float) -> float:
        """Wait until X has been answering claims for `seconds`; returns when it started
        (sampler time)."""

        def done() -> bool:
            first = self._first_claim_s()
            return first is not None and self.samples[-1].t_s >= first + seconds

        try:
            async with asyncio.timeout(timeout_s), self._taken:
                await self._taken.wait_for(done)
        except TimeoutError:
            raise RuntimeError(
                f"X did not answer claims for {seconds:.0f} s within {timeout_s:.0f} s"
            ) from None
        first = self._first_claim_s()
        assert first is not None
        return first

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
