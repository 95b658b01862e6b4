"""Delivery results into store commits. The results gathered over a few milliseconds go to
the store as one write; a delivery stays the engine's (in memory, never loaded twice) until
its result is committed.

Why wait at all: every commit rewrites whole pages (the rows' table and index pages) into
the write-ahead log and wakes the store's writer. Written after each pass of the event loop,
results make one small commit for every few answers; gathered for `gather_s`, a commit takes
dozens. Nothing waits on a result's commit but the delivery's place in memory: X has its
answer already, and an ingest answer never waits for results.

When the store cannot write (PRODUCT.md 2, "Store failures"), the results wait here and are
written again every `retry_s` until a commit succeeds: nothing X answered is forgotten, and
nothing is sent twice while the disk is full. A result that fails for any other reason (a
bug) is let go with an error in the log: its delivery stays pending in the store and is
sent again (delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Final

from postbackd.errors import StoreUnavailable
from postbackd.store.base import Store

from .model import Delivery, Result

log = logging.getLogger(__name__)

Batch = list[tuple[Delivery, Result]]
DEFAULT_RETRY_S: Final = 1.0
DEFAULT_GATHER_S: Final = 0.005
# A write of this many results goes at once, without waiting for the rest of `gather_s`.
MAX_GATHERED: Final = 1_000


class Recorder:
    def __init__(
        self,
        store: Store,
        now_ms: Callable[[], int],
        on_written: Callable[[Batch], None],
        on_lost: Callable[[Batch], None],
        retry_s: float = DEFAULT_RETRY_S,
        gather_s: float = DEFAULT_GATHER_S,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._on_written = on_written
        self._on_lost = on_lost
        self._retry_s = retry_s
        self._gather_s = gather_s
        self._gathering: Batch = []
        self._flush: asyncio.TimerHandle | None = None
        self._waiting: Batch = []  # results the store could not write yet
        self._retry: asyncio.TimerHandle | None = None
        self._writes: dict[asyncio.Future[None], int] = {}  # in the store, with their size

    @property
    def unwritten(self) -> int:
        """Results not committed yet: gathering, being written, or waiting for the store."""
        return len(self._gathering) + len(self._waiting) + sum(self._writes.values())

    def add(self, d: Delivery, result: Result) -> None:
        gathering = self._gathering
        gathering.append((d, result))
        if len(gathering) >= MAX_GATHERED:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._gather_s, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._gathering = self._gathering, []
        if not batch:
            return
        results = [r for _, r in batch]
        future = self._store.write_results(results, self._now_ms())
        self._writes[future] = len(batch)
        future.add_done_callback(partial(self._written, batch))

    def _written(self, batch: Batch, future: asyncio.Future[None]) -> None:
        del self._writes[future]
        if future.cancelled():
            error: BaseException | None = StoreUnavailable("write cancelled", kind="closed")
        else:
            error = future.exception()
        if error is None:
            self._on_written(batch)
        elif isinstance(error, StoreUnavailable):
            # Kept, and written again once the store takes writes (the store logs why).
            self._waiting.extend(batch)
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(self._retry_s, self._again)
        else:
            log.error(
                "could not record %d delivery results (%s); they stay pending and go out again",
                len(batch),
                error,
            )
            self._on_lost(batch)

    def _again(self) -> None:
        self._retry = None
        waiting, self._waiting = self._waiting, []
        if waiting:
            self._gathering = waiting + self._gathering
            self.flush()

    async def drain(self, timeout_s: float) -> int:
        """At shutdown: write what is gathered and wait for it (and one more try of what
        waits for the store) at most `timeout_s`; the count of results left unwritten."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._gathering = self._waiting + self._gathering
        self._waiting = []
        self.flush()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        return self.unwritten
