"""The janitor (PRODUCT.md 2, "Retention"): deletes what has aged out, so that disk use stays
flat under steady load however long the daemon runs.

Events whose every delivery is final go `retention_days` after they arrived, with their
deliveries and claims; attributions and device state go `attribution_retention_days` after
they were recorded. Deletes run as small batches of the store (a few hundred rows, one short
transaction each), so ingest commits pass between two of them and never stall; the space
they free goes back to the file system, a bounded amount per batch too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from postbackd.errors import StoreUnavailable
from postbackd.logs import RateLimitedLog
from postbackd.metrics import RETENTION_KINDS as KINDS
from postbackd.metrics import Metrics
from postbackd.store.base import Deleted, Store

log = logging.getLogger(__name__)

# Pages given back per job (4 KiB each).
_RECLAIM_PAGES: Final = 2_000
# A sweep every tenth of the retention, between these bounds.
_MIN_INTERVAL_S: Final = 1.0
_MAX_INTERVAL_S: Final = 600.0


class Janitor:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        event_retention_s: float,
        attribution_retention_s: float,
        now_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._event_ms = int(event_retention_s * 1000)
        self._attribution_ms = int(attribution_retention_s * 1000)
        self._now_ms = now_ms
        shortest_s = min(event_retention_s, attribution_retention_s)
        self.interval_s = max(_MIN_INTERVAL_S, min(_MAX_INTERVAL_S, shortest_s / 10))
        self._deleted = {kind: metrics.retention_deleted.labels(kind) for kind in KINDS}
        self._warn = RateLimitedLog(log)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except StoreUnavailable as exc:  # the store fails: next sweep
                self._warn.warning("janitor", f"retention could not delete: {exc}")
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> Deleted:
        """Delete what has aged out now, batch by batch; the totals."""
        now = self._now_ms()
        totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        after: int | None = 0
        while after is not None:
            deleted = await self._store.delete_events(now - self._event_ms, after)
            after = self._count(deleted, totals)
        more: int | None = 0
        while more is not None:
            deleted = await self._store.delete_attributions(now - self._attribution_ms)
            more = self._count(deleted, totals)
        if any(totals.values()):
            while await self._store.reclaim(_RECLAIM_PAGES):
                pass
        size = await self._store.size_bytes()
        self._metrics.store_bytes.set(size)
        if any(totals.values()):
            log.info(
                "retention: deleted %d events (%d deliveries, %d claims), %d attributions, "
                "%d device states; the store is %.1f MB",
                totals["events"], totals["deliveries"], totals["claims"],
                totals["attributions"], totals["devices"], size / 1e6,
            )  # fmt: skip
        return Deleted(**totals)

    def _count(self, deleted: Deleted, totals: dict[str, int]) -> int | None:
        for kind in KINDS:
            n: int = getattr(deleted, kind)
            if n:
                totals[kind] += n
                self._deleted[kind].inc(n)
        return deleted.next_after
