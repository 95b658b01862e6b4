"""Retention on PostgreSQL (PRODUCT.md 2, "Retention"): what has aged out, deleted in small
batches, one short transaction each, as store/retention.py does for SQLite. Space is given
back by autovacuum (freed row space is reused; nothing to reclaim by hand)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from postbackd.delivery.model import CANCELLABLE
from postbackd.store.base import Deleted
from postbackd.store.retention import BATCH

from .rows import affected

if TYPE_CHECKING:
    from .connect import Conn

_NOT_FINAL: Final = "(" + ", ".join(f"'{s}'" for s in CANCELLABLE) + ")"


async def delete_events(conn: Conn, cutoff_ms: int, after_id: int) -> Deleted:
    """One batch of events received before `cutoff_ms` whose deliveries are all final, with
    their deliveries and claims, in the caller's transaction; looked at in id order (ids
    grow with arrival), from after `after_id`."""
    rows = await conn.fetch(
        "SELECT e.id, e.received_at_ms < $1, NOT EXISTS ("
        f" SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.state IN {_NOT_FINAL}"
        ") FROM events e WHERE e.id > $2 ORDER BY e.id LIMIT $3",
        cutoff_ms, after_id, BATCH,
    )  # fmt: skip
    if not any(old for _, old, _ in rows):
        return Deleted()  # the rest arrived after the cutoff
    gone = [ref for ref, old, final in rows if old and final]
    next_after = int(rows[-1][0])
    if not gone:
        return Deleted(next_after=next_after)
    # Claims first: they are found through their deliveries (migration 4).
    claims = await conn.execute(
        "DELETE FROM claims WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE event_ref = ANY($1::bigint[]))",
        gone,
    )
    deliveries = await conn.execute(
        "DELETE FROM deliveries WHERE event_ref = ANY($1::bigint[])", gone
    )
    events = await conn.execute("DELETE FROM events WHERE id = ANY($1::bigint[])", gone)
    return Deleted(
        events=affected(events),
        deliveries=affected(deliveries),
        claims=affected(claims),
        next_after=next_after,
    )


async def delete_attributions(conn: Conn, cutoff_ms: int) -> Deleted:
    """One batch of attributions recorded before `cutoff_ms`, and of device states whose
    latest attribution is that old."""
    attributions = affected(await conn.execute(
        "DELETE FROM attributions WHERE id IN (SELECT id FROM attributions"
        " WHERE created_ms < $1 ORDER BY id LIMIT $2)",
        cutoff_ms, BATCH,
    ))  # fmt: skip
    devices = affected(await conn.execute(
        "DELETE FROM devices WHERE (app_id, device_key) IN (SELECT app_id, device_key"
        " FROM devices WHERE attributed_ms < $1 LIMIT $2)",
        cutoff_ms, BATCH,
    ))  # fmt: skip
    more = attributions == BATCH or devices == BATCH
    return Deleted(attributions=attributions, devices=devices, next_after=0 if more else None)
