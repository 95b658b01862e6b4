"""Group commit of delivery results on PostgreSQL: the batches queued while one commit runs
go together in the next transaction, and each future resolves only after COMMIT.

Supervised like the SQLite writer (store/writer.py): a commit that fails for the store's
sake fails exactly its jobs with `StoreUnavailable` and the writer goes on (the next commit
is the probe); a job that fails on its own (a bug) costs the others of its commit nothing;
the task dying fails every waiting job and asks the daemon to exit (`on_fatal`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

from postbackd.delivery.model import Result
from postbackd.errors import StoreUnavailable

from . import deliveries

if TYPE_CHECKING:
    from .connect import Conn

log = logging.getLogger(__name__)

# Enough to amortise a commit, small enough that one transaction stays short.
MAX_JOBS_PER_COMMIT: Final = 512

Job = tuple[Sequence[Result], int, "asyncio.Future[None]"]
Transaction = Callable[[Callable[["Conn"], Awaitable[None]]], Awaitable[None]]


class ResultWriter:
    def __init__(
        self, transaction: Transaction, *, on_fatal: Callable[[BaseException], None] | None
    ) -> None:
        """`transaction(fn)` runs `fn(conn)` in one transaction, raising StoreUnavailable
        when the store fails."""
        self._transaction = transaction
        self._on_fatal = on_fatal
        # None is the stop mark: what was queued before it is committed, then the task ends.
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._batch: list[Job] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-result-writer")
        self._task.add_done_callback(self._ended)

    def submit(self, results: Sequence[Result], now_ms: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing or self._task is None or self._task.done():
            future.set_exception(StoreUnavailable("the store is closed", kind="closed"))
        else:
            self._queue.put_nowait((results, now_ms, future))
        return future

    async def _run(self) -> None:
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
            await self._commit(batch)
            self._batch = []

    async def _commit(self, batch: list[Job]) -> None:
        async def write(conn: Conn) -> None:
            for results, now_ms, _ in batch:
                await deliveries.write_results(conn, results, now_ms)

        try:
            await self._transaction(write)
        except StoreUnavailable as failure:
            _settle(batch, failure)
            return
        except Exception as exc:
            if len(batch) == 1:
                log.error("delivery results could not be written", exc_info=exc)
                _settle(batch, StoreUnavailable(f"the store failed: {exc}", kind="io_error"))
                return
            for job in batch:  # one bad job must not cost the others
                await self._commit([job])
            return
        _settle(batch, None)

    def _ended(self, task: asyncio.Task[None]) -> None:
        error: BaseException | None = None
        if task.cancelled():
            error = StoreUnavailable("the store's result writer was cancelled", kind="closed")
        elif task.exception() is not None:
            error = task.exception()
            log.critical("the store's result writer stopped on an unexpected error", exc_info=error)
        if error is None:
            return
        self._fail_waiting()
        if not self._closing and self._on_fatal is not None:
            self._on_fatal(error)

    def _fail_waiting(self) -> None:
        waiting = list(self._batch)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                waiting.append(item)
        _settle(waiting, StoreUnavailable("the store's result writer stopped", kind="closed"))

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await asyncio.wait([self._task])
        self._fail_waiting()


def _settle(jobs: Sequence[Job], error: BaseException | None) -> None:
    for _, _, future in jobs:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
