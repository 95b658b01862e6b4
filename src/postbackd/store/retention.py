"""SQL of retention (PRODUCT.md 2, "Retention"): what has aged out, deleted in small batches.

Each function deletes at most one batch, so that the janitor commits it as one short job and
ingest commits run between two batches. Nothing accepted is lost: an event goes only when
every delivery of it is final (delivered, skipped, dead, cancelled); a held, scheduled or
ready delivery of any age keeps its event.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from postbackd.delivery.model import CANCELLABLE
from postbackd.store.base import Deleted

# Rows looked at per transaction: short enough that ingest never waits long for a commit.
BATCH: Final = 500
_NOT_FINAL: Final = "(" + ", ".join(f"'{s}'" for s in CANCELLABLE) + ")"


def delete_events(conn: sqlite3.Connection, cutoff_ms: int, after_id: int) -> Deleted:
    """One batch of events received before `cutoff_ms` whose deliveries are all final, with
    their deliveries and claims; events are looked at oldest first (a rowid table: ids grow
    with arrival), from after `after_id`."""
    rows = conn.execute(
        "SELECT e.id, e.received_at_ms < ?, NOT EXISTS ("
        f" SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.state IN {_NOT_FINAL}"
        ") FROM events e WHERE e.id > ? ORDER BY e.id LIMIT ?",
        (cutoff_ms, after_id, BATCH),
    ).fetchall()
    if not any(old for _, old, _ in rows):
        return Deleted()  # the rest arrived after the cutoff
    gone = [ref for ref, old, final in rows if old and final]
    deleted = Deleted(next_after=rows[-1][0])
    if not gone:
        return deleted
    marks = ",".join("?" * len(gone))
    # Claims first: they are found through their deliveries (migration 5).
    return Deleted(
        claims=conn.execute(
            "DELETE FROM claims WHERE delivery_id IN"
            f" (SELECT id FROM deliveries WHERE event_ref IN ({marks}))",
            gone,
        ).rowcount,
        deliveries=conn.execute(
            f"DELETE FROM deliveries WHERE event_ref IN ({marks})", gone
        ).rowcount,
        events=conn.execute(f"DELETE FROM events WHERE id IN ({marks})", gone).rowcount,
        next_after=deleted.next_after,
    )


def delete_attributions(conn: sqlite3.Connection, cutoff_ms: int) -> Deleted:
    """One batch of attributions recorded before `cutoff_ms` (ids grow with time), and of
    device states whose latest attribution is that old."""
    attributions = conn.execute(
        "DELETE FROM attributions WHERE id IN (SELECT id FROM attributions"
        " WHERE created_ms < ? ORDER BY id LIMIT ?)",
        (cutoff_ms, BATCH),
    ).rowcount
    devices = conn.execute(
        "DELETE FROM devices WHERE (app_id, device_key) IN (SELECT app_id, device_key"
        " FROM devices INDEXED BY devices_attributed WHERE attributed_ms < ? LIMIT ?)",
        (cutoff_ms, BATCH),
    ).rowcount
    more = attributions == BATCH or devices == BATCH
    return Deleted(attributions=attributions, devices=devices, next_after=0 if more else None)


def reclaim(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to `pages` free pages back to the file system (auto_vacuum INCREMENTAL); the
    pages left free. (Python's sqlite3 steps a statement that returns no rows once, and
    each step of this pragma frees one page: hence one execute per page.)"""
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    for _ in range(min(free, pages)):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return max(0, free - pages)
