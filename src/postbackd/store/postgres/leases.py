"""Leasing due work among daemons (PRODUCT.md 5): no coordinator, only row locks and leases.

A daemon leases a batch of due deliveries per lane with `FOR UPDATE SKIP LOCKED`: rows
another daemon is leasing at that instant are skipped, not waited for, and each row leased
gets this daemon as `lease_owner` until `lease_expires_ms`. A leased row is not handed to
anyone else until its lease runs out; the holder renews its leases well within that time,
and a result (or a release) ends the lease. A daemon that dies (kill -9, a lost host) stops
renewing: once its leases run out, its deliveries are due again for the others. Nothing is
lost; what it had in flight may reach X twice (at-least-once, PRODUCT.md 2).

Fairness (PRODUCT.md 2, "Isolation", across daemons): each lane (X account) is read on its
own, with its own limit (the loader's share for that lane), in one statement for all lanes
(a LATERAL read per lane), and the batch's total is split evenly among the lanes asking:
one lane's backlog of any size never fills another's share. What a lane with less due work
leaves of its part goes to the others in a further round.

Lease times are the daemons' wall clocks (as due times are): the hosts' clocks are kept in
step (NTP), and a lease lasts far longer than any skew between them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Final

from postbackd.store.base import DeliveryRow, LaneRead, LaneRows

from .rows import PENDING, affected

if TYPE_CHECKING:
    from .connect import Conn


# Statements per lease_due at most: the first splits the batch evenly, the next ones hand
# what lanes with less due work left to the others.
ROUNDS: Final = 3


def _takeable(now: str, owner: str) -> str:
    """A row this daemon may lease at `now`: nobody holds it, or its holder's lease ran out,
    or it holds the row itself and it lies after the lane's position (`w.after_due`,
    `w.after_id`): the loader reads its own rows once, as from the embedded store, and
    never again while it holds them."""
    return (
        f"(d.lease_expires_ms IS NULL OR d.lease_expires_ms <= {now}"
        f" OR (d.lease_owner = {owner} AND (d.due_ms, d.id) > (w.after_due, w.after_id)))"
    )


def _candidates(column: str, now: str, owner: str, limit: str) -> str:
    """The rows of lane `w.lane` this daemon may take, as up to three index range reads of
    at most `limit` rows each (`column` of each): the free ones in due order (the partial
    index deliveries_free), its own after the lane's position (deliveries_owned), and
    those whose lease ran out (deliveries_lease_expiry). One scan of the lane's pending
    rows with `_takeable` as a filter would step over every row leased before the first
    free one: all that the daemons hold in memory, at each read."""
    return f"""
        (SELECT f.{column} FROM deliveries f
         WHERE f.lane = w.lane AND f.{PENDING} AND f.lease_owner IS NULL AND f.due_ms <= {now}
         ORDER BY f.due_ms, f.id LIMIT {limit})
        UNION ALL
        (SELECT o.{column} FROM deliveries o
         WHERE o.lease_owner = {owner} AND o.lane = w.lane AND o.{PENDING}
             AND (o.due_ms, o.id) > (w.after_due, w.after_id) AND o.due_ms <= {now}
         ORDER BY o.due_ms, o.id LIMIT {limit})
        UNION ALL
        (SELECT x.{column} FROM deliveries x
         WHERE x.lane = w.lane AND x.lease_owner IS NOT NULL AND x.lease_expires_ms <= {now}
             AND x.{PENDING} AND x.due_ms <= {now}
         ORDER BY x.lease_expires_ms LIMIT {limit})"""


# A delivery row as the loader takes it (store/base.py DeliveryRow, but for the body).
_NAMES: Final = (
    "id", "event_id", "postback_id", "app_id", "network", "event_name", "x_app_id",
    "conversion_type", "x_account_id", "retry_attempts", "attempts", "first_due_ms", "due_ms",
    "lane",
)  # fmt: skip
_COLUMNS: Final = ", ".join(f"d.{c}" for c in _NAMES)
_TAKEN_COLUMNS: Final = ", ".join(f"t.{c}" for c in _NAMES)

# $1..$4: per lane, its name, most rows, and position (due_ms, id); $5 now; $6 this
# daemon; $7 how long a lease lasts. The candidates are read without locks; the rows
# leased are then locked and checked again (a row another daemon leased meanwhile is
# skipped, or no longer takeable once its lease committed). A row this daemon holds
# already (the loader reads it again after a rewind) is returned as it is, not written:
# its lease runs, renewed with the others; only the rows taken are written.
_LEASE: Final = f"""
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
        AS w(lane, n, after_due, after_id)
), picked AS (
    SELECT p.id, p.held FROM wanted w CROSS JOIN LATERAL (
        SELECT d.id, (d.lease_owner = $6 AND d.lease_expires_ms > $5) IS TRUE AS held
        FROM deliveries d
        WHERE d.id = ANY(ARRAY({_candidates("id", "$5", "$6", "w.n")}))
            AND d.lane = w.lane AND d.{PENDING} AND d.due_ms <= $5 AND {_takeable("$5", "$6")}
        ORDER BY d.due_ms, d.id
        LIMIT w.n
        FOR UPDATE OF d SKIP LOCKED
    ) p
), taken AS (
    UPDATE deliveries d SET lease_owner = $6, lease_expires_ms = $5::bigint + $7::bigint
    FROM picked
    WHERE d.id = picked.id AND NOT picked.held
    RETURNING {_COLUMNS}, d.event_ref
)
SELECT {_TAKEN_COLUMNS}, e.body FROM taken t JOIN events e ON e.id = t.event_ref
UNION ALL
SELECT {_COLUMNS}, e.body
FROM picked JOIN deliveries d ON d.id = picked.id JOIN events e ON e.id = d.event_ref
WHERE picked.held
"""

# When a lane that gave fewer rows than asked has work again: its earliest row free or its
# own after what was just read (one index seek each), or the earliest lease of another
# daemon in it to run out (a dead daemon's rows come back then; this reads past this
# daemon's own leases in the lane, but only when a lane ran dry). $1..$3: per lane, its
# name and the position after its last row read; $4 now; $5 this daemon.
_NEXT: Final = f"""
SELECT w.lane, LEAST(
    (SELECT f.due_ms FROM deliveries f
     WHERE f.lane = w.lane AND f.{PENDING} AND f.lease_owner IS NULL
     ORDER BY f.due_ms, f.id LIMIT 1),
    (SELECT o.due_ms FROM deliveries o
     WHERE o.lease_owner = $5 AND o.lane = w.lane AND o.{PENDING}
         AND (o.due_ms, o.id) > (w.after_due, w.after_id)
     ORDER BY o.due_ms, o.id LIMIT 1),
    (SELECT d.lease_expires_ms FROM deliveries d
     WHERE d.lane = w.lane AND d.lease_owner IS NOT NULL AND d.lease_owner <> $5
         AND d.lease_expires_ms > $4
     ORDER BY d.lease_expires_ms LIMIT 1),
    (SELECT x.due_ms FROM deliveries x
     WHERE x.lane = w.lane AND x.lease_owner IS NOT NULL AND x.lease_expires_ms <= $4
         AND x.{PENDING}
     ORDER BY x.due_ms LIMIT 1)
) FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(lane, after_due, after_id)
"""


def split_fairly(limits: Sequence[int], total: int) -> list[int]:
    """Each lane's limit cut so that they add up to `total` at most, evenly: a lane that
    asks for less than an even share keeps what it asked for, and what it leaves goes to
    the others (water-filling); a remainder goes one row each to the first lanes."""
    out = [0] * len(limits)
    left = total
    waiting = sorted((n, i) for i, n in enumerate(limits) if n > 0)
    while waiting:
        share = left // len(waiting)
        n, i = waiting[0]
        if n <= share:
            out[i] = n
            left -= n
            waiting.pop(0)
            continue
        extra = left - share * len(waiting)
        for k, i in enumerate(sorted(i for _, i in waiting)):
            out[i] = share + (1 if k < extra else 0)
        break
    return out


async def lease_due(
    conn: Conn,
    owner: str,
    reads: Sequence[LaneRead],
    now_ms: int,
    max_rows: int,
    lease_ms: int,
) -> list[LaneRows]:
    """Lease each lane's due deliveries: the free ones wherever they lie (before the
    lane's position too: a dead daemon's, ones another daemon released or accepted
    meanwhile), and this daemon's own after the position.

    The batch is split evenly among the lanes; what a lane with less due work leaves goes
    to the others in a further round (at most ROUNDS statements in all)."""
    wanted = {lane: n for lane, _, n in reads if n > 0}
    after = {lane: cursor for lane, cursor, n in reads if n > 0}
    found: dict[str, list[DeliveryRow]] = {lane: [] for lane in wanted}
    exhausted: set[str] = set()  # gave fewer rows than its cut: nothing more due now
    left = max_rows
    for _ in range(ROUNDS):
        open_lanes = [ln for ln in wanted if ln not in exhausted and len(found[ln]) < wanted[ln]]
        cuts = split_fairly([wanted[ln] - len(found[ln]) for ln in open_lanes], left)
        asked = [(ln, n) for ln, n in zip(open_lanes, cuts, strict=True) if n > 0]
        if not asked:
            break
        records = await conn.fetch(
            _LEASE,
            [ln for ln, _ in asked],
            [n for _, n in asked],
            [after[ln][0] for ln, _ in asked],
            [after[ln][1] for ln, _ in asked],
            now_ms,
            owner,
            lease_ms,
        )
        got: dict[str, int] = {}
        for record in records:
            row: DeliveryRow = tuple(record)
            lane = row[13]
            found[lane].append(row)
            got[lane] = got.get(lane, 0) + 1
            # Read now, so held from here on: the next round starts after it.
            after[lane] = max(after[lane], (row[12], row[0]))
        left -= len(records)
        exhausted.update(ln for ln, n in asked if got.get(ln, 0) < n)
    next_due: dict[str, int | None] = {}
    if exhausted:
        lanes = sorted(exhausted)
        for lane, due in await conn.fetch(
            _NEXT,
            lanes,
            [after[ln][0] for ln in lanes],
            [after[ln][1] for ln in lanes],
            now_ms,
            owner,
        ):
            next_due[lane] = None if due is None else int(due)
    out: list[LaneRows] = []
    for lane in wanted:
        rows = sorted(found[lane], key=lambda r: (r[12], r[0]))
        out.append((lane, rows, next_due[lane] if lane in exhausted else now_ms))
    return out


async def renew(conn: Conn, owner: str, now_ms: int, lease_ms: int) -> int:
    """Extend every lease `owner` holds; how many."""
    status = await conn.execute(
        "UPDATE deliveries SET lease_expires_ms = $2::bigint + $3::bigint WHERE lease_owner = $1",
        owner, now_ms, lease_ms,
    )  # fmt: skip
    return affected(status)


async def release(conn: Conn, owner: str, ids: Collection[int] | None) -> int:
    """Give back `owner`'s leases (of `ids`, or all): due again for any daemon at once."""
    if ids is None:
        status = await conn.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_ms = NULL"
            " WHERE lease_owner = $1",
            owner,
        )
    else:
        status = await conn.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_ms = NULL"
            " WHERE lease_owner = $1 AND id = ANY($2::bigint[])",
            owner, sorted(ids),
        )  # fmt: skip
    return affected(status)
