"""Shared rate budgets (PRODUCT.md 5): one row per X account holds its current window (end,
limit, requests granted), and every daemon takes slices of it, so that all of them together
stay within the account's window. The row changes under its lock in one statement each (the
functions of the migration that created it), so that concurrent daemons never grant the
same request twice; X's headers correct it by the same rules as the local budget
(delivery/ratelimit.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from postbackd.store.base import BudgetGrant

if TYPE_CHECKING:
    from .connect import Conn

_TAKE: Final = "SELECT * FROM postbackd_take_budget($1, $2, $3, $4, $5)"
_CORRECT: Final = "SELECT * FROM postbackd_correct_budget($1, $2, $3, $4, $5, $6, $7)"
# A slice of a window that has moved on is void: its return changes nothing.
_RETURN: Final = """
UPDATE rate_budgets SET granted = GREATEST(granted - $3, 0)
WHERE account_id = $1 AND window_no = $2
"""


async def take(
    conn: Conn, account_id: str, want: int, now_ms: int, cap: int, window_ms: int
) -> BudgetGrant:
    row = await conn.fetchrow(_TAKE, account_id, want, now_ms, cap, window_ms)
    assert row is not None
    return BudgetGrant(int(row[0]), int(row[1]), int(row[2]))


async def give_back(conn: Conn, account_id: str, window_no: int, count: int) -> None:
    await conn.execute(_RETURN, account_id, window_no, count)


async def correct(
    conn: Conn,
    account_id: str,
    limit: int | None,
    remaining: int | None,
    reset_ms: int | None,
    now_ms: int,
    cap: int,
    limited: bool,
) -> BudgetGrant:
    row = await conn.fetchrow(
        _CORRECT, account_id, limit, remaining, reset_ms, now_ms, cap, limited
    )
    assert row is not None
    return BudgetGrant(0, int(row[0]), int(row[1]))
