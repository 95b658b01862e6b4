"""The shared store on PostgreSQL (PRODUCT.md 5): many daemons on one database, work spread
by leases, no coordinator of their own. Everything here speaks SQL through asyncpg, which is
imported only when a PostgreSQL `database_url` is configured (`create` imports it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postbackd.settings import Settings
    from postbackd.store.base import Store
    from postbackd.store.url import DatabaseUrl


def create(
    database: DatabaseUrl,
    settings: Settings,
    *,
    on_error: Callable[[str], None] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> Store:
    """An unopened `PostgresStore` for `database` (store/factory.py calls this)."""
    from .store import PostgresStore

    return PostgresStore(
        database, secret_keys=settings.secret_keys, on_error=on_error, on_fatal=on_fatal
    )
