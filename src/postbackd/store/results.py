"""Read queries behind the results API: deliveries, events, claims, attributions, reports."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any, Final

import orjson

from postbackd import ids
from postbackd.store.base import BY_DUE, Key

_DELIVERY_COLUMNS: Final = (
    "id, event_id, postback_id, app_id, network, event_name, conversion_type, state, reason,"
    " attempts, retry_attempts, first_due_ms, due_ms, account_id, last_status, last_error,"
    " updated_ms"
)
_NOT_ACCEPTED: Final = (
    "rejected_data_sharing", "no_tracker", "rejected_outside_window", "rejected_invalid_time",
    "rejected_malformed",
)  # fmt: skip


def iso_ms(ms: int | None) -> str | None:
    return None if ms is None else ids.iso_ms(ms)


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _delivery(row: dict[str, Any], now_ms: int, in_flight: Collection[int] = ()) -> dict[str, Any]:
    state = row["state"]
    if state in ("scheduled", "ready"):
        # PRODUCT.md 2, "Delivery states": a request at X shows as in_flight (the engine
        # knows which; the store holds them as pending until X answers).
        if row["id"] in in_flight:
            state = "in_flight"
        else:
            state = "scheduled" if row["due_ms"] > now_ms else "ready"
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "postback_id": row["postback_id"],
        "app_id": row["app_id"],
        "network": row["network"],
        "event_name": row["event_name"],
        "conversion_type": row["conversion_type"],
        "state": state,
        "reason": row["reason"],
        "attempts": row["attempts"],
        "retry_attempts": row["retry_attempts"],
        "first_due_at": iso_ms(row["first_due_ms"]),
        "due_at": iso_ms(row["due_ms"]),
        "x_account_id": row["account_id"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "updated_at": iso_ms(row["updated_ms"]),
    }


def list_deliveries(
    conn: sqlite3.Connection,
    state: str | None,
    after: Key | None,
    limit: int,
    now_ms: int,
    in_flight: Collection[int] = (),
) -> list[tuple[Key, dict[str, Any]]]:
    """Up to `limit` deliveries after the key `after`, each with its key, in list order.
    `in_flight`: the ids whose request is at X (the engine's), listed as such."""
    flying = orjson.dumps(sorted(in_flight)).decode()
    if state in BY_DUE:
        op = ">" if state == "scheduled" else "<="
        due, last = after or (-(2**63), 0)
        cur = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state IN ('scheduled', 'ready')"
            f" AND due_ms {op} ? AND (due_ms, id) > (?, ?)"
            " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY due_ms, id LIMIT ?",
            (now_ms, due, last, flying, limit),
        )
        return [((r["due_ms"], r["id"]), _delivery(r, now_ms)) for r in _rows(cur)]
    last = after[0] if after else 0
    if state == "in_flight":
        cur = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id IN"
            " (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
            (flying, last, limit),
        )
    elif state is None:
        cur = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id > ? ORDER BY id LIMIT ?",
            (last, limit),
        )
    elif state in ("held", "dead"):
        # A literal state, so that its partial index serves the query.
        cur = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = '{state}' AND id > ?"
            " ORDER BY id LIMIT ?",
            (last, limit),
        )
    else:
        cur = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (state, last, limit),
        )
    return [((r["id"],), _delivery(r, now_ms, in_flight)) for r in _rows(cur)]


def _claim(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["rejected"] = orjson.loads(row["rejected"])
    row["created_at"] = iso_ms(row.pop("created_ms"))
    return row


def event_details(
    conn: sqlite3.Connection, event_id: str, now_ms: int, in_flight: Collection[int] = ()
) -> dict[str, Any] | None:
    found = conn.execute("SELECT id, body FROM events WHERE event_id = ?", (event_id,)).fetchone()
    if found is None:
        return None
    ref, body = found
    event = orjson.loads(body)
    deliveries = _rows(conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE event_ref = ? ORDER BY id", (ref,)
    ))  # fmt: skip
    claims = _rows(conn.execute(
        "SELECT delivery_id, tracker_id, outcome, source, engagement_type, engagement_time,"
        " campaign_name, rejected, created_ms FROM claims"
        " WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_ref = ?)"
        " ORDER BY delivery_id",
        (ref,),
    ))  # fmt: skip
    event["received_at"] = iso_ms(event.pop("received_at_ms"))
    event["conversion_time"] = iso_ms(event.pop("conversion_time_ms"))
    return {
        "event": event,
        "deliveries": [_delivery(d, now_ms, in_flight) for d in deliveries],
        "claims": [_claim(c) for c in claims],
    }


def list_attributions(
    conn: sqlite3.Connection,
    app_id: str | None,
    tracker_id: str | None,
    after: Key | None,
    limit: int,
) -> list[tuple[Key, dict[str, Any]]]:
    """Up to `limit` attributions with an id above `after`, oldest first, each with its key."""
    where = ["id > ?"]
    args: list[object] = [after[0] if after else 0]
    if app_id is not None:
        where.append("app_id = ?")
        args.append(app_id)
    if tracker_id is not None:
        where.append("tracker_id = ?")
        args.append(tracker_id)
    rows = _rows(conn.execute(
        "SELECT id, app_id, device_key AS device_id, network, tracker_id, engagement_type,"
        f" engagement_time, event_id, delivery_id, created_ms FROM attributions"
        f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        (*args, limit),
    ))  # fmt: skip
    for row in rows:
        row["attributed_at"] = iso_ms(row.pop("created_ms"))
    return [((row["id"],), row) for row in rows]


def tracker_report(conn: sqlite3.Connection, app_id: str | None) -> dict[str, dict[str, Any]]:
    """Per tracker id: claims by outcome and attributions by engagement type."""
    clause, args = ("WHERE app_id = ?", (app_id,)) if app_id else ("", ())
    report: dict[str, dict[str, Any]] = {}

    def entry(tracker_id: str | None) -> dict[str, Any]:
        key = tracker_id or ""
        if key not in report:
            report[key] = {"claims": {}, "attributions": {}}
        return report[key]

    for tracker_id, outcome, n in conn.execute(
        f"SELECT tracker_id, outcome, COUNT(*) FROM claims {clause} GROUP BY tracker_id, outcome",
        args,
    ):
        entry(tracker_id)["claims"][outcome] = n
    for tracker_id, kind, n in conn.execute(
        f"SELECT tracker_id, engagement_type, COUNT(*) FROM attributions {clause}"
        " GROUP BY tracker_id, engagement_type",
        args,
    ):
        entry(tracker_id)["attributions"][kind] = n
    for item in report.values():
        claims: dict[str, int] = item["claims"]
        x_claimed = sum(n for outcome, n in claims.items() if outcome != "not_claimed")
        accepted = claims.get("attributed", 0) + claims.get("claimed", 0)
        item["x_claimed"] = x_claimed
        item["accepted"] = accepted
        # The gap to X's dashboard, explained by reason.
        item["not_accepted"] = {o: claims[o] for o in _NOT_ACCEPTED if claims.get(o)}
    return report
