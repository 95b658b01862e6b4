"""The store's writer: one sqlite3 connection on its own thread, written in group commits,
and supervised (PRODUCT.md 2, "Store failures").

The hot path writes through here: many small jobs (an ingest batch, delivery results) are
gathered while the previous commit runs and committed together in one transaction, so
throughput does not pay one fsync and one thread hop per event. A job's future resolves only
after its transaction committed: an ingest answer waits for it (accepted = durable).

Supervision, after aiokafka's sender: nothing waits forever on a future nobody will resolve.

- A commit that fails for a reason of the store (disk full, I/O error, busy) fails exactly
  the jobs of that commit with `StoreUnavailable`; the writer keeps running, and the next
  commit is the probe: the first that succeeds makes the store healthy again.
- A job that fails on its own (a bug, a constraint) costs the other jobs of its commit
  nothing: they are committed one by one.
- A corrupt database, or the writer's thread dying, is beyond recovery: every waiting job fails
  and `on_fatal` asks the daemon to exit non-zero, so that a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from postbackd.errors import StoreUnavailable
from postbackd.logs import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
# A job, its future, and whether it joins a group commit (a write) or runs alone (a read).
Item = tuple[Job, "asyncio.Future[Any]", bool]
# Enough to amortise a commit, small enough that one transaction stays short.
MAX_JOBS_PER_COMMIT: Final = 512
WAL_SIZE_LIMIT: Final = 4 * 1024 * 1024  # what 1,000 pages take: SQLite checkpoints then
# A failing store is logged once per this interval, not once per request.
FAILURE_LOG_INTERVAL_S: Final = 30.0

# SQLite's primary result codes (the low byte of an extended code) that say the store, not
# the request, failed, and the `kind` each is counted under.
_STORE_FAILURES: Final = {
    13: "disk_full",  # SQLITE_FULL
    10: "io_error",  # SQLITE_IOERR
    14: "io_error",  # SQLITE_CANTOPEN
    8: "io_error",  # SQLITE_READONLY
    15: "io_error",  # SQLITE_PROTOCOL
    7: "io_error",  # SQLITE_NOMEM
    5: "busy",  # SQLITE_BUSY
    6: "busy",  # SQLITE_LOCKED
    11: "corrupt",  # SQLITE_CORRUPT
    26: "corrupt",  # SQLITE_NOTADB
}


def store_failure(exc: BaseException) -> StoreUnavailable | None:
    """The `StoreUnavailable` that `exc` amounts to, or None when it is not the store's fault."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return StoreUnavailable("the store is closed", kind="closed")
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        kind = _STORE_FAILURES.get(code & 0xFF) if isinstance(code, int) else None
        if kind is not None:
            return StoreUnavailable(f"the store cannot write: {exc}", kind=kind)
    return None


class Writer:
    """Jobs are gathered on the event loop for one pass and handed to the writer's own thread
    in one list; the thread commits and hands each commit's outcomes back in one callback.
    A thread fed by a plain queue costs the loop a fraction of an executor hop per commit."""

    def __init__(
        self,
        path: Path,
        *,
        on_error: Callable[[str], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._on_error = on_error
        self._on_fatal = on_fatal
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        # Items submitted during this pass of the loop, handed over together at its end.
        self._pending: list[Item] = []
        # Lists of items for the thread; None is the stop mark: the thread commits everything
        # queued before it, closes the connection and ends.
        self._inbox: queue.SimpleQueue[list[Item] | None] = queue.SimpleQueue()
        # What the thread has taken from the inbox and not yet settled: failed if it dies.
        self._in_hand: list[list[Item] | None] = []
        self._stopped: asyncio.Future[None] | None = None
        self._dead = False
        self._stopping = False
        self._closed = False
        self._failing_since: float | None = None
        self._failed_commits = 0
        self._warn = RateLimitedLog(log, FAILURE_LOG_INTERVAL_S, clock)

    @property
    def healthy(self) -> bool:
        """False from a commit that failed for the store's sake to the next that succeeds."""
        return self._failing_since is None and not self._closed

    async def open(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._conn = await loop.run_in_executor(None, self._connect)
        self._thread = threading.Thread(target=self._serve, name="postbackd-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-16000")  # 16 MiB: bounded, whatever the backlog
        # A burst (a backlog resent after a full disk) grows the WAL; after the next
        # checkpoint it is cut back to this, or disk use would stay at its high-water mark.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the writer's thread, outside any group commit, after the
        commits submitted before it. For the reads whose answer must be ordered with the
        commits (the engine's loads); other reads go to a `Reader`, so that they never wait
        for a commit or delay one."""
        result: T = await self._queue(lambda conn: fn(conn, *args), grouped=False)
        return result

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a write; the future resolves with its result once it is committed, or fails
        with `StoreUnavailable` when the store could not commit it."""
        return self._queue(job, grouped=True)

    def _queue(self, job: Job, *, grouped: bool) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._stopping or self._dead or self._thread is None:
            future.set_exception(StoreUnavailable("the store is closed", kind="closed"))
            return future
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append((job, future, grouped))
        return future

    def _hand_over(self) -> None:
        items, self._pending = self._pending, []
        if self._dead:
            _fail([items])
        elif items:
            self._inbox.put(items)

    # The writer's thread.

    def _serve(self) -> None:
        try:
            self._work()
        # A bug in the writer: reported on the loop (logged there), and nothing may wait forever.
        except BaseException as exc:  # noqa: BLE001
            self._post(self._ended, exc)
        else:
            self._post(self._ended, None)

    def _work(self) -> None:
        conn = self._conn
        assert conn is not None
        inbox = self._inbox
        while True:
            taken = self._in_hand = [inbox.get()]
            while not inbox.empty():
                taken.append(inbox.get_nowait())
            batch: list[Item] = []
            for items in taken:
                if items is None:
                    if batch:
                        self._post(self._settle, batch, self._commit(batch))
                    conn.close()
                    return
                for item in items:
                    if item[2]:
                        batch.append(item)
                        if len(batch) == MAX_JOBS_PER_COMMIT:
                            self._post(self._settle, batch, self._commit(batch))
                            batch = []
                        continue
                    if batch:  # a call comes after the commits submitted before it
                        self._post(self._settle, batch, self._commit(batch))
                        batch = []
                    self._post(self._answer, item[1], self._alone_outside(conn, item[0]))
            if batch:
                self._post(self._settle, batch, self._commit(batch))

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _alone_outside(conn: sqlite3.Connection, fn: Job) -> Outcome:
        try:
            return True, fn(conn)
        except Exception as exc:  # noqa: BLE001 - the caller's to handle: it awaits this
            return False, exc

    # Back on the event loop.

    @staticmethod
    def _answer(future: asyncio.Future[Any], outcome: Outcome) -> None:
        if future.done():
            return
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _settle(self, batch: list[Item], outcomes: list[Outcome]) -> None:
        failure: StoreUnavailable | None = None
        committed = False
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            committed = committed or ok
            if not ok and isinstance(value, StoreUnavailable):
                failure = value
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if failure is not None:
            self._failed(failure)
        elif committed:
            self._recovered()

    def _failed(self, failure: StoreUnavailable) -> None:
        self._failed_commits += 1
        if self._failing_since is None:
            self._failing_since = self._clock()
        if self._on_error is not None:
            self._on_error(failure.kind)
        self._warn.warning(
            f"store:{failure.kind}",
            f"{failure.message}; ingest answers 503 store_unavailable until a commit succeeds",
        )
        if failure.kind == "corrupt":
            self._fatal(failure)

    def _recovered(self) -> None:
        if self._failing_since is None:
            return
        log.info(
            "the store writes again after %.1f s (%d commits failed in between)",
            self._clock() - self._failing_since,
            self._failed_commits,
        )
        self._failing_since = None
        self._failed_commits = 0

    def _commit(self, batch: list[Item]) -> list[Outcome]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [(True, job(conn)) for job, _, _ in batch]
            conn.execute("COMMIT")
            return results
        except Exception as exc:
            self._rollback(conn)
            failure = store_failure(exc)
            if failure is not None:
                return [(False, failure)] * len(batch)
            if len(batch) == 1:
                log.error("a store write failed", exc_info=exc)
                return [(False, exc)]
            # One bad job must not cost the others: commit each on its own.
            return [self._alone(conn, job) for job, _, _ in batch]

    def _alone(self, conn: sqlite3.Connection, job: Job) -> Outcome:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job(conn)
            conn.execute("COMMIT")
            return True, result
        except Exception as exc:
            self._rollback(conn)
            failure = store_failure(exc)
            if failure is None:
                log.error("a store write failed", exc_info=exc)
            return False, failure or exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite rolls a transaction back by itself after some errors (a full disk, an I/O
        # error during COMMIT); a ROLLBACK then would raise and must not kill the writer.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("rollback after a failed commit failed too: %s", exc)

    def _ended(self, error: BaseException | None) -> None:
        """The thread ended: at close, or because it broke (then nothing may hang)."""
        self._dead = True
        if error is not None:
            log.critical("the store writer stopped on an unexpected error", exc_info=error)
            self._fail_waiting()
            if not self._stopping:
                self._fatal(error)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _fail_waiting(self) -> None:
        waiting = [*self._in_hand, self._pending]
        self._pending = []
        while not self._inbox.empty():
            waiting.append(self._inbox.get_nowait())
        _fail(waiting)

    def _fatal(self, error: BaseException) -> None:
        if self._on_fatal is not None:
            self._on_fatal(error)

    async def close(self) -> None:
        """Commit what is queued, then stop the writer and close the connection."""
        if self._thread is not None and not self._dead:
            self._stopping = True
            self._hand_over()
            self._inbox.put(None)
            assert self._stopped is not None
            await self._stopped
        self._stopping = self._closed = True
        self._fail_waiting()
        if self._thread is not None:
            self._thread.join()
        if self._conn is not None:
            self._conn.close()  # a no-op when the thread closed it; else it died holding it


def _fail(waiting: list[list[Item] | None]) -> None:
    closed = StoreUnavailable("the store writer stopped", kind="closed")
    for items in waiting:
        for _, future, _ in items or ():
            if not future.done():
                future.set_exception(closed)
