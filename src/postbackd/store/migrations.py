"""Versioned schema. Each entry upgrades the database by one version (PRAGMA user_version);
entries are never edited once released, only appended."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: configuration entities. Lists are JSON text; booleans are 0/1. Rows are loaded in
    # rowid order, which is creation order ("newest tracker", "earliest account").
    """
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        platform TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
        bundle_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE x_accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        access_token TEXT NOT NULL,
        access_token_secret TEXT NOT NULL,
        ammp INTEGER NOT NULL,
        authenticated INTEGER NOT NULL,
        authenticated_at TEXT,
        last_auth_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX campaigns_name ON campaigns(app_id, lower(name));
    CREATE TABLE segments (
        id TEXT PRIMARY KEY,
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX segments_name ON segments(campaign_id, lower(name));
    CREATE TABLE trackers (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id),
        segment_id TEXT NOT NULL REFERENCES segments(id),
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        network TEXT NOT NULL,
        "default" INTEGER NOT NULL,
        x_account_ids TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        target_event TEXT NOT NULL,
        post_engagement_window_days INTEGER NOT NULL,
        post_view_window_days INTEGER NOT NULL,
        event_matching_event TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX trackers_name ON trackers(app_id, lower(name));
    CREATE UNIQUE INDEX trackers_default ON trackers(app_id, network) WHERE "default" = 1;
    CREATE TABLE postbacks (
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
        enabled INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX postbacks_event ON postbacks(app_id, network, event_name);
    """,
    # 2: events, their deliveries to X, X's claims and the devices' latest attribution.
    # A delivery copies what it needs of its postback at acceptance, so disabling or deleting
    # the postback later does not stop deliveries already accepted (PRODUCT.md 1).
    """
    -- A rowid table: events are large rows with random ids, which a WITHOUT ROWID table
    -- would keep in id order and split pages for on nearly every insert.
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        app_id TEXT NOT NULL,
        event_name TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
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
        first_due_ms INTEGER NOT NULL,
        due_ms INTEGER NOT NULL,
        account_id TEXT,
        last_status INTEGER,
        last_error TEXT,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX deliveries_event ON deliveries(event_id);
    -- The feeder's scan: pending deliveries in due order.
    CREATE INDEX deliveries_pending ON deliveries(due_ms, id)
        WHERE state IN ('scheduled', 'ready');
    -- Parked states only: delivered and skipped rows, the bulk, enter no state index.
    CREATE INDEX deliveries_held ON deliveries(id) WHERE state = 'held';
    CREATE INDEX deliveries_dead ON deliveries(id) WHERE state = 'dead';
    CREATE TABLE claims (
        delivery_id INTEGER PRIMARY KEY,
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
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX claims_event ON claims(event_id);
    CREATE INDEX claims_tracker ON claims(app_id, tracker_id);
    CREATE TABLE attributions (
        id INTEGER PRIMARY KEY,
        app_id TEXT NOT NULL,
        device_key TEXT NOT NULL,
        network TEXT NOT NULL,
        tracker_id TEXT NOT NULL,
        engagement_type TEXT NOT NULL,
        engagement_time TEXT NOT NULL,
        event_id TEXT NOT NULL,
        delivery_id INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX attributions_app ON attributions(app_id, tracker_id, id);
    CREATE TABLE devices (
        app_id TEXT NOT NULL,
        device_key TEXT NOT NULL,
        network TEXT NOT NULL,
        tracker_id TEXT NOT NULL,
        engagement_type TEXT NOT NULL,
        engagement_time TEXT NOT NULL,
        attributed_ms INTEGER NOT NULL,
        PRIMARY KEY (app_id, device_key)
    ) WITHOUT ROWID;
    """,
    # 3: fair loading (PRODUCT.md 2, "Isolation"). Every pending delivery names the lane it
    # is loaded for, the X account expected to sign it, and the engine reads each lane's due
    # work through its own index position, so no account's backlog, however large, keeps
    # another's from being loaded. Held rows are grouped by what decides their release.
    """
    ALTER TABLE deliveries ADD COLUMN lane TEXT NOT NULL DEFAULT '';
    UPDATE deliveries SET lane = COALESCE(account_id, x_account_id, '')
        WHERE state IN ('scheduled', 'ready');
    DROP INDEX deliveries_pending;
    CREATE INDEX deliveries_lane ON deliveries(lane, due_ms, id)
        WHERE state IN ('scheduled', 'ready');
    CREATE INDEX deliveries_held_group ON deliveries(postback_id, x_account_id)
        WHERE state = 'held';
    """,
    # 4: retention (PRODUCT.md 2, "Retention"). Pages the janitor frees go back to the file
    # system: auto_vacuum INCREMENTAL (a database made before this migration is vacuumed
    # once after it, which store/db.py does: VACUUM cannot run inside a transaction).
    # Device state is found by its age.
    """
    PRAGMA auto_vacuum = INCREMENTAL;
    CREATE INDEX devices_attributed ON devices(attributed_ms);
    """,
    # 5: a delivery names its event's row (events.id, which only grows) besides its id.
    # Producers' event ids are random (UUIDs): an index on them puts every insert on a page
    # of its own, and each page a commit touches is written whole to the log, so the two
    # such indexes of deliveries and claims cost more than the rest of a claim's writes.
    # The index on a growing number is written at its last page. Event ids stay unique in
    # `events` alone, which refuses duplicates; an event's deliveries are found through its
    # row, and its claims through its deliveries.
    """
    ALTER TABLE deliveries ADD COLUMN event_ref INTEGER;
    UPDATE deliveries
        SET event_ref = (SELECT e.id FROM events e WHERE e.event_id = deliveries.event_id);
    DROP INDEX deliveries_event;
    DROP INDEX claims_event;
    CREATE INDEX deliveries_event_ref ON deliveries(event_ref);
    """,
)
