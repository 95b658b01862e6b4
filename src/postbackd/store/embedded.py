"""The embedded store: one SQLite file in the data dir, held by one daemon (PRODUCT.md 2, "One
daemon per data dir"), behind the `Store` interface.

It only routes each operation to where it ran before the interface existed, so the hot path
pays nothing for it: writes are jobs of the `Writer`'s group commits (accept, results,
releases, cancels, retention), the engine's loads run on the writer's thread (ordered with
the commits), other reads on a `Reader`'s connections, configuration through its own
aiosqlite connection. One daemon holds the file, so leases are trivial: whatever this
process loads is its own until its result is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from postbackd.delivery.model import Delivery, NewDelivery, Result
from postbackd.errors import StoreUnavailable
from postbackd.event import Event
from postbackd.index import Index
from postbackd.store import config, results, retention
from postbackd.store import deliveries as sql
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
from postbackd.store.db import DB_NAME, open_database, prepare_data_dir
from postbackd.store.lock import DataDirLock
from postbackd.store.reader import Reader
from postbackd.store.sealing import Sealer, seal_stored_tokens
from postbackd.store.writer import Writer, store_failure

T = TypeVar("T")


def store_bytes(db_path: Path) -> int:
    """The database's files on disk: the database, its WAL and shared memory."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{db_path}{suffix}").stat().st_size
    return total


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return store_failure(exc) or StoreUnavailable(f"the store failed: {exc}", kind="io_error")


async def _guarded(call: Awaitable[T]) -> T:
    """A read's answer; a failure of SQLite as `StoreUnavailable` (the interface's rule)."""
    try:
        return await call
    except sqlite3.Error as exc:
        raise _unavailable(exc) from exc


class EmbeddedStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        secret_keys: Sequence[str] = (),
        on_error: Callable[[str], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self._lock = DataDirLock(data_dir)
        self._sealer = Sealer(secret_keys)
        self.writer = Writer(self.path, on_error=on_error, on_fatal=on_fatal)
        self.reader = Reader(self.path)
        self._conn: aiosqlite.Connection | None = None  # configuration reads and writes
        # Delivery ids, handed out on the writer's thread one commit after another.
        self._ids = itertools.count(1)
        self._version = 0
        self._opened = False
        self._closed = False

    # --- life ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            prepare_data_dir(self.data_dir)
            self._lock.acquire()
            self._conn = await open_database(self.data_dir)
            await self.writer.open()
            self._opened = True
            self._ids = itertools.count(await self.writer.call(sql.max_delivery_id) + 1)
        except BaseException as exc:
            await self.close()
            # A full disk or a broken file while opening (an upgrade rewrites rows): the
            # same one-line reason as a failed commit, not SQLite's traceback.
            failure = store_failure(exc)
            if failure is not None and failure is not exc:
                raise failure from exc
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._opened:
                await self.writer.close()
            await self.reader.close()
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
        finally:
            self._lock.release()

    @property
    def healthy(self) -> bool:
        return self.writer.healthy and not self._closed

    async def size_bytes(self) -> int:
        return store_bytes(self.path)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A read on a reader's connection (never waits for a commit)."""
        if self._closed:
            raise StoreUnavailable("the store is closed", kind="closed")
        return await _guarded(self.reader.call(fn, *args))

    async def _load(self, fn: Callable[..., T], *args: Any) -> T:
        """A read on the writer's thread: ordered with the commits."""
        if self._closed:
            raise StoreUnavailable("the store is closed", kind="closed")
        return await _guarded(self.writer.call(fn, *args))

    # --- configuration -------------------------------------------------------------------

    def _config(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is closed", kind="closed")
        return self._conn

    async def seal_tokens(self) -> int:
        return await _guarded(seal_stored_tokens(self._config(), self._sealer))

    async def load_index(self) -> Index:
        return await _guarded(config.load_index(self._config(), self._sealer))

    async def apply(self, changes: Sequence[Change]) -> int:
        await _guarded(config.apply(self._config(), changes, self._sealer))
        self._version += 1
        return self._version

    async def config_version(self) -> int:
        return self._version

    def watch_config(self, listener: Callable[[int], None]) -> None:
        """No other daemon writes this store's configuration: nothing to watch."""

    # --- intake --------------------------------------------------------------------------

    async def accept(
        self, planned: Sequence[tuple[Event, Sequence[NewDelivery]]], now_ms: int
    ) -> Stored:
        fresh, first_id = await self.writer.submit(partial(self._accept, planned, now_ms))
        # One daemon holds this store: every delivery it accepts is its own at once. Built
        # here on the loop, numbered as `insert_events` numbered their rows.
        owned: list[Delivery] = []
        next_id = first_id
        for (event, deliveries), is_new in zip(planned, fresh, strict=True):
            if not is_new:
                continue
            for d in deliveries:
                if d.state == "ready" and d.due_ms <= now_ms:
                    owned.append(
                        Delivery(next_id, event.event_id, d.postback_id, event.app_id,
                                 d.network, event.event_name, d.x_app_id, d.conversion_type,
                                 d.x_account_id, d.retry_attempts, 0, d.due_ms, d.due_ms,
                                 d.lane, b"", event)
                    )  # fmt: skip
                next_id += 1
        return Stored(fresh, owned)

    def _accept(
        self,
        planned: Sequence[tuple[Event, Sequence[NewDelivery]]],
        now_ms: int,
        conn: sqlite3.Connection,
    ) -> tuple[list[bool], int]:
        """On the writer's thread, inside a group commit: per event whether it is new, and
        the id of the first delivery stored (the others follow in order)."""
        existing = sql.existing_event_ids(conn, [e.event_id for e, _ in planned])
        fresh: list[bool] = []
        accepted: list[tuple[Event, Sequence[NewDelivery]]] = []
        for event, deliveries in planned:
            is_new = event.event_id not in existing
            fresh.append(is_new)
            if is_new:
                existing.add(event.event_id)  # a repeat within the batch is a duplicate too
                accepted.append((event, deliveries))
        count = sum(len(d) for _, d in accepted)
        first = next(self._ids)
        if count > 1:
            # Reserve the block: the counter is only touched here, on the writer's thread.
            self._ids = itertools.count(first + count)
        sql.insert_events(conn, accepted, first, now_ms)
        return fresh, first

    # --- the engine ----------------------------------------------------------------------

    @property
    def lease_s(self) -> float | None:
        return None

    async def pending_lanes(self) -> list[str]:
        return await self._load(sql.pending_lanes)

    async def lease_due(
        self, reads: Sequence[LaneRead], now_ms: int, max_rows: int
    ) -> list[LaneRows]:
        return await self._load(sql.load_lanes, reads, now_ms, max_rows)

    async def renew_leases(self, now_ms: int) -> None:
        """One daemon holds the store: its leases never run out."""

    async def release_leases(self, ids: Collection[int]) -> None:
        """Rows stay pending in the store while loaded: nothing to give back."""

    # --- rate budgets: one daemon, whose local budget is the whole one ----------------------

    @property
    def budgets_shared(self) -> bool:
        return False

    async def take_budget(
        self, account_id: str, want: int, now_ms: int, cap: int, window_ms: int
    ) -> BudgetGrant:
        return BudgetGrant(max(0, want), 0, now_ms + window_ms)

    async def return_budget(self, account_id: str, window_no: int, count: int) -> None:
        """Nothing was taken from a shared row: nothing to give back."""

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
        # The daemon's own budget takes X's headers (delivery/ratelimit.py).
        return BudgetGrant(0, 0, now_ms if reset_ms is None else reset_ms)

    def write_results(self, results: Sequence[Result], now_ms: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.writer.submit(
            partial(sql.write_results, results=results, now_ms=now_ms)
        )
        return future

    # --- holds, replay, cancel -----------------------------------------------------------

    async def held_groups(self) -> list[HeldGroup]:
        return await self._read(sql.held_groups)

    async def release_held(
        self, postback_id: str, x_account_id: str | None, lane: str, now_ms: int
    ) -> int:
        job = partial(
            sql.release_held,
            postback_id=postback_id,
            x_account_id=x_account_id,
            lane=lane,
            now_ms=now_ms,
        )
        count: int = await self.writer.submit(job)
        return count

    async def replay_dead(self, ids: Sequence[int] | None, now_ms: int) -> dict[str, int]:
        lanes: dict[str, int] = await self.writer.submit(
            partial(sql.replay_dead, ids=ids, now_ms=now_ms)
        )
        return lanes

    async def cancel(
        self,
        ids: Sequence[int] | None,
        postback_id: str | None,
        in_flight: Collection[int],
        now_ms: int,
    ) -> int:
        job = partial(
            sql.cancel, ids=ids, postback_id=postback_id, in_flight=in_flight, now_ms=now_ms
        )
        count: int = await self.writer.submit(job)
        return count

    def watch_cancels(self, listener: Callable[[], None]) -> None:
        """No other daemon cancels deliveries of this store: nothing to watch."""

    async def cancelled_among(self, ids: Sequence[int]) -> list[int]:
        return await self._read(sql.cancelled_among, ids)

    async def pending_of_postback(self, postback_id: str) -> int:
        return await self._read(sql.pending_of_postback, postback_id)

    async def count_by_state(self, now_ms: int) -> dict[str, int]:
        return await self._read(sql.count_by_state, now_ms)

    async def device_attributions(
        self, app_id: str, device_keys: Sequence[str]
    ) -> dict[str, DeviceAttribution]:
        return await self._read(sql.device_attributions, app_id, device_keys)

    # --- results reads -------------------------------------------------------------------

    async def list_deliveries(
        self,
        state: str | None,
        after: Key | None,
        limit: int,
        now_ms: int,
        in_flight: Collection[int] = (),
    ) -> list[Row]:
        return await self._read(results.list_deliveries, state, after, limit, now_ms, in_flight)

    async def event_details(
        self, event_id: str, now_ms: int, in_flight: Collection[int] = ()
    ) -> dict[str, Any] | None:
        return await self._read(results.event_details, event_id, now_ms, in_flight)

    async def list_attributions(
        self, app_id: str | None, tracker_id: str | None, after: Key | None, limit: int
    ) -> list[Row]:
        return await self._read(results.list_attributions, app_id, tracker_id, after, limit)

    async def tracker_report(self, app_id: str | None) -> dict[str, dict[str, Any]]:
        return await self._read(results.tracker_report, app_id)

    # --- retention -----------------------------------------------------------------------

    async def delete_events(self, cutoff_ms: int, after_id: int) -> Deleted:
        job = partial(retention.delete_events, cutoff_ms=cutoff_ms, after_id=after_id)
        deleted: Deleted = await self.writer.submit(job)
        return deleted

    async def delete_attributions(self, cutoff_ms: int) -> Deleted:
        deleted: Deleted = await self.writer.submit(
            partial(retention.delete_attributions, cutoff_ms=cutoff_ms)
        )
        return deleted

    async def reclaim(self, pages: int) -> int:
        left: int = await self.writer.submit(partial(retention.reclaim, pages=pages))
        return left
