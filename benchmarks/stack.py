"""One scenario run's processes: the simulated X and (usually) the daemon, started fresh in
their own directory, configured, and stopped whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks import diskfull, workload
from benchmarks.configure import Setup, configure
from benchmarks.procs import Proc, launch, result_of, start_client, start_daemon, start_mock

# Off for the scenarios that do not test X's limit: 60,000 requests per 15 minutes last about
# 10 seconds at this machine's throughput.
UNLIMITED = 1_000_000_000
# The simulated X keeps only the latest requests: counters answer every question here.
_LOG_MAX = 1000


@dataclass(slots=True)
class Stack:
    work_dir: Path
    session: aiohttp.ClientSession
    mock: Proc
    x_url: str
    daemon: Proc
    api: str
    setup: Setup

    async def x_stats(self) -> dict[str, object]:
        async with self.session.get(f"{self.x_url}/_mock/stats") as answer:
            stats: dict[str, object] = await answer.json()
        return stats

    async def x_conversions(self) -> int:
        """Distinct conversions X answered 200: each accepted event once, when none is lost."""
        conversions = (await self.x_stats())["conversions"]
        assert isinstance(conversions, dict)
        return int(conversions["distinct"])

    async def drained(self, events: int, timeout_s: float) -> float | None:
        """Wait until X answered all `events`: the seconds it took, None after `timeout_s`."""
        started = time.monotonic()
        while await self.x_conversions() < events:
            if time.monotonic() - started > timeout_s:
                return None
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def deliveries(self, state: str) -> list[dict[str, object]]:
        """Every delivery in `state`, from the results API, page after page."""
        items: list[dict[str, object]] = []
        url = f"{self.api}/api/v1/deliveries?state={state}&limit=10000"
        cursor = ""
        while True:
            async with self.session.get(url + cursor, headers=workload.api_headers()) as answer:
                page = await answer.json()
            items += page["items"]
            if "next" not in page:
                return items
            cursor = f"&cursor={page['next']}"

    async def replay(self, ids: list[int]) -> int:
        """Dead deliveries sent again, as an operator would; how many were."""
        url = f"{self.api}/api/v1/deliveries/replay"
        async with self.session.post(
            url, json={"ids": ids}, headers=workload.api_headers()
        ) as answer:
            if answer.status != 200:
                raise RuntimeError(f"POST {url}: {answer.status} {await answer.text()}")
            return int((await answer.json())["replayed"])

    async def queue_depth(self) -> dict[str, float]:
        """The daemon's `postbackd_queue_depth` gauge by state."""
        async with self.session.get(f"{self.api}/metrics") as answer:
            text = await answer.text()
        prefix = 'postbackd_queue_depth{state="'
        depth = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                state, _, value = line[len(prefix) :].partition('"} ')
                depth[state] = float(value)
        return depth

    async def x_config(self, **changes: object) -> None:
        async with self.session.patch(f"{self.x_url}/_mock/config", json=changes) as answer:
            if answer.status != 200:
                raise RuntimeError(f"PATCH /_mock/config: {await answer.text()}")

    async def x_reset(self) -> None:
        async with self.session.post(f"{self.x_url}/_mock/reset") as answer:
            answer.raise_for_status()

    def client(self, name: str, module: str, *args: str) -> Proc:
        return start_client(self.work_dir, name, module, *args)

    def loadgen(self, name: str, mode: str, *args: str) -> Proc:
        events = ",".join(self.setup.event_names)
        common = ["--url", self.api, "--mock", self.x_url, "--app", self.setup.app_id]
        return self.client(name, "loadgen", mode, *common, "--events", events, *args)

    def burst(self, total: int, batch: int, concurrency: int, run: int) -> Proc:
        """The load generator sending `total` events as fast as they are accepted."""
        return self.loadgen(
            "loadgen", "burst", "--total", str(total), "--batch", str(batch),
            "--concurrency", str(concurrency), "--run", str(run),
        )  # fmt: skip

    @staticmethod
    async def result(proc: Proc, timeout_s: float | None) -> dict[str, float]:
        return await result_of(proc, timeout_s)


def _fresh(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)


@contextlib.asynccontextmanager
async def stack(
    work_dir: Path,
    *,
    accounts: int = 1,
    mock: Mapping[str, object] | None = None,
    daemon: Mapping[str, object] | None = None,
    delay_s: int = 0,
    tmpfs_mib: int | None = None,
) -> AsyncIterator[Stack]:
    """Start the simulated X (rate limit off unless `mock` sets one) and the daemon with
    `daemon` settings (POSTBACKD_* names, lower case), then configure it with `accounts` X
    accounts. With `tmpfs_mib` (root only), the daemon's data dir is a tmpfs of that size,
    unmounted once the processes stopped. The work directory is removed at the end, or kept
    with the processes' logs when the run failed."""
    _fresh(work_dir)
    data_dir = work_dir / "data"
    members = workload.accounts(accounts)
    mock_settings = {"rate_limit": UNLIMITED, "request_log_max": _LOG_MAX, **(mock or {})}
    daemon_settings = {"rate_limit_requests": UNLIMITED, **(daemon or {})}
    procs: list[Proc] = []
    if tmpfs_mib is not None:
        diskfull.mount_tmpfs(data_dir, tmpfs_mib)
    try:
        async with aiohttp.ClientSession() as session:
            x_proc, x_url = await launch(
                session,
                lambda port: start_mock(work_dir, port, members, **mock_settings),
                "/_mock/stats",
            )
            procs.append(x_proc)
            daemon_proc, api = await launch(
                session,
                lambda port: start_daemon(work_dir, port, x_url, **daemon_settings),
                "/readyz",
            )
            procs.append(daemon_proc)
            setup = await configure(session, api, members, delay_s=delay_s)
            found = Stack(work_dir, session, x_proc, x_url, daemon_proc, api, setup)
            await found.x_reset()  # account checks are not claims
            yield found
    finally:
        for proc in reversed(procs):
            proc.stop()
        if tmpfs_mib is not None:
            diskfull.unmount(data_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
