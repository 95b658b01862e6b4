"""SQL of events, deliveries, claims and device attributions. Plain functions over a
sqlite3 connection: writes run inside the writer's group commits, the engine's loads on the
writer's thread (ordered with the commits), other reads on a reader's connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from functools import cache
from typing import Any, Final

import orjson

from postbackd.delivery.model import NewDelivery, Result
from postbackd.event import Event
from postbackd.store.base import HeldGroup, LaneRead, LaneRows

# SQLite's bound-parameter limit is 32766 on current builds; stay well below it.
_CHUNK: Final = 900

# Rows per statement, largest first. `executemany` steps once per row, and sqlite3 lets go
# of the GIL around every step: the event loop and the writer's thread then trade the GIL
# once per row. A statement of many rows steps once. Powers of two keep the prepared
# statements few (sqlite3 caches 128 per connection).
_ROWS_PER_STATEMENT: Final = (64, 32, 16, 8, 4, 2, 1)

_INSERT_EVENTS: Final = (
    "INSERT INTO events (id, event_id, app_id, event_name, received_at_ms, body) VALUES {rows}"
)
_INSERT_DELIVERIES: Final = (
    "INSERT INTO deliveries (id, event_id, event_ref, postback_id, app_id, network, event_name,"
    " x_app_id, conversion_type, x_account_id, retry_attempts, state, reason, first_due_ms,"
    " due_ms, updated_ms, lane) VALUES {rows}"
)
_LOAD_COLUMNS: Final = (
    "d.id, d.event_id, d.postback_id, d.app_id, d.network, d.event_name, d.x_app_id,"
    " d.conversion_type, d.x_account_id, d.retry_attempts, d.attempts, d.first_due_ms,"
    " d.due_ms, d.lane, e.body"
)
_PENDING: Final = "state IN ('scheduled', 'ready')"


def _chunks(values: Sequence[Any]) -> Iterable[tuple[Sequence[Any], str]]:
    """Slices of at most _CHUNK values, each with its `?,?,...` placeholders."""
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


@cache
def _statement(template: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return template.format(rows=",".join([row] * count))


def _write_rows(
    conn: sqlite3.Connection, template: str, width: int, rows: Sequence[Sequence[Any]]
) -> None:
    """`template` (its `{rows}` the list of `(?,...)` tuples) run over `rows`, many rows per
    statement."""
    start, left = 0, len(rows)
    for count in _ROWS_PER_STATEMENT:
        while left >= count:
            chunk = rows[start : start + count]
            conn.execute(_statement(template, width, count), [v for row in chunk for v in row])
            start += count
            left -= count


def max_delivery_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()[0])


def existing_event_ids(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk, marks in _chunks(event_ids):
        rows = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        found.update(r[0] for r in rows)
    return found


def insert_events(
    conn: sqlite3.Connection,
    accepted: Sequence[tuple[Event, Sequence[NewDelivery]]],
    first_id: int,
    now_ms: int,
) -> int:
    """Insert events with their deliveries, ids from `first_id`; returns deliveries made.
    Each delivery names its event's row (migration 5), numbered here as SQLite would."""
    first_ref = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
    _write_rows(
        conn,
        _INSERT_EVENTS,
        6,
        [
            (first_ref + i, e.event_id, e.app_id, e.event_name, e.received_at_ms, e.to_json())
            for i, (e, _) in enumerate(accepted)
        ],
    )
    rows = []
    next_id = first_id
    for ref, (event, deliveries) in enumerate(accepted, first_ref):
        for d in deliveries:
            rows.append(
                (next_id, event.event_id, ref, d.postback_id, event.app_id, d.network,
                 event.event_name, d.x_app_id, d.conversion_type, d.x_account_id,
                 d.retry_attempts, d.state, d.reason, d.due_ms, d.due_ms, now_ms, d.lane)
            )  # fmt: skip
            next_id += 1
    _write_rows(conn, _INSERT_DELIVERIES, 17, rows)
    return len(rows)


def load_lanes(
    conn: sqlite3.Connection, reads: Sequence[LaneRead], now_ms: int, max_rows: int
) -> list[LaneRows]:
    """Several lanes' due deliveries in one call (one trip to the writer's thread, however
    many lanes): for each (lane, cursor, limit), in order, the lane's pending deliveries due
    by `now_ms` after the cursor, in (due, id) order, until `max_rows` rows in all. The rows
    are for `Delivery(*row)` (built by the caller: this runs on the writer's thread, and
    every Python object made here holds the GIL away from the event loop).

    With fewer rows than its limit, a lane also gets when its next pending row is due (None
    when it has none), so the loader knows when to read it again."""
    out: list[LaneRows] = []
    for lane, cursor, limit in reads:
        limit = min(limit, max_rows)
        if limit <= 0:
            break
        rows = conn.execute(_LOAD, (lane, cursor[0], cursor[1], now_ms, limit)).fetchall()
        max_rows -= len(rows)
        if len(rows) == limit:
            out.append((lane, rows, now_ms))
            continue
        after = (rows[-1][12], rows[-1][0]) if rows else cursor
        found = conn.execute(_NEXT_DUE, (lane, after[0], after[1])).fetchone()
        out.append((lane, rows, None if found is None else int(found[0])))
    return out


# INDEXED BY: without statistics SQLite may pick another index and sort; this one seeks
# straight to the lane's cursor, in due order.
_LOAD: Final = (
    f"SELECT {_LOAD_COLUMNS} FROM deliveries d INDEXED BY deliveries_lane"
    " JOIN events e ON e.id = d.event_ref"
    f" WHERE d.lane = ? AND d.{_PENDING} AND (d.due_ms, d.id) > (?, ?) AND d.due_ms <= ?"
    " ORDER BY d.due_ms, d.id LIMIT ?"
)
_NEXT_DUE: Final = (
    f"SELECT due_ms FROM deliveries INDEXED BY deliveries_lane WHERE lane = ? AND {_PENDING}"
    " AND (due_ms, id) > (?, ?) ORDER BY due_ms, id LIMIT 1"
)


def pending_lanes(conn: sqlite3.Connection) -> list[str]:
    """Every lane with pending deliveries: one index seek per lane, not a scan of the rows."""
    rows = conn.execute(
        "WITH RECURSIVE lanes(lane) AS ("
        f" SELECT (SELECT lane FROM deliveries INDEXED BY deliveries_lane WHERE {_PENDING}"
        "  ORDER BY lane LIMIT 1)"
        " UNION ALL"
        f" SELECT (SELECT lane FROM deliveries INDEXED BY deliveries_lane WHERE {_PENDING}"
        "  AND lane > lanes.lane ORDER BY lane LIMIT 1) FROM lanes WHERE lanes.lane IS NOT NULL"
        ") SELECT lane FROM lanes WHERE lane IS NOT NULL"
    )
    return [r[0] for r in rows]


# One delivery has one result per write (it stays in the engine's memory until then), so
# every id comes once in the rows.
_UPDATE_RESULTS: Final = (
    "WITH r(state, reason, attempts, due_ms, account_id, last_status, last_error, updated_ms,"
    " lane, id, final) AS (VALUES {rows})"
    " UPDATE deliveries SET state = r.state, reason = r.reason, attempts = r.attempts,"
    " due_ms = r.due_ms, account_id = r.account_id, last_status = r.last_status,"
    " last_error = r.last_error, updated_ms = r.updated_ms,"
    " lane = COALESCE(r.lane, deliveries.lane) FROM r WHERE deliveries.id = r.id"
    # A delivery cancelled while its result was on the way stays cancelled, unless the
    # result says it went out (delivered) or can never go (dead): those are what happened.
    " AND (deliveries.state != 'cancelled' OR r.final)"
)
_INSERT_CLAIMS: Final = (
    "INSERT OR REPLACE INTO claims (delivery_id, event_id, app_id, network, tracker_id, outcome,"
    " source, engagement_type, engagement_time, campaign_name, rejected, created_ms)"
    " VALUES {rows}"
)
_INSERT_ATTRIBUTIONS: Final = (
    "INSERT INTO attributions (app_id, device_key, network, tracker_id, engagement_type,"
    " engagement_time, event_id, delivery_id, created_ms) VALUES {rows}"
)
# PRODUCT.md 1, step 6: the device's latest attribution is that of the latest engagement,
# whatever order X's answers arrive in. Times are ISO-8601 UTC with milliseconds and `Z`,
# all of one width, so they compare as text.
_UPSERT_DEVICES: Final = (
    "INSERT INTO devices (app_id, device_key, network, tracker_id, engagement_type,"
    " engagement_time, attributed_ms) VALUES {rows}"
    " ON CONFLICT (app_id, device_key) DO UPDATE SET network = excluded.network,"
    " tracker_id = excluded.tracker_id, engagement_type = excluded.engagement_type,"
    " engagement_time = excluded.engagement_time, attributed_ms = excluded.attributed_ms"
    " WHERE excluded.engagement_time >= devices.engagement_time"
)


# What a result says happened, which a cancel meanwhile does not undo (`_UPDATE_RESULTS`).
# Bound as 1 or 0, not as a bool: sqlite3 binds exact ints directly but looks a bool up
# among its adapters first, at several times the cost.
_FINAL_RESULTS: Final = ("delivered", "dead")


def write_results(conn: sqlite3.Connection, results: Iterable[Result], now_ms: int) -> None:
    updates = []
    claims = []
    attributions = []
    for r in results:
        updates.append(
            (r.state, r.reason, r.attempts, r.due_ms, r.account_id, r.last_status, r.last_error,
             now_ms, r.account_id, r.delivery_id, 1 if r.state in _FINAL_RESULTS else 0)
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
    _write_rows(conn, _UPDATE_RESULTS, 11, updates)
    _write_rows(conn, _INSERT_CLAIMS, 12, claims)
    if attributions:
        _write_rows(conn, _INSERT_ATTRIBUTIONS, 9, attributions)
        _write_rows(conn, _UPSERT_DEVICES, 7, [(*a[:6], now_ms) for a in attributions])


def held_groups(conn: sqlite3.Connection) -> list[HeldGroup]:
    """Held deliveries by what decides their release."""
    rows = conn.execute(
        "SELECT postback_id, x_account_id, MIN(app_id), MIN(network), COUNT(*)"
        " FROM deliveries INDEXED BY deliveries_held_group WHERE state = 'held'"
        " GROUP BY postback_id, x_account_id"
    )
    return [HeldGroup(*row) for row in rows]


def release_held(
    conn: sqlite3.Connection, postback_id: str, x_account_id: str | None, lane: str, now_ms: int
) -> int:
    """One group's held deliveries become ready again, in the lane of the account that will
    sign them now."""
    return conn.execute(
        "UPDATE deliveries SET state = 'ready', reason = NULL, lane = ?, due_ms = MAX(due_ms, ?),"
        " updated_ms = ? WHERE state = 'held' AND postback_id = ? AND x_account_id IS ?",
        (lane, now_ms, now_ms, postback_id, x_account_id),
    ).rowcount


def replay_dead(conn: sqlite3.Connection, ids: Sequence[int] | None, now_ms: int) -> dict[str, int]:
    """Dead deliveries (all, or those of `ids`) go out again with their retries restored;
    the count per lane they went back to."""
    sql = (
        "UPDATE deliveries SET state = 'ready', reason = NULL, attempts = 0, due_ms = ?,"
        " first_due_ms = ?, updated_ms = ?, lane = COALESCE(account_id, lane)"
        " WHERE state = 'dead' AND (? OR id IN (SELECT value FROM json_each(?)))"
        " RETURNING lane"
    )
    lanes: dict[str, int] = {}
    chosen = orjson.dumps(list(ids or ())).decode()
    for (lane,) in conn.execute(sql, (now_ms, now_ms, now_ms, ids is None, chosen)):
        lanes[lane] = lanes.get(lane, 0) + 1
    return lanes


def cancel(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None,
    postback_id: str | None,
    in_flight: Collection[int],
    now_ms: int,
) -> int:
    """Deliveries that have not gone out become `cancelled` (PRODUCT.md 2): those of `ids`,
    or every one of the postback. The ones whose request is at X (`in_flight`) finish."""
    where = "id IN (SELECT value FROM json_each(?))" if ids is not None else "postback_id = ?"
    chosen = orjson.dumps(list(ids)).decode() if ids is not None else postback_id
    return conn.execute(
        "UPDATE deliveries SET state = 'cancelled', reason = 'cancelled', updated_ms = ?"
        f" WHERE state IN ('scheduled', 'ready', 'held') AND {where}"
        " AND id NOT IN (SELECT value FROM json_each(?))",
        (now_ms, chosen, orjson.dumps(sorted(in_flight)).decode()),
    ).rowcount


def cancelled_among(conn: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE state = 'cancelled'"
            " AND id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(ids)).decode(),),
        )
    ]


def pending_of_postback(conn: sqlite3.Connection, postback_id: str) -> int:
    """Deliveries of a postback that have not gone out yet (pending or held)."""
    return int(
        conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE postback_id = ?"
            " AND state IN ('scheduled', 'ready', 'held')",
            (postback_id,),
        ).fetchone()[0]
    )


def count_by_state(conn: sqlite3.Connection, now_ms: int) -> dict[str, int]:
    counts = {
        "held": conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'held'").fetchone()[0],
        "dead": conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'").fetchone()[0],
    }
    pending = conn.execute(
        f"SELECT COALESCE(SUM(due_ms > ?), 0), COUNT(*) FROM deliveries WHERE {_PENDING}",
        (now_ms,),
    ).fetchone()
    counts["scheduled"] = int(pending[0])
    counts["ready"] = int(pending[1]) - int(pending[0])
    return counts


def device_attributions(
    conn: sqlite3.Connection, app_id: str, device_keys: Sequence[str]
) -> dict[str, tuple[str, str, int]]:
    """Each device's latest attribution as (network, engagement_time, attributed_ms);
    devices without one are absent."""
    found: dict[str, tuple[str, str, int]] = {}
    for chunk, marks in _chunks(device_keys):
        rows = conn.execute(
            "SELECT device_key, network, engagement_time, attributed_ms FROM devices"
            f" WHERE app_id = ? AND device_key IN ({marks})",
            (app_id, *chunk),
        )
        found.update((k, (n, t, at)) for k, n, t, at in rows)
    return found
