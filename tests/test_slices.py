"""The daemon's side of shared rate budgets (delivery/slices.py), two daemons' budgets on one
real PostgreSQL store: requests go out only of slices taken from the account's row; a 429
seen by one daemon stops the other at its next slice; a daemon that stops gives back what
it did not send."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgproc import pg_server, pg_url
from postbackd.delivery.slices import BudgetSync, SliceBudget
from postbackd.store.postgres.store import PostgresStore
from postbackd.store.url import DatabaseUrl

__all__ = ["pg_server", "pg_url"]  # fixtures

LIMIT = 40
WINDOW_S = 60.0  # far longer than the test: every take falls in one window
NOW_S = 1_800_000_000.0


class Daemon:
    """One daemon's budgets: its own store connection and sync task."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.woken: asyncio.Queue[str] = asyncio.Queue()
        self.sync = BudgetSync(store, LIMIT, WINDOW_S, self.woken.put_nowait, lambda: NOW_S)
        self.task = asyncio.create_task(self.sync.run())

    async def take(self, budget: SliceBudget) -> bool:
        """One request's budget: True when it may go, False when the window has none left
        (waiting for a slice from the store when there is none in hand)."""
        for _ in range(10):
            wait_s = budget.try_take()
            if wait_s == 0:
                return True
            if budget.exhausted_until_ms > NOW_S * 1000:
                return False
            await asyncio.wait_for(self.woken.get(), timeout=30)
        raise AssertionError("no slice came")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.sync.close()


@pytest.fixture
async def daemons(pg_url: str) -> AsyncIterator[Callable[[], Any]]:
    started: list[Daemon] = []

    async def start() -> Daemon:
        store = PostgresStore(DatabaseUrl.parse(pg_url))
        await store.open()
        daemon = Daemon(store)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if not daemon.task.done():
            await daemon.stop()
        await daemon.store.close()


async def spend_all(daemon: Daemon, budget: SliceBudget) -> int:
    sent = 0
    while await daemon.take(budget):
        sent += 1
    return sent


async def test_two_daemons_together_spend_the_window_once(daemons: Any) -> None:
    a, b = await daemons(), await daemons()
    budget_a, budget_b = a.sync.get("acct"), b.sync.get("acct")
    assert await a.take(budget_a)
    sent_b = await spend_all(b, budget_b)
    sent_a = 1 + await spend_all(a, budget_a)
    assert sent_a + sent_b == LIMIT
    assert sent_b > 0


async def test_a_429_at_one_daemon_stops_the_other(daemons: Any) -> None:
    a, b = await daemons(), await daemons()
    budget_a, budget_b = a.sync.get("acct"), b.sync.get("acct")
    assert await a.take(budget_a)
    # X refused a's request: its window is spent until X's reset, for every daemon.
    reset_s = NOW_S + 30
    budget_a.observe(LIMIT, 0, reset_s, limited=True)
    budget_a.block_until(reset_s)
    assert budget_a.try_take() > 0
    await asyncio.wait_for(_flushed(a, budget_a), timeout=30)
    assert await spend_all(b, budget_b) == 0
    assert budget_b.end_ms == int(reset_s * 1000)


async def test_a_daemon_that_stops_gives_back_what_it_did_not_send(daemons: Any) -> None:
    a, b = await daemons(), await daemons()
    budget_a = a.sync.get("acct")
    assert await a.take(budget_a)
    # Its slice spent, a asked for the next one before it needs it.
    await asyncio.wait_for(a.woken.get(), timeout=30)
    assert budget_a.left > 0
    await a.stop()
    assert await spend_all(b, b.sync.get("acct")) == LIMIT - 1


async def _flushed(daemon: Daemon, budget: SliceBudget) -> None:
    while budget.correction is not None:
        await asyncio.sleep(0.01)


async def test_a_daemon_stops_while_it_asks_for_a_slice(daemons: Any) -> None:
    a = await daemons()
    budget_a = a.sync.get("acct")
    assert await a.take(budget_a)  # its first slice spent: it asks for the next at once
    await asyncio.wait_for(a.stop(), timeout=10)
