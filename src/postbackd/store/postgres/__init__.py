"""The shared store on PostgreSQL (PRODUCT.md 5): many daemons on one database, work spread
by leases, no coordinator of their own. Everything here speaks SQL through asyncpg, which is
imported only when a PostgreSQL `database_url` is configured (`create` imports it).

One parameter of `database_url` is postbackd's own, not the driver's (as `claim_idle_s` is
in `event_stream_url`): `lease_s`, how long a daemon's lease on a delivery lasts (default
30 s): how soon a dead daemon's deliveries go out again from the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from postbackd.errors import PostbackdError

if TYPE_CHECKING:
    from postbackd.settings import Settings
    from postbackd.store.base import Store
    from postbackd.store.url import DatabaseUrl

# Long against a pause of the daemon (a slow commit, a busy loop), short enough that a dead
# daemon's work goes out again soon.
DEFAULT_LEASE_S: Final = 30.0
# Renewed at a third of it: below a second, a busy daemon could lose its leases.
MIN_LEASE_S: Final = 3.0


class BadDatabaseUrl(PostbackdError):
    pass


def create(
    database: DatabaseUrl,
    settings: Settings,
    *,
    on_error: Callable[[str], None] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> Store:
    """An unopened `PostgresStore` for `database` (store/factory.py calls this)."""
    from .store import PostgresStore

    database, lease_s = own_parameters(database)
    return PostgresStore(
        database,
        secret_keys=settings.secret_keys,
        lease_s=lease_s,
        on_error=on_error,
        on_fatal=on_fatal,
    )


def own_parameters(database: DatabaseUrl) -> tuple[DatabaseUrl, float]:
    """`database` without postbackd's own parameters, and the lease time they give."""
    parts = urlsplit(database.url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in pairs if k == "lease_s"]
    if not given:
        return database, DEFAULT_LEASE_S
    try:
        lease_s = float(given[-1])
    except ValueError:
        lease_s = math.nan
    if len(given) > 1 or not math.isfinite(lease_s) or lease_s < MIN_LEASE_S:
        raise BadDatabaseUrl(
            f"database_url: lease_s must be given once, a number of seconds of at least "
            f"{MIN_LEASE_S:g}, not {given[-1]!r}"
        )
    query = urlencode([(k, v) for k, v in pairs if k != "lease_s"])
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return dataclasses.replace(database, url=url), lease_s
