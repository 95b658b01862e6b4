"""The delivery journal: one sqlite3 connection on its own thread, written in group commits.

The hot path writes through here: many small jobs (an ingest batch, a delivery's result)
are gathered while the previous commit runs and committed together in one transaction,
so throughput does not pay one fsync and one thread hop per event. A job's future resolves
only after its transaction committed: an ingest answer waits for it (accepted = durable).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
# Enough to amortise a commit, small enough that one transaction stays short.
MAX_JOBS_PER_COMMIT: Final = 512


class Journal:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postbackd-journal")
        self._conn: sqlite3.Connection | None = None
        # None is the stop mark: the writer commits everything queued before it, then ends.
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-16000")  # 16 MiB: bounded, whatever the backlog
        return conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the journal thread, outside any group commit (reads)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._conn, *args))

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a write; the future resolves with its result once it is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future))
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_JOBS_PER_COMMIT and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [(True, job(conn)) for job, _ in batch]
            conn.execute("COMMIT")
            return results
        except Exception as e:
            conn.execute("ROLLBACK")
            if len(batch) == 1:
                log.exception("journal write failed")
                return [(False, e)]
            # One bad job must not cost the others: commit each on its own.
            return [self._alone(job) for job, _ in batch]

    def _alone(self, job: Job) -> tuple[bool, Any]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job(conn)
            conn.execute("COMMIT")
            return True, result
        except Exception as e:
            conn.execute("ROLLBACK")
            log.exception("journal write failed")
            return False, e

    async def close(self) -> None:
        """Commit what is queued, then stop the writer and close the connection."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        if self._conn is not None:
            await self.call(sqlite3.Connection.close)
        self._executor.shutdown(wait=True)
