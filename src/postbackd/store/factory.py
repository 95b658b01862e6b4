"""The store that `database_url` names (PRODUCT.md 5): the embedded SQLite store in the data
dir, or a shared one. A shared store's module is imported only when it is named, so a daemon
on the embedded store never loads its driver."""

from __future__ import annotations

from collections.abc import Callable

from postbackd.settings import Settings
from postbackd.store.base import Store
from postbackd.store.embedded import EmbeddedStore


def create_store(
    settings: Settings,
    *,
    on_error: Callable[[str], None] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> Store:
    """The store of `settings.database_url`, not opened yet. `on_error(kind)` is told of
    every write that failed for the store's sake; `on_fatal(error)` when the store cannot
    go on (the daemon exits non-zero for its supervisor to restart it)."""
    database = settings.database
    if database.kind == "sqlite":
        return EmbeddedStore(
            settings.data_dir,
            secret_keys=settings.secret_keys,
            on_error=on_error,
            on_fatal=on_fatal,
        )
    from postbackd.store import postgres  # loads asyncpg: only for a PostgreSQL URL

    return postgres.create(database, settings, on_error=on_error, on_fatal=on_fatal)
