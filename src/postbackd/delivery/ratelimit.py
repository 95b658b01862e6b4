"""Request budgets, one per X account (PRODUCT.md 2, "Rate limits").

X counts requests per OAuth token in fixed windows and tells the state of the window in every
answer, a 429 included: `x-rate-limit-limit`, `x-rate-limit-remaining`, and
`x-rate-limit-reset`, the epoch second at which the window restarts. The local budget spends
before sending, so concurrent requests never overshoot, and X's headers correct it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Budget(Protocol):
    """What a lane asks of an account's budget: `AccountBudget` (this daemon's alone), or a
    `SliceBudget` (delivery/slices.py) when the daemons of a shared store share it."""

    def try_take(self) -> float: ...

    def give_back(self) -> None: ...

    def observe(
        self,
        limit: int | None,
        remaining: int | None,
        reset_epoch_s: float | None,
        *,
        limited: bool = False,
    ) -> None: ...

    def block_until(self, reset_epoch_s: float | None) -> None: ...


class AccountBudget:
    """A fixed window that opens at the first take and holds `limit` requests.

    The window's end is local until an answer of X names it ("confirmed"). X has one window at
    a time per token, so an answer whose reset is already past comes from an older window:
    answers arrive out of order under concurrency, and such an answer must not undo the
    current window. The configured limit is a cap: X's `x-rate-limit-limit` may lower the
    budget (and raise it again up to the cap), never raise it above what the operator set.
    """

    __slots__ = (
        "_cap", "_clock", "_confirmed", "_limit", "_pauses", "_remaining", "_reset_at",
        "_window_s",
    )  # fmt: skip

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self._cap = limit
        self._limit = limit
        self._window_s = window_s
        self._clock = clock  # epoch seconds: X's reset is an epoch second
        self._remaining = limit
        self._reset_at: float | None = None
        self._confirmed = False
        self._pauses = 0  # 429s in a row that named no reset ahead of our clock

    @property
    def remaining(self) -> int:
        return self._remaining if self._is_open(self._clock()) else self._limit

    @property
    def reset_at(self) -> float | None:
        """End of the current window in epoch seconds; None when no window is open."""
        return self._reset_at if self._is_open(self._clock()) else None

    def try_take(self) -> float:
        """Spend one request: 0.0 when it may go now, else the seconds to wait (> 0)."""
        now_s = self._clock()
        reset_at = self._reset_at
        if reset_at is None or now_s >= reset_at:
            reset_at = now_s + self._window_s
            self._start(reset_at, self._limit, confirmed=False)
        if self._remaining > 0:
            self._remaining -= 1
            return 0.0
        return reset_at - now_s

    def give_back(self) -> None:
        """Return a taken request that was never sent."""
        self._remaining = min(self._limit, self._remaining + 1)

    def observe(
        self,
        limit: int | None,
        remaining: int | None,
        reset_epoch_s: float | None,
        *,
        limited: bool = False,
    ) -> None:
        """Correct the budget from the rate-limit headers of any answer of X (None: absent);
        `limited` for a 429, which `block_until` then handles."""
        if not limited:
            self._pauses = 0
        now_s = self._clock()
        if limit is not None and limit > 0:  # a limit of 0 would stall the account forever
            limit = min(limit, self._cap)
            if limit > self._limit and self._is_open(now_s):
                # X raised the limit: the difference is there to use in this window already.
                self._remaining += limit - self._limit
            self._limit = limit
            self._remaining = min(self._remaining, limit)
        x_remaining = None if remaining is None else max(0, remaining)
        if reset_epoch_s is None or self._is_current(reset_epoch_s, now_s):
            # The same window: requests still in flight are spent locally but not yet counted
            # by X, so the lower count is the true one.
            if x_remaining is not None and self._is_open(now_s):
                self._remaining = min(self._remaining, x_remaining)
            if reset_epoch_s is not None:
                self._reset_at, self._confirmed = reset_epoch_s, True
        elif self._is_newer(reset_epoch_s, now_s):
            # X has moved on to a window our count knows nothing of: X's count is the one.
            fresh = self._limit if x_remaining is None else min(self._limit, x_remaining)
            self._start(reset_epoch_s, fresh, confirmed=True)

    def block_until(self, reset_epoch_s: float | None) -> None:
        """After a 429: nothing is left until X's reset, or until the confirmed end of the
        window, or else a full window from now (PRODUCT.md 2: a 429 waits for the reset)."""
        now_s = self._clock()
        if reset_epoch_s is None:
            if self._confirmed and self._is_open(now_s):
                self._remaining = 0
            else:
                self._start(now_s + self._window_s, 0, confirmed=False)
        elif self._is_current(reset_epoch_s, now_s) or self._is_newer(reset_epoch_s, now_s):
            self._start(reset_epoch_s, 0, confirmed=True)
        elif self._confirmed and self._is_open(now_s):
            pass  # a late answer of an older window: the current one stands
        else:
            # X refused but names a reset that is not ahead of our clock (the clocks differ):
            # sending again at once would only be refused again, in a loop. Pause, longer at
            # each refusal in a row (1 s, 2 s, 4 s ...), never longer than a window.
            self._pauses += 1
            pause_s = min(self._window_s, 2.0 ** min(self._pauses - 1, 30))
            self._start(now_s + pause_s, 0, confirmed=False)

    def _is_open(self, now_s: float) -> bool:
        return self._reset_at is not None and now_s < self._reset_at

    def _is_current(self, reset_epoch_s: float, now_s: float) -> bool:
        """X names the open window: its confirmed end, the first word on a local one, or an
        end sooner than we knew that has not passed (X's windows are X's to say; an answer
        of an older window names an end that has passed)."""
        if not self._is_open(now_s) or self._reset_at is None:
            return False
        return reset_epoch_s == self._reset_at or (
            now_s < reset_epoch_s and (not self._confirmed or reset_epoch_s < self._reset_at)
        )

    def _is_newer(self, reset_epoch_s: float, now_s: float) -> bool:
        """X names a window that has not ended and is later than ours (or ours has ended)."""
        return reset_epoch_s > now_s and (
            not self._is_open(now_s)
            or (self._reset_at is not None and reset_epoch_s > self._reset_at)
        )

    def _start(self, reset_at: float, remaining: int, *, confirmed: bool) -> None:
        self._reset_at, self._remaining, self._confirmed = reset_at, remaining, confirmed


class RateBudgets:
    """The budgets of all X accounts, created at first use; a limited account never delays
    another (PRODUCT.md 2). Memory grows with the accounts seen; `forget` drops one."""

    __slots__ = ("_budgets", "_clock", "_limit", "_window_s")

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._budgets: dict[str, AccountBudget] = {}

    def get(self, account_id: str) -> AccountBudget:
        budget = self._budgets.get(account_id)
        if budget is None:
            budget = self._budgets[account_id] = AccountBudget(
                self._limit, self._window_s, self._clock
            )
        return budget

    def forget(self, account_id: str) -> None:
        self._budgets.pop(account_id, None)
