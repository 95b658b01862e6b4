"""Small pieces of SQL every module of the PostgreSQL store shares."""

from __future__ import annotations

from typing import Final

# A pending delivery: what the leasing scan reads (the partial index deliveries_lane).
PENDING: Final = "state IN ('scheduled', 'ready')"


def affected(status: str) -> int:
    """The row count of a command tag such as `UPDATE 12` (asyncpg's `execute` answer)."""
    return int(status.rsplit(" ", 1)[1])
