"""Connecting to PostgreSQL: a pool opened (and the schema migrated) at start, and the rule
that tells a failure of the store from a failure of the request (PRODUCT.md 2, "Store
failures").

At start, a database that cannot be reached (refused, unknown host, wrong password, no such
database, no answer) is a configuration to fix: one line naming the URL without its
password, and the daemon exits non-zero through its usual start-up failure. Later, a lost
connection or a server gone is a `StoreUnavailable` of kind `io_error`: ingest answers
503, `/readyz` turns 503, and the pool connects again by itself once the server is back.
"""

from __future__ import annotations

import logging
from typing import Final, TypeAlias

import asyncpg
import asyncpg.exceptions as pg
from asyncpg.pool import PoolConnectionProxy

from postbackd.errors import PostbackdError, StoreUnavailable
from postbackd.store.url import DatabaseUrl

from .migrations import migrate

log = logging.getLogger(__name__)

# A connection of its own or one lent by the pool: both run the same statements.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

CONNECT_TIMEOUT_S: Final = 10.0
# A statement that runs longer than this is a store that does not answer: the request fails
# with StoreUnavailable (busy) instead of hanging (PRODUCT.md 2: every request is answered).
COMMAND_TIMEOUT_S: Final = 30.0
APPLICATION_NAME: Final = "postbackd"
# Every exception the driver raises of its own (errors the server sent, and the driver's).
DRIVER_ERRORS: Final = (pg.PostgresError, pg.InterfaceError, pg.InternalClientError)
# Connections one daemon opens at most: ingest commits, result commits, leasing and reads
# share them; the LISTEN connection is apart.
POOL_SIZE: Final = 10


class DatabaseUnreachable(PostbackdError):
    """The database could not be reached at start; the message names it without password."""


async def open_pool(database: DatabaseUrl) -> asyncpg.Pool:
    """The schema migrated, then a pool of up to POOL_SIZE connections."""
    settings = {"application_name": APPLICATION_NAME}
    try:
        # The migrations get a connection of their own, without the pool's command timeout:
        # an upgrade may rewrite every stored row, and a daemon starting meanwhile waits at
        # the migration lock; both last as long as the tables are big (logged before).
        conn = await asyncpg.connect(
            database.url, timeout=CONNECT_TIMEOUT_S, server_settings=settings
        )
    except (OSError, TimeoutError, pg.PostgresError, pg.InterfaceError) as exc:
        raise _unreachable(exc, database) from None
    try:
        await migrate(conn)
    except BaseException as exc:
        failure = store_failure(exc)  # a full disk on the server: one line, not a traceback
        if failure is not None and failure is not exc:
            raise failure from exc
        raise
    finally:
        await conn.close()
    try:
        pool = await asyncpg.create_pool(
            database.url,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=settings,
        )
    except (OSError, TimeoutError, pg.PostgresError, pg.InterfaceError) as exc:
        raise _unreachable(exc, database) from None
    log.info("PostgreSQL store at %s, up to %d connections", database.shown, POOL_SIZE)
    return pool


def _unreachable(exc: BaseException, database: DatabaseUrl) -> DatabaseUnreachable:
    return DatabaseUnreachable(
        f"cannot reach the database {database.shown} (database_url): {_reason(exc, database)}"
    )


def _reason(exc: BaseException, database: DatabaseUrl) -> str:
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # Drivers quote what they were given; the password must not ride along.
    if database.password:
        reason = reason.replace(database.password, "***")
    return reason


def store_failure(exc: BaseException) -> StoreUnavailable | None:
    """The `StoreUnavailable` that `exc` amounts to, or None when it is not the store's fault
    (a bug, a constraint: the request's). Its kind is one of store/base.py's
    STORE_ERROR_KINDS."""
    if isinstance(exc, StoreUnavailable):
        return exc
    kind = _kind(exc)
    if kind is None:
        return None
    return StoreUnavailable(f"the store cannot write: {_describe(exc)}", kind=kind)


def _kind(exc: BaseException) -> str | None:
    if isinstance(
        exc,
        pg.PostgresConnectionError  # class 08: the connection broke or could not be made
        | pg.CannotConnectNowError  # starting up, shutting down, in recovery
        | pg.AdminShutdownError
        | pg.CrashShutdownError
        | pg.ReadOnlySQLTransactionError  # a standby after a failover: no writes here
        | ConnectionError
        | OSError,
    ):
        return "io_error"  # store/base.py: a database that cannot be reached is an I/O error
    if isinstance(exc, pg.InterfaceError):
        # The driver's own: "connection is closed", "pool is closing", a connection lost
        # mid-query. A misuse of the API would be a bug, but none reaches here in practice.
        return "closed" if "closing" in str(exc) or "closed" in str(exc) else "io_error"
    if isinstance(
        exc,
        pg.TooManyConnectionsError
        | pg.TransactionRollbackError  # serialization failure, deadlock: try again
        | pg.LockNotAvailableError
        | pg.QueryCanceledError  # statement_timeout
        | TimeoutError,  # command_timeout
    ):
        return "busy"
    if isinstance(exc, pg.DiskFullError):
        return "disk_full"
    if isinstance(exc, pg.InsufficientResourcesError | pg.PostgresSystemError):
        return "io_error"
    if isinstance(exc, pg.InternalServerError):
        # Corruption on the server (XX001, XX002): the server's to repair, not something
        # restarting this daemon would fix; counted, and answered 503 meanwhile.
        return "io_error"
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
