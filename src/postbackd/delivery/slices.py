"""Rate budgets shared by the daemons of one store (PRODUCT.md 5): all of them together stay
within each X account's window.

The store keeps one row per account for its current window (store/base.py, "Rate
budgets"). A daemon sends only out of a slice it took from that row: `SliceBudget.try_take`
spends the slice locally, with no store call, and asks for the next one before it runs out.
`BudgetSync`, one task of the engine, talks to the store: it takes the slices asked for,
carries X's rate-limit headers to the row (so every daemon sees what X counts), gives back
a slice left unspent for a while and, at stop, all that is left. A slice is spent only in
its window: once the window ended, or the row moved on to X's next window, what is left of
it is void (the row's new window starts from what X counts), so nothing goes back then.

The hot path stays cheap: a slice holds about `TARGET_S` of what the daemon spends, so a
busy account asks the store a few times per second, and corrections ride along with the
takes or go at most every `TARGET_S` (a 429 at once). The daemon's own `AccountBudget`
applies too: X's headers as this daemon reads them stop it at once, between two calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from postbackd.errors import StoreUnavailable
from postbackd.logs import RateLimitedLog
from postbackd.store.base import BudgetGrant, Store

from .ratelimit import AccountBudget

log = logging.getLogger(__name__)

# A slice lasts about this long at the rate the daemon spends: the store is asked a few
# times per second per busy account, never per request.
TARGET_S: Final = 0.25
# The next slice is asked for when this share of the last one is left, so that the lane
# rarely waits for the store.
LOW_WATER: Final = 0.25
# A slice left unspent this long goes back to the row, for the daemons that have work.
IDLE_RETURN_S: Final = 1.0
# A window found spent is asked again this often until it ends: slices that other daemons
# gave back (unspent, or at their stop) are spent in their window.
RECHECK_S: Final = 0.5
# While waiting for a slice the lane is woken by its arrival; this is only a backstop.
ASK_WAIT_S: Final = 1.0
# After the store failed, the next try.
RETRY_S: Final = 1.0
# At stop, giving back what is left may take this long at most (the store may be gone).
CLOSE_TIMEOUT_S: Final = 5.0

# X's headers as they arrived: (limit, remaining, reset_ms, limited).
Correction = tuple[int | None, int | None, int | None, bool]


class SliceBudget:
    """An account's budget on a shared store: the lane's `try_take`, `give_back`, `observe`
    and `block_until`, as `AccountBudget` has them, spending slices of the shared row."""

    __slots__ = (
        "_clock", "_sync", "account_id", "asked_at", "asking", "correction", "end_ms",
        "exhausted_until_ms", "left", "local", "size", "spent_at", "window_no",
    )  # fmt: skip

    def __init__(
        self, account_id: str, local: AccountBudget, sync: BudgetSync, clock: Callable[[], float]
    ) -> None:
        self.account_id = account_id
        self.local = local
        self._sync = sync
        self._clock = clock  # epoch seconds, as the local budget's
        self.left = 0  # requests of the slice in hand
        self.window_no = 0
        self.end_ms = 0  # the slice is void from here on
        self.exhausted_until_ms = 0  # the row had nothing left until then
        self.size = sync.initial_size
        self.asking = False  # a take is wanted or under way
        self.asked_at: float | None = None  # monotonic, of the last take
        self.spent_at = 0.0  # monotonic, of the last request spent
        self.correction: Correction | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def try_take(self) -> float:
        """0.0 when a request may go now (taken from the slice), else the seconds to wait."""
        now_ms = self._now_ms()
        if self.left > 0 and now_ms >= self.end_ms:
            self.left = 0  # void with its window
        if self.left <= 0:
            if now_ms < self.exhausted_until_ms:
                return (self.exhausted_until_ms - now_ms) / 1000
            self._sync.ask(self)
            return ASK_WAIT_S
        wait_s = self.local.try_take()
        if wait_s > 0:
            return wait_s
        self.left -= 1
        self.spent_at = time.monotonic()
        if self.left <= self.size * LOW_WATER:
            self._sync.ask(self)
        return 0.0

    def give_back(self) -> None:
        """A taken request that was never sent (kept for its window only)."""
        self.local.give_back()
        if self._now_ms() < self.end_ms:
            self.left += 1

    def observe(
        self,
        limit: int | None,
        remaining: int | None,
        reset_epoch_s: float | None,
        *,
        limited: bool = False,
    ) -> None:
        self.local.observe(limit, remaining, reset_epoch_s, limited=limited)
        reset_ms = None if reset_epoch_s is None else int(reset_epoch_s * 1000)
        self.correction = _merge(self.correction, (limit, remaining, reset_ms, limited))
        self._sync.corrected(self, urgent=limited)

    def block_until(self, reset_epoch_s: float | None) -> None:
        """After a 429: the slice in hand is void too (X counts more than the row knew);
        the row learns it with the 429's headers (`observe`)."""
        self.local.block_until(reset_epoch_s)
        self.left = 0
        until = self.local.reset_at
        if until is not None:
            self.exhausted_until_ms = max(self.exhausted_until_ms, int(until * 1000))

    def want(self) -> int:
        """The size of the next slice: doubled when the last lasted less than TARGET_S,
        halved when it lasted far longer (the rate the daemon spends at)."""
        now = time.monotonic()
        if self.asked_at is not None:
            lasted_s = now - self.asked_at
            if lasted_s < TARGET_S:
                self.size = min(self.size * 2, self._sync.cap)
            elif lasted_s > 4 * TARGET_S:
                self.size = max(self._sync.initial_size, self.size // 2)
        self.asked_at = now
        return self.size

    def receive(self, grant: BudgetGrant) -> None:
        """The store's answer: a slice (possibly empty) and the row's window."""
        if grant.window_no != self.window_no:
            self.left = 0  # a slice of another window is void
            self.window_no = grant.window_no
        self.end_ms = grant.window_end_ms
        self.left += grant.granted
        self.spent_at = time.monotonic()  # unspent from now on
        if grant.granted == 0 and self.left == 0:
            recheck_ms = int(self._clock() * 1000 + RECHECK_S * 1000)
            self.exhausted_until_ms = min(grant.window_end_ms, recheck_ms)

    def adopt(self, row: BudgetGrant) -> None:
        """The row's window after a correction: a slice of another window is void."""
        if row.window_no != self.window_no:
            self.left = 0
            self.window_no = row.window_no
        self.end_ms = row.window_end_ms


def _merge(pending: Correction | None, new: Correction) -> Correction:
    """What the row must learn of two answers: the later window's, and in one window the
    lower remaining (answers arrive out of order); a 429 of that window stays one."""
    if pending is None:
        return new
    p_reset, n_reset = pending[2], new[2]
    if n_reset is not None and (p_reset is None or n_reset > p_reset):
        return new
    if p_reset is not None and (n_reset is None or n_reset < p_reset):
        return pending if n_reset is not None else (new[0], pending[1], p_reset, pending[3])
    remaining = [r for r in (pending[1], new[1]) if r is not None]
    return (new[0], min(remaining, default=None), p_reset, pending[3] or new[3])


class BudgetSync:
    """The slices' one task: takes, corrections and returns, account after account."""

    def __init__(
        self,
        store: Store,
        cap: int,
        window_s: float,
        wake: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.cap = cap
        self._window_ms = int(window_s * 1000)
        self._wake = wake  # the lane of an account that got a slice
        self._clock = clock
        self.initial_size = max(1, math.ceil(cap * TARGET_S / window_s))
        self._budgets: dict[str, SliceBudget] = {}
        self._due: set[str] = set()
        self._flushed_at: dict[str, float] = {}
        self._event = asyncio.Event()
        self._warn = RateLimitedLog(log)

    def get(self, account_id: str) -> SliceBudget:
        budget = self._budgets.get(account_id)
        if budget is None:
            local = AccountBudget(self.cap, self._window_ms / 1000, self._clock)
            budget = self._budgets[account_id] = SliceBudget(account_id, local, self, self._clock)
        return budget

    def ask(self, budget: SliceBudget) -> None:
        if not budget.asking:
            budget.asking = True
            self._due.add(budget.account_id)
            self._event.set()

    def corrected(self, budget: SliceBudget, *, urgent: bool) -> None:
        """A correction to carry to the row: at once after a 429, else within TARGET_S
        (an account already due is flushed by its next turn, no wake per answer)."""
        if urgent:
            self._flushed_at.pop(budget.account_id, None)
        elif budget.account_id in self._due:
            return
        self._due.add(budget.account_id)
        self._event.set()

    async def run(self) -> None:
        while True:
            self._event.clear()
            pause_s = await self._round()
            if pause_s is None:
                await self._event.wait()
            else:
                # Not wait_for: in Python 3.11 it swallows a cancellation that comes as the
                # event is set, and the engine's stop would wait for this task forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause_s):
                        await self._event.wait()

    async def _round(self) -> float | None:
        """Serve every account due now; how long until one is due again (None: woken)."""
        now = time.monotonic()
        pause_s: float | None = None
        for account_id in list(self._due):
            budget = self._budgets.get(account_id)
            if budget is None:
                self._due.discard(account_id)
                continue
            try:
                later_s = await self._serve(budget, now)
            except StoreUnavailable as exc:
                self._warn.warning("budgets", f"could not share the rate budgets: {exc}")
                later_s = RETRY_S
            if later_s is None:
                self._due.discard(account_id)
            else:
                pause_s = later_s if pause_s is None else min(pause_s, later_s)
        for budget in list(self._budgets.values()):
            # A slice left unspent goes back for the daemons that have work.
            if budget.left > 0 and not budget.asking:
                idle_s = now - budget.spent_at
                if idle_s >= IDLE_RETURN_S:
                    count, budget.left = budget.left, 0
                    with contextlib.suppress(StoreUnavailable):
                        await self._store.return_budget(budget.account_id, budget.window_no, count)
                else:
                    wait_s = IDLE_RETURN_S - idle_s
                    pause_s = wait_s if pause_s is None else min(pause_s, wait_s)
        return pause_s

    async def _serve(self, budget: SliceBudget, now: float) -> float | None:
        """Flush the account's correction (with a take, or once TARGET_S passed since the
        last) and take its slice; None when nothing is left to do for it."""
        account_id = budget.account_id
        if budget.correction is not None:
            flushed_at = self._flushed_at.get(account_id)
            if budget.asking or flushed_at is None or now - flushed_at >= TARGET_S:
                limit, remaining, reset_ms, limited = budget.correction
                row = await self._store.correct_budget(
                    account_id, limit, remaining, reset_ms, self._now_ms(), self.cap,
                    limited=limited,
                )  # fmt: skip
                budget.correction = None
                self._flushed_at[account_id] = now
                budget.adopt(row)
        if budget.asking:
            grant = await self._store.take_budget(
                account_id, budget.want(), self._now_ms(), self.cap, self._window_ms
            )
            budget.asking = False
            budget.receive(grant)
            self._wake(account_id)
        if budget.correction is not None:
            return TARGET_S
        return None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def close(self) -> None:
        """Give back every slice left (stop): the other daemons spend it in this window."""
        left = [(b.account_id, b.window_no, b.left) for b in self._budgets.values() if b.left > 0]
        for budget in self._budgets.values():
            budget.left = 0
        if not left:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                for account_id, window_no, count in left:
                    await self._store.return_budget(account_id, window_no, count)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("rate budget slices not given back (they end with their window): %s", exc)
