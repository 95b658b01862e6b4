"""SQL of events, deliveries, claims and device attributions. Plain functions over a
sqlite3 connection, run on the journal's thread (writes inside its group commits)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from postbackd.delivery.model import NewDelivery, Result
from postbackd.event import Event

# SQLite's bound-parameter limit is 32766 on current builds; stay well below it.
_CHUNK: Final = 900

_INSERT_EVENT: Final = (
    "INSERT INTO events (event_id, app_id, event_name, received_at_ms, body) VALUES (?,?,?,?,?)"
)
_INSERT_DELIVERY: Final = (
    "INSERT INTO deliveries (id, event_id, postback_id, app_id, network, event_name, x_app_id,"
    " conversion_type, x_account_id, retry_attempts, state, reason, first_due_ms, due_ms,"
    " updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_LOAD_COLUMNS: Final = (
    "d.id, d.event_id, d.postback_id, d.app_id, d.network, d.event_name, d.x_app_id,"
    " d.conversion_type, d.x_account_id, d.retry_attempts, d.attempts, d.first_due_ms,"
    " d.due_ms, e.body"
)


def max_delivery_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()[0])


def existing_event_ids(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        found.update(r[0] for r in rows)
    return found


def insert_events(
    conn: sqlite3.Connection,
    accepted: Sequence[tuple[Event, Sequence[NewDelivery]]],
    first_id: int,
    now_ms: int,
) -> int:
    """Insert events with their deliveries, ids from `first_id`; returns deliveries made."""
    conn.executemany(
        _INSERT_EVENT,
        [(e.event_id, e.app_id, e.event_name, e.received_at_ms, e.to_json()) for e, _ in accepted],
    )
    rows = []
    next_id = first_id
    for event, deliveries in accepted:
        for d in deliveries:
            rows.append(
                (next_id, event.event_id, d.postback_id, event.app_id, d.network,
                 event.event_name, d.x_app_id, d.conversion_type, d.x_account_id,
                 d.retry_attempts, d.state, d.reason, d.due_ms, d.due_ms, now_ms)
            )  # fmt: skip
            next_id += 1
    conn.executemany(_INSERT_DELIVERY, rows)
    return len(rows)


def load_due(
    conn: sqlite3.Connection, after: tuple[int, int], now_ms: int, limit: int
) -> list[tuple[Any, ...]]:
    """Pending deliveries due by `now_ms`, in (due, id) order after the cursor `after`, as
    rows for `Delivery(*row)` (built by the caller: this runs on the journal's thread, and
    every Python object made here holds the GIL away from the event loop)."""
    return conn.execute(
        # INDEXED BY: without statistics SQLite may sort every pending row; the partial
        # index seeks straight to the cursor in due order.
        f"SELECT {_LOAD_COLUMNS} FROM deliveries d INDEXED BY deliveries_pending"
        " JOIN events e ON e.event_id = d.event_id"
        " WHERE d.state IN ('scheduled', 'ready') AND (d.due_ms, d.id) > (?, ?)"
        " AND d.due_ms <= ? ORDER BY d.due_ms, d.id LIMIT ?",
        (after[0], after[1], now_ms, limit),
    ).fetchall()


def write_results(conn: sqlite3.Connection, results: Iterable[Result], now_ms: int) -> None:
    updates = []
    claims = []
    attributions = []
    for r in results:
        updates.append(
            (r.state, r.reason, r.attempts, r.due_ms, r.account_id, r.last_status, r.last_error,
             now_ms, r.delivery_id)
        )  # fmt: skip
        if r.claim is not None:
            c = r.claim
            claims.append(
                (r.delivery_id, c.event_id, c.app_id, c.network, c.tracker_id, c.outcome,
                 c.source, c.engagement_type, c.engagement_time, c.campaign_name,
                 c.rejected.decode(), now_ms)
            )  # fmt: skip
        if r.attribution is not None:
            a = r.attribution
            attributions.append(
                (a.app_id, a.device_key, a.network, a.tracker_id, a.engagement_type,
                 a.engagement_time, a.event_id, r.delivery_id, now_ms)
            )  # fmt: skip
    conn.executemany(
        "UPDATE deliveries SET state = ?, reason = ?, attempts = ?, due_ms = ?, account_id = ?,"
        " last_status = ?, last_error = ?, updated_ms = ? WHERE id = ?",
        updates,
    )
    if claims:
        conn.executemany(
            "INSERT OR REPLACE INTO claims (delivery_id, event_id, app_id, network, tracker_id,"
            " outcome, source, engagement_type, engagement_time, campaign_name, rejected,"
            " created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            claims,
        )
    if attributions:
        conn.executemany(
            "INSERT INTO attributions (app_id, device_key, network, tracker_id, engagement_type,"
            " engagement_time, event_id, delivery_id, created_ms) VALUES (?,?,?,?,?,?,?,?,?)",
            attributions,
        )
        conn.executemany(
            "INSERT OR REPLACE INTO devices (app_id, device_key, network, tracker_id,"
            " engagement_type, engagement_time, attributed_ms) VALUES (?,?,?,?,?,?,?)",
            [(*a[:6], now_ms) for a in attributions],
        )


def release_held(conn: sqlite3.Connection, now_ms: int) -> int:
    """Held deliveries become ready again; the engine re-applies the signing rule."""
    return conn.execute(
        "UPDATE deliveries SET state = 'ready', reason = NULL, due_ms = MAX(due_ms, ?),"
        " updated_ms = ? WHERE state = 'held'",
        (now_ms, now_ms),
    ).rowcount


def replay_dead(conn: sqlite3.Connection, ids: Sequence[int] | None, now_ms: int) -> int:
    """Dead deliveries (all, or those of `ids`) go out again with their retries restored."""
    sql = (
        "UPDATE deliveries SET state = 'ready', reason = NULL, attempts = 0, due_ms = ?,"
        " first_due_ms = ?, updated_ms = ? WHERE state = 'dead'"
    )
    if ids is None:
        return conn.execute(sql, (now_ms, now_ms, now_ms)).rowcount
    total = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        total += conn.execute(
            f"{sql} AND id IN ({marks})", (now_ms, now_ms, now_ms, *chunk)
        ).rowcount
    return total


def count_by_state(conn: sqlite3.Connection, now_ms: int) -> dict[str, int]:
    counts = {
        "held": conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'held'").fetchone()[0],
        "dead": conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'").fetchone()[0],
    }
    pending = conn.execute(
        "SELECT COALESCE(SUM(due_ms > ?), 0), COUNT(*) FROM deliveries"
        " WHERE state IN ('scheduled', 'ready')",
        (now_ms,),
    ).fetchone()
    counts["scheduled"] = int(pending[0])
    counts["ready"] = int(pending[1]) - int(pending[0])
    return counts


def device_networks(
    conn: sqlite3.Connection, app_id: str, device_keys: Sequence[str]
) -> dict[str, str]:
    """The network of each device's latest attribution (devices without one are absent)."""
    found: dict[str, str] = {}
    for start in range(0, len(device_keys), _CHUNK):
        chunk = device_keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT device_key, network FROM devices WHERE app_id = ? AND device_key IN ({marks})",
            (app_id, *chunk),
        )
        found.update((k, n) for k, n in rows)
    return found
