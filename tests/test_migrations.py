"""Migrations are append-only: a released one never changes (a database made by it would
never get the change), so each released migration's text is pinned here by its checksum.
A change to the schema is a new migration at the end of the list, with a new line here."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import pytest

from postbackd.store.db import DB_NAME, open_database
from postbackd.store.migrations import MIGRATIONS

RELEASED = {
    1: "6555b69bcaa1a2e2e81438dc4cc8b229d813557cc9a90868553e3ded24b0e03a",
    2: "790656287fbedc1e1ff63686b33c8cebaaef6478216c68800defd811e4fca4c8",
    3: "6f1860a231de3276d3ab9376bc9797825100a9ead5089a71ae8c9bd72935ffc7",
    4: "e1a6a1d7ab08d8fec673253135fbc6b40f31c9c060d55a4ddbb286ed25c5a796",
    5: "a4eb750dec4991e4faf1715fe7fbd3e9540f9b921a3db0987fdef064f26f3bd9",
}


def checksum(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()


def test_released_migrations_never_change() -> None:
    for version, expected in RELEASED.items():
        assert checksum(MIGRATIONS[version - 1]) == expected, (
            f"migration {version} was released and must not change: append a new one"
        )


def test_every_migration_is_pinned() -> None:
    assert len(MIGRATIONS) == len(RELEASED), "a new migration needs its checksum in RELEASED"


async def test_a_database_of_an_earlier_release_is_upgraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbackd.store.db")
    # A database as 0.1.0 left it (schema 2): pending deliveries without a lane, naming
    # their event by its id alone.
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    conn.executemany(
        "INSERT INTO events (id, event_id, app_id, event_name, received_at_ms, body)"
        " VALUES (?, ?, 'a', 'purchase', 1, x'7b7d')",
        [(7, "e1"), (9, "e2")],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, event_id, postback_id, app_id, network, event_name,"
        " x_app_id, conversion_type, x_account_id, retry_attempts, state, first_due_ms, due_ms,"
        " updated_ms) VALUES (?, ?, 'p', 'a', 'x_ios', 'purchase', '1', 'PURCHASE', 'acct',"
        " 3, 'ready', 1, 1, 1)",
        [(1, "e2"), (2, "e1")],
    )
    conn.close()
    upgraded = await open_database(tmp_path)
    try:
        async with upgraded.execute("SELECT lane, event_ref FROM deliveries ORDER BY id") as cur:
            assert await cur.fetchall() == [("acct", 9), ("acct", 7)]
        async with upgraded.execute("PRAGMA auto_vacuum") as cur:
            assert await cur.fetchone() == (2,)  # INCREMENTAL, after one VACUUM
        async with upgraded.execute("PRAGMA user_version") as cur:
            assert await cur.fetchone() == (len(MIGRATIONS),)
        # A migration that may rewrite stored rows is announced before it runs.
        for version in range(3, len(MIGRATIONS) + 1):
            assert f"migrating the database schema to version {version}" in caplog.text
    finally:
        await upgraded.close()
