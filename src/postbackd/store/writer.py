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
- A corrupt database, or the writer task dying, is beyond recovery: every waiting job fails
  and `on_fatal` asks the daemon to exit non-zero, so that a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from postbackd.errors import StoreUnavailable
from postbackd.logs import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
Item = tuple[Job, "asyncio.Future[Any]"]
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
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postbackd-writer")
        self._conn: sqlite3.Connection | None = None
        # None is the stop mark: the writer commits everything queued before it, then ends.
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._batch: list[tuple[Job, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing_since: float | None = None
        self._failed_commits = 0
        self._warn = RateLimitedLog(log, FAILURE_LOG_INTERVAL_S, clock)

    @property
    def healthy(self) -> bool:
        """False from a commit that failed for the store's sake to the next that succeeds."""
        return self._failing_since is None and not self._closed

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._run(), name="store-writer")
        self._task.add_done_callback(self._ended)

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
        """Run `fn(conn, *args)` on the writer's thread, outside any group commit. For the
        reads whose answer must be ordered with the commits (the engine's loads); other
        reads go to a `Reader`, so that they never wait for a commit or delay one."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._conn, *args))

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a write; the future resolves with its result once it is committed, or fails
        with `StoreUnavailable` when the store could not commit it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed or (self._task is not None and self._task.done()):
            future.set_exception(StoreUnavailable("the store is closed", kind="closed"))
        else:
            self._queue.put_nowait((job, future))
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = self._batch = [first]
            while len(batch) < MAX_JOBS_PER_COMMIT and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
            self._batch = []
            self._settle(batch, outcomes)

    def _settle(
        self, batch: list[tuple[Job, asyncio.Future[Any]]], outcomes: list[Outcome]
    ) -> None:
        failure: StoreUnavailable | None = None
        committed = False
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
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

    def _commit(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Outcome]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [(True, job(conn)) for job, _ in batch]
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
            return [self._alone(conn, job) for job, _ in batch]

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

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The writer task ended: at close, or because it broke (then nothing may hang)."""
        error: BaseException | None = None
        if task.cancelled():
            error = StoreUnavailable("the store writer was cancelled", kind="closed")
        elif task.exception() is not None:
            error = task.exception()
            log.critical("the store writer stopped on an unexpected error", exc_info=error)
        if error is None:
            return
        self._fail_waiting()
        if not self._closed:
            self._fatal(error)

    def _fail_waiting(self) -> None:
        closed = StoreUnavailable("the store writer stopped", kind="closed")
        waiting = [f for _, f in self._batch]
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                waiting.append(item[1])
        for future in waiting:
            if not future.done():
                future.set_exception(closed)

    def _fatal(self, error: BaseException) -> None:
        if self._on_fatal is not None:
            self._on_fatal(error)

    async def close(self) -> None:
        """Commit what is queued, then stop the writer and close the connection."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await asyncio.wait([self._task])
        self._closed = True
        self._fail_waiting()
        if self._conn is not None:
            await self.call(sqlite3.Connection.close)
        self._executor.shutdown(wait=True)
