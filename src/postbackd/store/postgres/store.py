"""`PostgresStore`: the `Store` interface (store/base.py) on one PostgreSQL database that
many daemons share (PRODUCT.md 5).

- Every call borrows a connection of the pool for one statement or one transaction; the
  pool connects again by itself after the server came back.
- Results go through a group commit (`ResultWriter`): many small result batches, one
  transaction, each future resolved only after COMMIT.
- Store failures (PRODUCT.md 2): a lost connection, a server gone or refusing, a full disk
  raise `StoreUnavailable` with a kind (connect.store_failure); no asyncpg exception leaves
  the store. A write that fails so makes the store unhealthy (`/readyz` 503) until the next
  write succeeds; leasing counts as a write, so readiness follows the database within a
  loader pass, ingest or not.
- Configuration: a change committed by any daemon is announced (NOTIFY); `ConfigWatch`
  keeps a LISTEN connection of its own and checks the version after each reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import Any, Final, TypeVar

import asyncpg

from postbackd.delivery.model import NewDelivery, Result
from postbackd.errors import StoreUnavailable
from postbackd.event import Event
from postbackd.index import Index
from postbackd.logs import RateLimitedLog
from postbackd.store.base import (
    BudgetGrant,
    Change,
    Deleted,
    DeviceAttribution,
    HeldGroup,
    Key,
    LaneRead,
    LaneRows,
    Row,
    Stored,
)
from postbackd.store.sealing import Sealer
from postbackd.store.url import DatabaseUrl

from . import DEFAULT_LEASE_S, budgets, config, deliveries, leases, results, retention
from .connect import COMMAND_TIMEOUT_S, DRIVER_ERRORS, Conn, open_pool, store_failure
from .watch import ConfigWatch
from .writer import ResultWriter

log = logging.getLogger(__name__)

T = TypeVar("T")
# A failing store is logged once per this interval, not once per request.
FAILURE_LOG_INTERVAL_S: Final = 30.0


def owner_name() -> str:
    """This daemon's name on its leases: host and pid for an operator, and a random part
    so that a restarted process with the same pid never takes over a dead one's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class PostgresStore:
    def __init__(
        self,
        database: DatabaseUrl,
        *,
        secret_keys: Sequence[str] = (),
        lease_s: float = DEFAULT_LEASE_S,
        on_error: Callable[[str], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        owner: str | None = None,
    ) -> None:
        self._database = database
        self._sealer = Sealer(secret_keys)
        self._lease_s = lease_s
        self._on_error = on_error
        self._on_fatal = on_fatal
        self.owner = owner or owner_name()
        self._pool: asyncpg.Pool | None = None
        self._writer: ResultWriter | None = None
        self._watch: ConfigWatch | None = None
        self._failing = False
        self._closed = False
        self._size_bytes = 0
        self._warn = RateLimitedLog(log, FAILURE_LOG_INTERVAL_S)

    # --- life ----------------------------------------------------------------------------

    async def open(self) -> None:
        self._pool = await open_pool(self._database)
        self._writer = ResultWriter(
            partial(self._transaction, strict=False), on_fatal=self._on_fatal
        )
        self._writer.start()
        self._watch = ConfigWatch(self._database, self.owner)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._writer.close()
        if self._watch is not None:
            await self._watch.close()
        if self._pool is not None:
            try:
                # What this daemon still holds goes to the others now, not at lease expiry.
                async with self._pool.acquire(timeout=COMMAND_TIMEOUT_S) as conn:
                    released = await leases.release(conn, self.owner, None)
                if released:
                    log.info("%d leased deliveries given back for other daemons", released)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("leases not given back (they run out by themselves): %s", exc)
            try:
                # Connections still lent out (a call cut short) are not waited for forever.
                await asyncio.wait_for(self._pool.close(), timeout=COMMAND_TIMEOUT_S)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    @property
    def healthy(self) -> bool:
        return not self._failing and not self._closed

    async def size_bytes(self) -> int:
        """The database's size; once closed, the last one measured."""
        if not self._closed:
            self._size_bytes = int(
                await self._read(
                    lambda c: c.fetchval("SELECT pg_database_size(current_database())")
                )
            )
        return self._size_bytes

    # --- failures ------------------------------------------------------------------------

    async def _call(
        self, fn: Callable[[Conn], Awaitable[T]], *, write: bool, strict: bool = True
    ) -> T:
        """Run `fn` on a pooled connection; a failure of the store becomes StoreUnavailable
        (and, for a write, makes the store unhealthy until a write succeeds). Another error
        of the driver becomes StoreUnavailable too, unless `strict` is False: then it is
        raised as it is (the result writer tells a bad job from a failing store)."""
        if self._closed or self._pool is None:
            raise StoreUnavailable("the store is closed", kind="closed")
        try:
            async with self._pool.acquire(timeout=COMMAND_TIMEOUT_S) as conn:
                result = await fn(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = store_failure(exc)
            if failure is None:
                if not strict or not isinstance(exc, DRIVER_ERRORS):
                    raise
                # Not the store's fault (a constraint, a value out of range), but no
                # driver's exception leaves a store (store/base.py): the store's health
                # is not touched.
                raise StoreUnavailable(f"the store failed: {exc}", kind="io_error") from exc
            if write:
                self._failed(failure)
            raise failure from exc
        if write:
            self._recovered()
        return result

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await self._call(fn, write=False)

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await self._call(fn, write=True)

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]], strict: bool = True) -> T:
        async def run(conn: Conn) -> T:
            async with conn.transaction():
                return await fn(conn)

        return await self._call(run, write=True, strict=strict)

    def _failed(self, failure: StoreUnavailable) -> None:
        self._failing = True
        if self._on_error is not None:
            self._on_error(failure.kind)
        self._warn.warning(
            f"store:{failure.kind}",
            f"{failure.message}; ingest answers 503 store_unavailable until a write succeeds",
        )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("the PostgreSQL store at %s writes again", self._database.shown)

    # --- configuration -------------------------------------------------------------------

    async def seal_tokens(self) -> int:
        return await self._write(lambda c: config.seal_tokens(c, self._sealer))

    async def load_index(self) -> Index:
        index, version = await self._read(lambda c: config.load_index(c, self._sealer))
        if self._watch is not None:
            self._watch.seen(version)
        return index

    async def apply(self, changes: Sequence[Change]) -> int:
        version = await self._transaction(
            lambda c: config.apply(c, changes, self._sealer, self.owner)
        )
        if self._watch is not None:
            self._watch.seen(version)
        return version

    async def config_version(self) -> int:
        return await self._read(config.config_version)

    def watch_config(self, listener: Callable[[int], None]) -> None:
        assert self._watch is not None, "open the store first"
        self._watch.start(listener)

    # --- intake --------------------------------------------------------------------------

    async def accept(
        self, planned: Sequence[tuple[Event, Sequence[NewDelivery]]], now_ms: int
    ) -> Stored:
        # Other daemons lease what is accepted here like any other row: nothing is owned.
        fresh = await self._transaction(lambda c: deliveries.accept(c, planned, now_ms))
        return Stored(fresh, [])

    # --- the engine ----------------------------------------------------------------------

    @property
    def lease_s(self) -> float | None:
        return self._lease_s

    async def pending_lanes(self) -> list[str]:
        return await self._read(deliveries.pending_lanes)

    async def lease_due(
        self, reads: Sequence[LaneRead], now_ms: int, max_rows: int
    ) -> list[LaneRows]:
        lease_ms = int(self._lease_s * 1000)
        return await self._write(
            lambda c: leases.lease_due(c, self.owner, reads, now_ms, max_rows, lease_ms)
        )

    async def renew_leases(self, now_ms: int) -> None:
        lease_ms = int(self._lease_s * 1000)
        await self._write(lambda c: leases.renew(c, self.owner, now_ms, lease_ms))

    async def release_leases(self, ids: Collection[int]) -> None:
        if ids:
            await self._write(lambda c: leases.release(c, self.owner, ids))

    def write_results(self, results: Sequence[Result], now_ms: int) -> asyncio.Future[None]:
        if self._writer is None or self._closed:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(StoreUnavailable("the store is closed", kind="closed"))
            return future
        return self._writer.submit(results, now_ms)

    # --- rate budgets --------------------------------------------------------------------

    @property
    def budgets_shared(self) -> bool:
        return True

    async def take_budget(
        self, account_id: str, want: int, now_ms: int, cap: int, window_ms: int
    ) -> BudgetGrant:
        return await self._write(
            lambda c: budgets.take(c, account_id, want, now_ms, cap, window_ms)
        )

    async def return_budget(self, account_id: str, window_no: int, count: int) -> None:
        if count > 0:
            await self._write(lambda c: budgets.give_back(c, account_id, window_no, count))

    async def correct_budget(
        self,
        account_id: str,
        limit: int | None,
        remaining: int | None,
        reset_ms: int | None,
        now_ms: int,
        cap: int,
        *,
        limited: bool = False,
    ) -> BudgetGrant:
        return await self._write(
            lambda c: budgets.correct(
                c, account_id, limit, remaining, reset_ms, now_ms, cap, limited
            )
        )

    # --- holds, replay, cancel -------------------------------------------------------------

    async def held_groups(self) -> list[HeldGroup]:
        return await self._read(deliveries.held_groups)

    async def release_held(
        self, postback_id: str, x_account_id: str | None, lane: str, now_ms: int
    ) -> int:
        return await self._write(
            lambda c: deliveries.release_held(c, postback_id, x_account_id, lane, now_ms)
        )

    async def replay_dead(self, ids: Sequence[int] | None, now_ms: int) -> dict[str, int]:
        return await self._write(lambda c: deliveries.replay_dead(c, ids, now_ms))

    async def cancel(
        self,
        ids: Sequence[int] | None,
        postback_id: str | None,
        in_flight: Collection[int],
        now_ms: int,
    ) -> int:
        return await self._write(
            lambda c: deliveries.cancel(c, self.owner, ids, postback_id, in_flight, now_ms)
        )

    def watch_cancels(self, listener: Callable[[], None]) -> None:
        assert self._watch is not None, "open the store first"
        self._watch.on_cancels(listener)

    async def cancelled_among(self, ids: Sequence[int]) -> list[int]:
        return await self._read(lambda c: deliveries.cancelled_among(c, ids))

    async def pending_of_postback(self, postback_id: str) -> int:
        return await self._read(lambda c: deliveries.pending_of_postback(c, postback_id))

    async def count_by_state(self, now_ms: int) -> dict[str, int]:
        return await self._read(lambda c: deliveries.count_by_state(c, now_ms))

    async def device_attributions(
        self, app_id: str, device_keys: Sequence[str]
    ) -> dict[str, DeviceAttribution]:
        return await self._read(lambda c: deliveries.device_attributions(c, app_id, device_keys))

    # --- results reads -------------------------------------------------------------------

    async def list_deliveries(
        self,
        state: str | None,
        after: Key | None,
        limit: int,
        now_ms: int,
        in_flight: Collection[int] = (),
    ) -> list[Row]:
        return await self._read(
            lambda c: results.list_deliveries(c, state, after, limit, now_ms, in_flight)
        )

    async def event_details(
        self, event_id: str, now_ms: int, in_flight: Collection[int] = ()
    ) -> dict[str, Any] | None:
        return await self._read(lambda c: results.event_details(c, event_id, now_ms, in_flight))

    async def list_attributions(
        self, app_id: str | None, tracker_id: str | None, after: Key | None, limit: int
    ) -> list[Row]:
        return await self._read(
            lambda c: results.list_attributions(c, app_id, tracker_id, after, limit)
        )

    async def tracker_report(self, app_id: str | None) -> dict[str, dict[str, Any]]:
        return await self._read(lambda c: results.tracker_report(c, app_id))

    # --- retention -----------------------------------------------------------------------

    async def delete_events(self, cutoff_ms: int, after_id: int) -> Deleted:
        return await self._transaction(lambda c: retention.delete_events(c, cutoff_ms, after_id))

    async def delete_attributions(self, cutoff_ms: int) -> Deleted:
        return await self._transaction(lambda c: retention.delete_attributions(c, cutoff_ms))

    async def reclaim(self, pages: int) -> int:
        return 0  # autovacuum gives freed space back to new rows by itself
