"""Versioned schema of the PostgreSQL store: its own list, append-only like the SQLite one
(store/migrations.py). Each entry upgrades the database by one version; an entry is never
edited once released, only appended.

The versions applied are recorded in `schema_migrations` with each script's SHA-256: a
database whose recorded checksum differs from this list's (a released migration edited
after the fact) is refused at start, since that database never got the edited text. Several
daemons starting at once migrate one at a time (a transaction-scoped advisory lock); each
migration commits with its version row or not at all (PostgreSQL's DDL is transactional).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Final

from postbackd.errors import PostbackdError

if TYPE_CHECKING:
    from .connect import Conn

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's key: any constant that no other user of the database takes.
MIGRATION_LOCK: Final = 0x706F73746261636B  # "postback"

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the schema of SQLite's migrations 1 to 4 in PostgreSQL's terms. Configuration rows
    # carry `seq` (their creation order, which SQLite's rowid gives: "newest tracker",
    # "earliest account"); booleans are BOOLEAN, lists TEXT[]. Deliveries carry a lease:
    # the daemon that holds one (`lease_owner`) until `lease_expires_ms`; a lease that ran
    # out makes the delivery due again for any daemon (PRODUCT.md 5). Delivery and
    # attribution ids come from their identity sequences, shared by every daemon.
    """
    CREATE TABLE apps (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        platform TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
        bundle_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE x_accounts (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        access_token TEXT NOT NULL,
        access_token_secret TEXT NOT NULL,
        ammp BOOLEAN NOT NULL,
        authenticated BOOLEAN NOT NULL,
        authenticated_at TEXT,
        last_auth_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE campaigns (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX campaigns_name ON campaigns(app_id, lower(name));
    CREATE TABLE segments (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX segments_name ON segments(campaign_id, lower(name));
    CREATE TABLE trackers (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id),
        segment_id TEXT NOT NULL REFERENCES segments(id),
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        network TEXT NOT NULL,
        "default" BOOLEAN NOT NULL,
        x_account_ids TEXT[] NOT NULL,
        bundle_id TEXT NOT NULL,
        target_event TEXT NOT NULL,
        post_engagement_window_days INTEGER NOT NULL,
        post_view_window_days INTEGER NOT NULL,
        event_matching_event TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX trackers_name ON trackers(app_id, lower(name));
    CREATE UNIQUE INDEX trackers_default ON trackers(app_id, network) WHERE "default";
    CREATE TABLE postbacks (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id),
        network TEXT NOT NULL,
        event_name TEXT NOT NULL,
        x_app_id TEXT NOT NULL,
        conversion_type TEXT NOT NULL,
        x_account_id TEXT REFERENCES x_accounts(id),
        delivery_delay_s INTEGER NOT NULL,
        retry_attempts INTEGER NOT NULL,
        delivery_method TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX postbacks_event ON postbacks(app_id, network, event_name);
    -- Every configuration change bumps the version in its own transaction and notifies
    -- the other daemons (LISTEN postbackd_config); a daemon that reconnects compares it
    -- with the version of the index it holds.
    CREATE TABLE config_version (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        version BIGINT NOT NULL
    );
    INSERT INTO config_version (version) VALUES (0);

    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        app_id TEXT NOT NULL,
        event_name TEXT NOT NULL,
        received_at_ms BIGINT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE TABLE deliveries (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        postback_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        network TEXT NOT NULL,
        event_name TEXT NOT NULL,
        x_app_id TEXT NOT NULL,
        conversion_type TEXT NOT NULL,
        x_account_id TEXT,
        retry_attempts INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        first_due_ms BIGINT NOT NULL,
        due_ms BIGINT NOT NULL,
        account_id TEXT,
        last_status INTEGER,
        last_error TEXT,
        updated_ms BIGINT NOT NULL,
        lane TEXT NOT NULL DEFAULT '',
        lease_owner TEXT,
        lease_expires_ms BIGINT
    );
    CREATE INDEX deliveries_event ON deliveries(event_id);
    -- The leasing scan: each lane's pending deliveries in due order.
    CREATE INDEX deliveries_lane ON deliveries(lane, due_ms, id)
        WHERE state IN ('scheduled', 'ready');
    -- What a daemon holds: renewed and released by owner. Leased rows are few (what the
    -- daemons hold in memory): a result or a release ends the lease.
    CREATE INDEX deliveries_leased ON deliveries(lease_owner)
        WHERE lease_owner IS NOT NULL;
    -- When a lane's leases run out: a dead daemon's rows come back then.
    CREATE INDEX deliveries_lease_expiry ON deliveries(lane, lease_expires_ms)
        WHERE lease_owner IS NOT NULL;
    CREATE INDEX deliveries_held ON deliveries(id) WHERE state = 'held';
    CREATE INDEX deliveries_held_group ON deliveries(postback_id, x_account_id)
        WHERE state = 'held';
    CREATE INDEX deliveries_dead ON deliveries(id) WHERE state = 'dead';
    CREATE TABLE claims (
        delivery_id BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        network TEXT NOT NULL,
        tracker_id TEXT,
        outcome TEXT NOT NULL,
        source TEXT,
        engagement_type TEXT,
        engagement_time TEXT,
        campaign_name TEXT,
        rejected TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE INDEX claims_event ON claims(event_id);
    CREATE INDEX claims_tracker ON claims(app_id, tracker_id);
    CREATE TABLE attributions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        app_id TEXT NOT NULL,
        device_key TEXT NOT NULL,
        network TEXT NOT NULL,
        tracker_id TEXT NOT NULL,
        engagement_type TEXT NOT NULL,
        engagement_time TEXT NOT NULL,
        event_id TEXT NOT NULL,
        delivery_id BIGINT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE INDEX attributions_app ON attributions(app_id, tracker_id, id);
    CREATE INDEX attributions_created ON attributions(created_ms);
    CREATE TABLE devices (
        app_id TEXT NOT NULL,
        device_key TEXT NOT NULL,
        network TEXT NOT NULL,
        tracker_id TEXT NOT NULL,
        engagement_type TEXT NOT NULL,
        engagement_time TEXT NOT NULL,
        attributed_ms BIGINT NOT NULL,
        PRIMARY KEY (app_id, device_key)
    );
    CREATE INDEX devices_attributed ON devices(attributed_ms);
    """,
    # Shared rate budgets (PRODUCT.md 5; store/postgres/budgets.py): one row per X account,
    # the state of its current window that every daemon takes slices from. `window_no`
    # counts the windows, so that a slice (or a return) of an ended window is told from the
    # current one; `confirmed` once an answer of X named the window's end. The two
    # functions each change the row under its lock in one round trip.
    """
    CREATE TABLE rate_budgets (
        account_id TEXT PRIMARY KEY,
        window_no BIGINT NOT NULL,
        window_end_ms BIGINT NOT NULL,
        confirmed BOOLEAN NOT NULL,
        window_limit INTEGER NOT NULL,
        granted INTEGER NOT NULL
    );
    CREATE FUNCTION postbackd_take_budget(
        p_account TEXT, p_want INTEGER, p_now BIGINT, p_cap INTEGER, p_window BIGINT
    ) RETURNS TABLE (o_granted INTEGER, o_window_no BIGINT, o_window_end_ms BIGINT)
    LANGUAGE plpgsql AS $$
    DECLARE
        b rate_budgets%ROWTYPE;
        n INTEGER;
    BEGIN
        INSERT INTO rate_budgets VALUES (p_account, 0, 0, FALSE, p_cap, 0)
            ON CONFLICT (account_id) DO NOTHING;
        SELECT * INTO b FROM rate_budgets r WHERE r.account_id = p_account FOR UPDATE;
        IF b.window_end_ms <= p_now THEN
            b.window_no := b.window_no + 1;
            b.window_end_ms := p_now + p_window;
            b.confirmed := FALSE;
            b.granted := 0;
        END IF;
        b.window_limit := LEAST(b.window_limit, p_cap);
        n := LEAST(GREATEST(p_want, 0), GREATEST(b.window_limit - b.granted, 0));
        UPDATE rate_budgets r SET window_no = b.window_no, window_end_ms = b.window_end_ms,
            confirmed = b.confirmed, window_limit = b.window_limit, granted = b.granted + n
            WHERE r.account_id = p_account;
        RETURN QUERY SELECT n, b.window_no, b.window_end_ms;
    END
    $$;
    CREATE FUNCTION postbackd_correct_budget(
        p_account TEXT, p_limit INTEGER, p_remaining INTEGER, p_reset BIGINT, p_now BIGINT,
        p_cap INTEGER, p_limited BOOLEAN
    ) RETURNS TABLE (o_window_no BIGINT, o_window_end_ms BIGINT)
    LANGUAGE plpgsql AS $$
    DECLARE
        b rate_budgets%ROWTYPE;
        is_open BOOLEAN;
        -- GREATEST skips NULLs: an absent remaining must stay absent.
        x_remaining INTEGER := CASE WHEN p_remaining < 0 THEN 0 ELSE p_remaining END;
    BEGIN
        INSERT INTO rate_budgets VALUES (p_account, 0, 0, FALSE, p_cap, 0)
            ON CONFLICT (account_id) DO NOTHING;
        SELECT * INTO b FROM rate_budgets r WHERE r.account_id = p_account FOR UPDATE;
        is_open := b.window_end_ms > p_now;
        IF p_limit > 0 THEN  -- a limit of 0 would stall the account forever
            b.window_limit := LEAST(p_limit, p_cap);
        END IF;
        IF p_reset IS NULL OR (is_open AND (p_reset = b.window_end_ms
                OR (p_now < p_reset AND (NOT b.confirmed OR p_reset < b.window_end_ms)))) THEN
            -- The current window: X counts what reached it; the lower count is the true one.
            IF is_open THEN
                IF x_remaining IS NOT NULL THEN
                    b.granted := GREATEST(b.granted, b.window_limit - x_remaining);
                END IF;
                IF p_limited THEN
                    b.granted := GREATEST(b.granted, b.window_limit);
                END IF;
                IF p_reset IS NOT NULL THEN
                    b.window_end_ms := p_reset;
                    b.confirmed := TRUE;
                END IF;
            END IF;
        ELSIF p_reset > p_now AND (NOT is_open OR p_reset > b.window_end_ms) THEN
            -- X has moved on to a window the row knows nothing of: X's count is the one.
            b.window_no := b.window_no + 1;
            b.window_end_ms := p_reset;
            b.confirmed := TRUE;
            b.granted := CASE WHEN p_limited THEN b.window_limit
                ELSE b.window_limit - LEAST(b.window_limit, COALESCE(x_remaining, b.window_limit))
                END;
        END IF;
        UPDATE rate_budgets r SET window_no = b.window_no, window_end_ms = b.window_end_ms,
            confirmed = b.confirmed, window_limit = b.window_limit, granted = b.granted
            WHERE r.account_id = p_account;
        RETURN QUERY SELECT b.window_no, b.window_end_ms;
    END
    $$;
    """,
    # 3: the leasing reads seek what a daemon may take instead of stepping over what the
    # daemons hold: the free pending rows of a lane in due order, and a daemon's own leases
    # by lane in due order (which also serves renewing and releasing by owner, as
    # deliveries_leased did).
    """
    CREATE INDEX deliveries_free ON deliveries(lane, due_ms, id)
        WHERE state IN ('scheduled', 'ready') AND lease_owner IS NULL;
    CREATE INDEX deliveries_owned ON deliveries(lease_owner, lane, due_ms, id)
        WHERE lease_owner IS NOT NULL;
    DROP INDEX deliveries_leased;
    """,
    # 4: a delivery names its event's row (events.id) besides its id, for the reason the
    # embedded store's schema 5 gives (store/migrations.py): no index on random id text
    # but the one in `events` that refuses duplicates.
    """
    ALTER TABLE deliveries ADD COLUMN event_ref BIGINT;
    UPDATE deliveries d SET event_ref = e.id FROM events e WHERE e.event_id = d.event_id;
    DROP INDEX deliveries_event;
    DROP INDEX claims_event;
    CREATE INDEX deliveries_event_ref ON deliveries(event_ref);
    """,
)


class MigrationError(PostbackdError):
    """The database's schema is not one this postbackd can run on."""


def checksum(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()


async def migrate(conn: Conn) -> int:
    """Bring the schema to the newest version; the version it is at."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = {
            int(r["version"]): str(r["checksum"])
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        newest = max(applied, default=0)
        if newest > len(MIGRATIONS):
            raise MigrationError(
                f"the database is at schema version {newest}, newer than this postbackd "
                f"knows ({len(MIGRATIONS)}); upgrade postbackd"
            )
        for version, recorded in sorted(applied.items()):
            if recorded != checksum(MIGRATIONS[version - 1]):
                raise MigrationError(
                    f"schema migration {version} of the database differs from this "
                    "postbackd's (a released migration was edited; migrations are append-only)"
                )
        for version in range(newest + 1, len(MIGRATIONS) + 1):
            script = MIGRATIONS[version - 1]
            if newest:  # rows already stored may be rewritten: said before, not only after
                log.info("migrating the database schema to version %d", version)
            async with conn.transaction():  # a savepoint: each version all or nothing
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    version,
                    checksum(script),
                )
            log.info("database schema migrated to version %d", version)
    return len(MIGRATIONS)
