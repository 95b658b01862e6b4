"""Scenario 7's faults, rotating over time, and its configuration changes.

Four fixed X accounts take turns at being unhealthy, in cycles of `Plan.cycle_s` between
`Plan.start_s` and `Plan.end_s` (seconds since the load started); the other accounts are never
touched. Within a cycle (shares of its length, `PHASES`):

- slow: X answers it later than the daemon's `x_timeout_s`, then slower than usual but
  within it;
- throttled: X holds it to a small window (`Plan.throttle`) while the daemon keeps its
  default budget, so it must learn the limit from X's rate-limit headers;
- revoked: X answers its requests 401 (`revoke_tokens`); at the end of the phase X takes the
  tokens back (`restore_tokens`) and the operator authenticates the account again through
  the admin API, which releases its held deliveries;
- flaky: X answers half of its requests with a 5xx;
- disk full (when the data dir is a tmpfs of its own): a file takes every free byte for
  `DISK_FULL_S` seconds, then goes.

Besides, every `CHURN_S` seconds the configuration changes through the admin API, as an
operator's edits would: a spare app created, the tracker renamed, the spare app deleted, a
healthy account's postback given another retry count, in turn. None changes where or how an
event of the load is sent; each makes the daemon rebuild its configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from benchmarks import workload
from benchmarks.diskfull import Filler
from benchmarks.stack import Stack

# When each account's fault is on, as shares of a cycle: [from, to).
PHASES: Final = {
    "slow_above": (0.00, 0.30),
    "slow_below": (0.30, 0.50),
    "throttled": (0.15, 0.50),
    "revoked": (0.25, 0.55),
    "flaky": (0.45, 0.80),
}
DISK_FULL_FROM: Final = 0.60  # share of the cycle
DISK_FULL_S: Final = 20.0
CHURN_S: Final = 10.0
_TICK_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Roles:
    """The X account ids of the four unhealthy accounts."""

    slow: str
    throttled: str
    flaky: str
    revoked: str

    def by_account(self) -> dict[str, str]:
        return {
            self.slow: "slow",
            self.throttled: "throttled",
            self.flaky: "flaky",
            self.revoked: "revoked",
        }


@dataclass(frozen=True, slots=True)
class Plan:
    start_s: float
    end_s: float
    cycle_s: float
    disk_full: bool
    slow_above_ms: float  # above the daemon's x_timeout_s
    slow_below_ms: float  # below it
    throttle: tuple[int, float]  # X's requests per window, and the window in seconds

    def active(self, t_s: float) -> frozenset[str]:
        """The faults on at `t_s` seconds since the load started."""
        if not self.start_s <= t_s < self.end_s:
            return frozenset()
        into_s = (t_s - self.start_s) % self.cycle_s
        share = into_s / self.cycle_s
        on = {name for name, (begin, end) in PHASES.items() if begin <= share < end}
        full_from_s = DISK_FULL_FROM * self.cycle_s
        if self.disk_full and full_from_s <= into_s < full_from_s + DISK_FULL_S:
            on.add("disk_full")
        return frozenset(on)

    def account_faults(self, on: frozenset[str], roles: Roles) -> dict[str, dict[str, object]]:
        """The simulated X's `account_faults` for the faults `on` (the whole mapping: a PATCH
        replaces it)."""
        faults: dict[str, dict[str, object]] = {}
        if "slow_above" in on:
            faults[roles.slow] = {"latency": f"fixed:{self.slow_above_ms:g}"}
        elif "slow_below" in on:
            faults[roles.slow] = {"latency": f"fixed:{self.slow_below_ms:g}"}
        if "throttled" in on:
            limit, window_s = self.throttle
            faults[roles.throttled] = {"rate_limit": limit, "rate_window_s": window_s}
        if "flaky" in on:
            faults[roles.flaky] = {"error_rate": 0.5}
        return faults

    def describe(self) -> str:
        cycles = (self.end_s - self.start_s) / self.cycle_s
        shares = ", ".join(
            f"{name} {begin * self.cycle_s:g}-{end * self.cycle_s:g} s"
            for name, (begin, end) in PHASES.items()
        )
        text = (
            f"faults from {self.start_s:g} s to {self.end_s:g} s of the load, {cycles:g} "
            f"cycle(s) of {self.cycle_s:g} s: {shares}"
        )
        if self.disk_full:
            full_from_s = DISK_FULL_FROM * self.cycle_s
            text += f", disk full {full_from_s:g}-{full_from_s + DISK_FULL_S:g} s"
        return text + " into each cycle"


@dataclass(slots=True)
class Rotation:
    """Drives the plan while the load runs: `running()` applies it every second and changes
    the configuration every `CHURN_S` seconds; at its end every fault is lifted, whatever
    happened."""

    stack: Stack
    plan: Plan
    roles: Roles
    filler: Filler | None
    started: float  # time.monotonic() when the load started
    # Times each fault was switched on; configuration changes by result.
    switched_on: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    # Each disk-full interval: when the space was taken and when given back (epoch seconds).
    disk_full_spans: list[tuple[float, float]] = field(default_factory=list)
    _on: frozenset[str] = frozenset()
    _faults: dict[str, dict[str, object]] = field(default_factory=dict)
    _needs_auth: bool = False

    async def _tick(self) -> None:
        on = self.plan.active(time.monotonic() - self.started)
        faults = self.plan.account_faults(on, self.roles)
        if faults != self._faults:
            await self.stack.x_config(account_faults=faults)
            self._faults = faults
        for name in on - self._on:
            self.switched_on[name] += 1
        revoked = self.roles.revoked
        if "revoked" in on - self._on:
            await self.stack.x_config(revoke_tokens=[revoked])
        elif "revoked" in self._on - on:
            await self.stack.x_config(restore_tokens=[revoked])
            self._needs_auth = True
        if self._needs_auth:
            # Refused while the disk is full, say: tried again at the next tick.
            self._needs_auth = not await self._authenticate()
        if self.filler is not None:
            if "disk_full" in on - self._on:
                self.disk_full_spans.append((time.time(), math.inf))
                await asyncio.to_thread(self.filler.fill)
            elif "disk_full" in self._on - on:
                await self._free_disk()
        self._on = on

    async def _free_disk(self) -> None:
        if self.filler is None:
            return
        await asyncio.to_thread(self.filler.free)
        if self.disk_full_spans and self.disk_full_spans[-1][1] == math.inf:
            self.disk_full_spans[-1] = (self.disk_full_spans[-1][0], time.time())

    async def _authenticate(self) -> bool:
        s = self.stack
        url = f"{s.api}/api/v1/x-accounts/{self.roles.revoked}/authenticate"
        async with s.session.post(url, headers=workload.api_headers()) as answer:
            body = await answer.json(content_type=None)
        return answer.status == 200 and isinstance(body, dict) and body.get("authenticated") is True

    async def _rotate(self) -> None:
        while True:
            await self._tick()
            await asyncio.sleep(_TICK_S)

    async def _churn(self) -> None:
        churn = await Churn.of(self.stack)
        for n in range(1_000_000):
            await asyncio.sleep(CHURN_S)
            if time.monotonic() - self.started >= self.plan.end_s:
                return
            self.changes[await churn.change(n)] += 1

    async def lift(self) -> None:
        """Every fault off: X's accounts as configured, the revoked account's tokens back and
        authenticated, the disk's space given back."""
        s = self.stack
        await self._free_disk()
        await s.x_config(account_faults={}, restore_tokens=[self.roles.revoked])
        self._faults = {}
        for _ in range(30):
            if await self._authenticate():
                break
            await asyncio.sleep(_TICK_S)
        else:
            raise RuntimeError(f"account {self.roles.revoked} could not be authenticated again")
        self._on = frozenset()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rotation]:
        tasks = [asyncio.create_task(self._rotate()), asyncio.create_task(self._churn())]
        try:
            yield self
            for task in tasks:
                if task.done():
                    task.result()  # a rotation that failed fails the scenario
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.lift()


@dataclass(slots=True)
class Churn:
    """The operator's edits, in turn; none touches where or how an event of the load goes."""

    stack: Stack
    tracker_id: str
    postback_id: str  # a healthy account's
    spare_apps: list[str] = field(default_factory=list)

    @classmethod
    async def of(cls, s: Stack) -> Churn:
        headers = workload.api_headers()
        async with s.session.get(f"{s.api}/api/v1/trackers", headers=headers) as answer:
            tracker_id = str((await answer.json())["items"][0]["id"])
        async with s.session.get(f"{s.api}/api/v1/postbacks", headers=headers) as answer:
            postbacks = (await answer.json())["items"]
        # The first account is healthy in scenario 7 (and signs the tracker).
        first = workload.accounts(1)[0].id
        postback_id = next(str(p["id"]) for p in postbacks if p.get("x_account_id") == first)
        return cls(s, tracker_id, postback_id)

    async def change(self, n: int) -> str:
        """Make the n-th change; its result: done, refused_503 (the store could not write,
        as while the disk is full) or failed_STATUS."""
        turn = n % 4
        if turn == 2 and not self.spare_apps:
            turn = 1  # the spare app could not be made: rename the tracker instead
        if turn == 0:
            body: dict[str, object] | None = {
                "name": f"Soak spare {n}",
                "platform": "ios",
                "bundle_id": str(100_000 + n),
            }
            method, path = "POST", "apps"
        elif turn == 1:
            method, path = "PATCH", f"trackers/{self.tracker_id}"
            body = {"name": f"Bench reengagement {n}"}
        elif turn == 2:
            method, path, body = "DELETE", f"apps/{self.spare_apps.pop()}", None
        else:
            method, path = "PATCH", f"postbacks/{self.postback_id}"
            body = {"retry_attempts": 3 + n // 4 % 2}
        s = self.stack
        url = f"{s.api}/api/v1/{path}"
        try:
            async with s.session.request(
                method, url, json=body, headers=workload.api_headers()
            ) as answer:
                status = answer.status
                made = await answer.json(content_type=None) if status == 201 else None
        except (aiohttp.ClientError, ValueError):
            return "failed"
        if isinstance(made, dict) and turn == 0:
            self.spare_apps.append(str(made["id"]))
        if status < 300:
            return "done"
        return "refused_503" if status == 503 else f"failed_{status}"
