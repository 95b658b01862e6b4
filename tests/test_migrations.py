"""Migrations are append-only: a released one never changes (a database made by it would
never get the change), so each released migration's text is pinned here by its checksum.
A change to the schema is a new migration at the end of the list, with a new line here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from postbackd.store.db import DB_NAME, open_database
from postbackd.store.migrations import MIGRATIONS
from procs import Proc, client, daemon_env, postbackd, start_daemon, start_mock, wait_for
from test_store_failures import fill, small_fs

__all__ = ["small_fs"]  # fixtures

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


def _schema_4_database(data_dir: Path, events: int) -> None:
    """A store as schema 4 left it: `events` events, each with one delivered delivery that
    names its event by its id alone."""
    data_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # as a store made by schema 4 has it
    conn.execute("PRAGMA journal_mode=WAL")
    for version, script in enumerate(MIGRATIONS[:4], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    conn.execute("BEGIN")
    now_ms = int(time.time() * 1000)  # young: retention keeps them
    body = b'{"received_at_ms": %d, "conversion_time_ms": %d}' % (now_ms, now_ms)
    conn.executemany(
        "INSERT INTO events (id, event_id, app_id, event_name, received_at_ms, body)"
        " VALUES (?, ?, 'a', 'purchase', ?, ?)",
        ((n, f"ev-{n:07d}", now_ms, body) for n in range(1, events + 1)),
    )
    # Crossed: delivery n belongs to the event numbered from the other end.
    conn.executemany(
        "INSERT INTO deliveries (id, event_id, postback_id, app_id, network, event_name,"
        " x_app_id, conversion_type, x_account_id, retry_attempts, state, first_due_ms, due_ms,"
        " updated_ms, lane) VALUES (?, ?, 'p', 'a', 'x_ios', 'purchase', '1', 'PURCHASE',"
        " 'acct', 3, 'delivered', 1, 1, 1, 'acct')",
        ((n, f"ev-{events + 1 - n:07d}") for n in range(1, events + 1)),
    )
    conn.execute("COMMIT")
    conn.close()


async def test_kill_9_during_an_upgrade_keeps_the_old_schema_and_the_next_start_finishes_it(
    tmp_path: Path,
) -> None:
    # Migration 5 rewrites every delivery; a daemon killed meanwhile must leave the store
    # as it was (one transaction), and the next start must upgrade it whole.
    events = 400_000
    data_dir = tmp_path / "data"
    _schema_4_database(data_dir, events)
    mock = await start_mock()
    daemon = await Proc.spawn(postbackd("serve"), daemon_env(data_dir, mock.url))
    proc = daemon.proc
    try:
        await wait_for(lambda: daemon.said("migrating the database schema to version 5"), 30)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        _assert_still_schema_4(data_dir, events)

        daemon = await start_daemon(data_dir, mock.url)
        async with client(daemon) as api:
            details = await api.ok("GET", "/api/v1/events/ev-0000001")
            assert [d["id"] for d in details["deliveries"]] == [events]
        assert await daemon.stop() == 0
        conn = sqlite3.connect(data_dir / DB_NAME)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert conn.execute(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE e.event_id = d.event_id)"
                " FROM deliveries d LEFT JOIN events e ON e.id = d.event_ref"
            ).fetchone() == (events, events)
        finally:
            conn.close()
    finally:
        await daemon.kill()
        await mock.kill()


async def test_an_upgrade_on_a_full_disk_exits_with_the_reason_and_loses_nothing(
    small_fs: Path,
) -> None:
    # Migration 5 rewrites every delivery, so the log needs room the disk no longer has: the
    # daemon must say why and exit (never hang), leave schema 4 whole, and upgrade once the
    # operator makes room.
    events = 30_000
    data_dir = small_fs / "data"
    _schema_4_database(data_dir, events)
    filler = fill(small_fs)
    os.truncate(filler, os.path.getsize(filler) - 512 * 1024)  # room to open, not to migrate
    mock = await start_mock()
    daemon = await Proc.spawn(postbackd("serve"), daemon_env(data_dir, mock.url))
    try:
        assert await asyncio.wait_for(daemon.proc.wait(), 60) != 0
        assert "migrating the database schema to version 5" in daemon.log
        reason = "cannot start: the store cannot write: database or disk is full"
        assert reason in daemon.log and "Traceback" not in daemon.log, daemon.log
        _assert_still_schema_4(data_dir, events)

        filler.unlink()
        daemon = await start_daemon(data_dir, mock.url)
        async with client(daemon) as api:
            details = await api.ok("GET", "/api/v1/events/ev-0000001")
            assert [d["id"] for d in details["deliveries"]] == [events]
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
        await mock.kill()


def _assert_still_schema_4(data_dir: Path, events: int) -> None:
    """The store as `_schema_4_database` left it: the upgrade did not happen, not even half."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == 4, "the upgrade ran to its end: nothing was tested"
        columns = [row[1] for row in conn.execute("PRAGMA table_info(deliveries)")]
        assert "event_ref" not in columns
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == events
    finally:
        conn.close()
