"""SQL of events, deliveries, claims and device attributions on PostgreSQL. Plain async
functions over one connection; the store (store.py) decides transactions and failures.

Arrays carry batches (`unnest`): one statement per table and batch, whatever its size. Rows
that several daemons may touch at once (device states, deliveries) are written in key
order, so that two commits never wait for each other crosswise (no deadlock).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Final

from postbackd.delivery.model import NewDelivery, Result
from postbackd.event import Event
from postbackd.store.base import DeviceAttribution, HeldGroup

from .rows import PENDING, affected

if TYPE_CHECKING:
    from .connect import Conn

# Cancels notify the other daemons, which may hold cancelled deliveries in memory.
CANCEL_CHANNEL: Final = "postbackd_cancel"
_INSERT_EVENTS: Final = """
INSERT INTO events (event_id, app_id, event_name, received_at_ms, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, id
"""
_INSERT_DELIVERIES: Final = """
INSERT INTO deliveries (event_id, postback_id, app_id, network, event_name, x_app_id,
    conversion_type, x_account_id, retry_attempts, state, reason, first_due_ms, due_ms,
    updated_ms, lane, event_ref)
SELECT e, p, a, n, en, xa, ct, xacc, ra, st, re, due, due, $13, l, ref
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::int[], $10::text[], $11::text[], $12::bigint[], $14::text[],
    $15::bigint[])
    AS r(e, p, a, n, en, xa, ct, xacc, ra, st, re, due, l, ref)
"""


async def accept(
    conn: Conn, planned: Sequence[tuple[Event, Sequence[NewDelivery]]], now_ms: int
) -> list[bool]:
    """Insert the events not stored yet with their deliveries, in the caller's transaction;
    per event, whether it was stored now. An event another daemon is storing at the same
    moment waits for that commit, then counts as a duplicate (the unique event id)."""
    first: dict[str, int] = {}
    for i, (event, _) in enumerate(planned):
        first.setdefault(event.event_id, i)
    events = [planned[i][0] for i in first.values()]
    # The events stored now, with their rows (the deliveries name them).
    stored: dict[str, int] = {
        r[0]: r[1]
        for r in await conn.fetch(
            _INSERT_EVENTS,
            [e.event_id for e in events],
            [e.app_id for e in events],
            [e.event_name for e in events],
            [e.received_at_ms for e in events],
            [e.to_json() for e in events],
        )
    }
    fresh = [
        first[event.event_id] == i and event.event_id in stored
        for i, (event, _) in enumerate(planned)
    ]
    columns: list[list[object]] = [[] for _ in range(14)]
    for (event, deliveries), is_fresh in zip(planned, fresh, strict=True):
        if not is_fresh:
            continue
        ref = stored[event.event_id]
        for d in deliveries:
            row = (event.event_id, d.postback_id, event.app_id, d.network, event.event_name,
                   d.x_app_id, d.conversion_type, d.x_account_id, d.retry_attempts, d.state,
                   d.reason, d.due_ms, d.lane, ref)  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    if columns[0]:
        await conn.execute(_INSERT_DELIVERIES, *columns[:12], now_ms, *columns[12:])
    return fresh


_UPDATE_RESULTS: Final = """
UPDATE deliveries d SET state = r.state, reason = r.reason, attempts = r.attempts,
    due_ms = r.due_ms, account_id = r.account_id, last_status = r.last_status,
    last_error = r.last_error, updated_ms = r.now_ms, lane = COALESCE(r.account_id, d.lane),
    lease_owner = NULL, lease_expires_ms = NULL
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[],
    $7::int[], $8::text[], $9::bigint[]) AS r(id, state, reason, attempts, due_ms, account_id,
    last_status, last_error, now_ms)
WHERE d.id = r.id
    -- A delivery cancelled while its result was on the way stays cancelled, unless the
    -- result says it went out (delivered) or can never go (dead): that is what happened.
    AND (d.state <> 'cancelled' OR r.state IN ('delivered', 'dead'))
"""
# The lease of a cancelled delivery whose result was not recorded ends all the same.
_END_LEASES: Final = """
UPDATE deliveries SET lease_owner = NULL, lease_expires_ms = NULL
WHERE id = ANY($1::bigint[]) AND lease_owner IS NOT NULL
"""
_UPSERT_CLAIM: Final = """
INSERT INTO claims (delivery_id, event_id, app_id, network, tracker_id, outcome, source,
    engagement_type, engagement_time, campaign_name, rejected, created_ms)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])
ON CONFLICT (delivery_id) DO UPDATE SET event_id = excluded.event_id,
    app_id = excluded.app_id, network = excluded.network, tracker_id = excluded.tracker_id,
    outcome = excluded.outcome, source = excluded.source,
    engagement_type = excluded.engagement_type, engagement_time = excluded.engagement_time,
    campaign_name = excluded.campaign_name, rejected = excluded.rejected,
    created_ms = excluded.created_ms
"""
_INSERT_ATTRIBUTION: Final = """
INSERT INTO attributions (app_id, device_key, network, tracker_id, engagement_type,
    engagement_time, event_id, delivery_id, created_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::bigint[], $9::bigint[])
"""
# PRODUCT.md 1, step 6: the device's latest attribution is that of the latest engagement,
# whatever order X's answers arrive in, at whichever daemon. Times are ISO-8601 UTC with
# milliseconds and `Z`, all of one width, so they compare as text (COLLATE "C": bytewise).
_UPSERT_DEVICE: Final = """
INSERT INTO devices (app_id, device_key, network, tracker_id, engagement_type,
    engagement_time, attributed_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::bigint[])
ON CONFLICT (app_id, device_key) DO UPDATE SET network = excluded.network,
    tracker_id = excluded.tracker_id, engagement_type = excluded.engagement_type,
    engagement_time = excluded.engagement_time, attributed_ms = excluded.attributed_ms
WHERE excluded.engagement_time COLLATE "C" >= devices.engagement_time COLLATE "C"
"""


async def write_results(conn: Conn, jobs: Sequence[tuple[Sequence[Result], int]]) -> None:
    """Record the results of a group commit's jobs (each its results and when) in the
    caller's transaction, in one statement per table whatever the number of jobs: the last
    result of a delivery wins, within a job and across them, as if the jobs were written
    one after the other."""
    latest: dict[int, tuple[Result, int]] = {}
    claims: dict[int, tuple[object, ...]] = {}
    attributions: list[tuple[str, str, str, str, str, str, str, int, int]] = []
    job_of: list[int] = []  # each attribution's job
    for job, (results, now_ms) in enumerate(jobs):
        in_job = {r.delivery_id: r for r in results}
        for r in in_job.values():
            latest[r.delivery_id] = (r, now_ms)
            if r.claim is not None:
                c = r.claim
                claims[r.delivery_id] = (
                    r.delivery_id, c.event_id, c.app_id, c.network, c.tracker_id, c.outcome,
                    c.source, c.engagement_type, c.engagement_time, c.campaign_name,
                    c.rejected.decode(), now_ms,
                )  # fmt: skip
            if r.attribution is not None:
                a = r.attribution
                attributions.append(
                    (a.app_id, a.device_key, a.network, a.tracker_id, a.engagement_type,
                     a.engagement_time, a.event_id, r.delivery_id, now_ms)
                )  # fmt: skip
                job_of.append(job)
    if not latest:
        return
    ordered = [latest[i] for i in sorted(latest)]
    await conn.execute(
        _UPDATE_RESULTS,
        [r.delivery_id for r, _ in ordered],
        [r.state for r, _ in ordered],
        [r.reason for r, _ in ordered],
        [r.attempts for r, _ in ordered],
        [r.due_ms for r, _ in ordered],
        [r.account_id for r, _ in ordered],
        [r.last_status for r, _ in ordered],
        [r.last_error for r, _ in ordered],
        [now_ms for _, now_ms in ordered],
    )
    await conn.execute(_END_LEASES, [r.delivery_id for r, _ in ordered])
    if claims:
        # A delivery's claim once per statement (ON CONFLICT touches a row once): its last.
        await conn.execute(_UPSERT_CLAIM, *_columns([claims[i] for i in sorted(claims)]))
    if attributions:
        await conn.execute(_INSERT_ATTRIBUTION, *_columns(attributions))
        # A device once per statement too: the attribution that wins when they are written
        # one after the other (the latest engagement; of equal ones, the later job's, and
        # within a job the last in key order), written in key order.
        devices: dict[tuple[str, str], tuple[object, ...]] = {}
        for _, row in sorted(
            zip(job_of, attributions, strict=True),
            key=lambda ja: (*ja[1][:2], ja[1][5], ja[0], *ja[1][2:5]),
        ):
            devices[(row[0], row[1])] = (*row[:6], row[8])
        await conn.execute(_UPSERT_DEVICE, *_columns([devices[k] for k in sorted(devices)]))


def _columns(rows: Sequence[Sequence[object]]) -> list[list[object]]:
    """Rows as one list per column: the arrays a statement's `unnest` takes."""
    return [list(column) for column in zip(*rows, strict=True)]


async def pending_lanes(conn: Conn) -> list[str]:
    """Every lane with pending deliveries: one index seek per lane (a loose index scan)."""
    rows = await conn.fetch(
        "WITH RECURSIVE lanes(lane) AS ("
        f" (SELECT lane FROM deliveries WHERE {PENDING} ORDER BY lane LIMIT 1)"
        " UNION ALL"
        f" SELECT (SELECT d.lane FROM deliveries d WHERE d.{PENDING} AND d.lane > l.lane"
        "  ORDER BY d.lane LIMIT 1) FROM lanes l WHERE l.lane IS NOT NULL"
        ") SELECT lane FROM lanes WHERE lane IS NOT NULL"
    )
    return [r[0] for r in rows]


async def held_groups(conn: Conn) -> list[HeldGroup]:
    rows = await conn.fetch(
        "SELECT postback_id, x_account_id, MIN(app_id), MIN(network), COUNT(*)"
        " FROM deliveries WHERE state = 'held' GROUP BY postback_id, x_account_id"
    )
    return [HeldGroup(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


async def release_held(
    conn: Conn, postback_id: str, x_account_id: str | None, lane: str, now_ms: int
) -> int:
    status = await conn.execute(
        "UPDATE deliveries SET state = 'ready', reason = NULL, lane = $1,"
        " due_ms = GREATEST(due_ms, $2), updated_ms = $2"
        " WHERE state = 'held' AND postback_id = $3 AND x_account_id IS NOT DISTINCT FROM $4",
        lane, now_ms, postback_id, x_account_id,
    )  # fmt: skip
    return affected(status)


async def replay_dead(conn: Conn, ids: Sequence[int] | None, now_ms: int) -> dict[str, int]:
    rows = await conn.fetch(
        "UPDATE deliveries SET state = 'ready', reason = NULL, attempts = 0, due_ms = $1,"
        " first_due_ms = $1, updated_ms = $1, lane = COALESCE(account_id, lane)"
        " WHERE state = 'dead' AND ($2 OR id = ANY($3::bigint[])) RETURNING lane",
        now_ms, ids is None, list(ids or ()),
    )  # fmt: skip
    lanes: dict[str, int] = {}
    for (lane,) in rows:
        lanes[lane] = lanes.get(lane, 0) + 1
    return lanes


async def cancel(
    conn: Conn,
    owner: str,
    ids: Sequence[int] | None,
    postback_id: str | None,
    in_flight: Collection[int],
    now_ms: int,
) -> int:
    """Deliveries not gone out become `cancelled` (PRODUCT.md 2), their leases ended; the
    ones whose request is at X (`in_flight`, this daemon's) finish. A delivery another
    daemon holds is cancelled too: told at once (NOTIFY, after the commit), that daemon
    drops those it has not sent; its result, if it was at X, says what happened."""
    where = "id = ANY($2::bigint[])" if ids is not None else "postback_id = $2"
    chosen: object = list(ids) if ids is not None else postback_id
    status = await conn.execute(
        "UPDATE deliveries SET state = 'cancelled', reason = 'cancelled', updated_ms = $1,"
        " lease_owner = NULL, lease_expires_ms = NULL"
        f" WHERE state IN ('scheduled', 'ready', 'held') AND {where}"
        " AND id <> ALL($3::bigint[])",
        now_ms, chosen, sorted(in_flight),
    )  # fmt: skip
    count = affected(status)
    if count:
        await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, owner)
    return count


async def cancelled_among(conn: Conn, ids: Sequence[int]) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM deliveries WHERE id = ANY($1::bigint[]) AND state = 'cancelled'",
        list(ids),
    )
    return [int(r[0]) for r in rows]


async def pending_of_postback(conn: Conn, postback_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT COUNT(*) FROM deliveries WHERE postback_id = $1"
            " AND state IN ('scheduled', 'ready', 'held')",
            postback_id,
        )
    )


async def count_by_state(conn: Conn, now_ms: int) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT COUNT(*) FROM deliveries WHERE state = 'held'),"
        " (SELECT COUNT(*) FROM deliveries WHERE state = 'dead'),"
        f" (SELECT COUNT(*) FILTER (WHERE due_ms > $1) FROM deliveries WHERE {PENDING}),"
        f" (SELECT COUNT(*) FROM deliveries WHERE {PENDING})",
        now_ms,
    )
    assert row is not None
    held, dead, scheduled, pending = (int(v) for v in row)
    return {"held": held, "dead": dead, "scheduled": scheduled, "ready": pending - scheduled}


async def device_attributions(
    conn: Conn, app_id: str, device_keys: Sequence[str]
) -> dict[str, DeviceAttribution]:
    rows = await conn.fetch(
        "SELECT device_key, network, engagement_time, attributed_ms FROM devices"
        " WHERE app_id = $1 AND device_key = ANY($2::text[])",
        app_id, list(device_keys),
    )  # fmt: skip
    return {k: (n, t, int(at)) for k, n, t, at in rows}
