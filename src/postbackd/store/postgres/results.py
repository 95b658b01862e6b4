"""Read queries behind the results API on PostgreSQL. The rows are shaped into the API's
items by store/results.py's functions, the same for both stores."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import orjson

from postbackd.store.base import BY_DUE, Key, Row
from postbackd.store.results import _DELIVERY_COLUMNS, _NOT_ACCEPTED, _claim, _delivery, iso_ms

if TYPE_CHECKING:
    import asyncpg

    from .connect import Conn


def _dicts(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


async def list_deliveries(
    conn: Conn,
    state: str | None,
    after: Key | None,
    limit: int,
    now_ms: int,
    in_flight: Collection[int] = (),
) -> list[Row]:
    flying = sorted(in_flight)
    if state in BY_DUE:
        op = ">" if state == "scheduled" else "<="
        due, last = after or (-(2**63), 0)
        rows = _dicts(await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state IN ('scheduled', 'ready')"
            f" AND due_ms {op} $1 AND (due_ms, id) > ($2, $3) AND id <> ALL($4::bigint[])"
            " ORDER BY due_ms, id LIMIT $5",
            now_ms, due, last, flying, limit,
        ))  # fmt: skip
        return [((r["due_ms"], r["id"]), _delivery(r, now_ms)) for r in rows]
    last = after[0] if after else 0
    if state == "in_flight":
        records = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ANY($1::bigint[])"
            " AND id > $2 ORDER BY id LIMIT $3",
            flying, last, limit,
        )  # fmt: skip
    elif state is None:
        records = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2",
            last, limit,
        )  # fmt: skip
    elif state in ("held", "dead"):
        # A literal state, so that its partial index serves the query.
        records = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = '{state}' AND id > $1"
            " ORDER BY id LIMIT $2",
            last, limit,
        )  # fmt: skip
    else:
        records = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = $1 AND id > $2"
            " ORDER BY id LIMIT $3",
            state, last, limit,
        )  # fmt: skip
    return [((r["id"],), _delivery(r, now_ms, in_flight)) for r in _dicts(records)]


async def event_details(
    conn: Conn, event_id: str, now_ms: int, in_flight: Collection[int] = ()
) -> dict[str, Any] | None:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = await conn.fetchrow("SELECT id, body FROM events WHERE event_id = $1", event_id)
        if found is None:
            return None
        deliveries = _dicts(await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE event_ref = $1 ORDER BY id",
            found[0],
        ))  # fmt: skip
        claims = _dicts(await conn.fetch(
            "SELECT delivery_id, tracker_id, outcome, source, engagement_type,"
            " engagement_time, campaign_name, rejected, created_ms FROM claims"
            " WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_ref = $1)"
            " ORDER BY delivery_id",
            found[0],
        ))  # fmt: skip
    event = orjson.loads(found[1])
    event["received_at"] = iso_ms(event.pop("received_at_ms"))
    event["conversion_time"] = iso_ms(event.pop("conversion_time_ms"))
    return {
        "event": event,
        "deliveries": [_delivery(d, now_ms, in_flight) for d in deliveries],
        "claims": [_claim(c) for c in claims],
    }


async def list_attributions(
    conn: Conn, app_id: str | None, tracker_id: str | None, after: Key | None, limit: int
) -> list[Row]:
    rows = _dicts(await conn.fetch(
        "SELECT id, app_id, device_key AS device_id, network, tracker_id, engagement_type,"
        " engagement_time, event_id, delivery_id, created_ms FROM attributions"
        " WHERE id > $1 AND ($2::text IS NULL OR app_id = $2)"
        " AND ($3::text IS NULL OR tracker_id = $3) ORDER BY id LIMIT $4",
        after[0] if after else 0, app_id, tracker_id, limit,
    ))  # fmt: skip
    for row in rows:
        row["attributed_at"] = iso_ms(row.pop("created_ms"))
    return [((row["id"],), row) for row in rows]


async def tracker_report(conn: Conn, app_id: str | None) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}

    def entry(tracker_id: str | None) -> dict[str, Any]:
        key = tracker_id or ""
        if key not in report:
            report[key] = {"claims": {}, "attributions": {}}
        return report[key]

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        claims = await conn.fetch(
            "SELECT tracker_id, outcome, COUNT(*) FROM claims"
            " WHERE $1::text IS NULL OR app_id = $1 GROUP BY tracker_id, outcome",
            app_id,
        )
        attributions = await conn.fetch(
            "SELECT tracker_id, engagement_type, COUNT(*) FROM attributions"
            " WHERE $1::text IS NULL OR app_id = $1 GROUP BY tracker_id, engagement_type",
            app_id,
        )
    for tracker_id, outcome, n in claims:
        entry(tracker_id)["claims"][outcome] = n
    for tracker_id, kind, n in attributions:
        entry(tracker_id)["attributions"][kind] = n
    for item in report.values():
        counts: dict[str, int] = item["claims"]
        item["x_claimed"] = sum(n for outcome, n in counts.items() if outcome != "not_claimed")
        item["accepted"] = counts.get("attributed", 0) + counts.get("claimed", 0)
        # The gap to X's dashboard, explained by reason.
        item["not_accepted"] = {o: counts[o] for o in _NOT_ACCEPTED if counts.get(o)}
    return report
