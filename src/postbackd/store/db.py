"""Opening the database: owner-only files, WAL journal, migrations applied at start."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import aiosqlite

from postbackd.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)
# aiosqlite logs every statement with its parameters at DEBUG, X account secrets included:
# never let those records through, whatever level the root logger is at.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

DB_NAME: Final = "postbackd.sqlite3"
INCREMENTAL: Final = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class SchemaTooNew(RuntimeError):
    pass


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory readable by the owner only: it holds the secrets."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


async def open_database(data_dir: Path) -> aiosqlite.Connection:
    prepare_data_dir(data_dir)
    path = data_dir / DB_NAME
    # Create the file 0600 before SQLite does (it would use the umask); SQLite gives the
    # -wal and -shm files the database file's permissions.
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        # WAL: readers never block the writer. synchronous=NORMAL keeps every committed
        # transaction across a crash of the process (kill -9); only a power loss can drop
        # the last ones, which is the usual trade for a WAL database.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        # This connection writes the configuration, X account tokens included: a replaced
        # or deleted row is zeroed, not left in the page's free space (store/sealing.py).
        await conn.execute("PRAGMA secure_delete=ON")
        await migrate(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def migrate(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise SchemaTooNew(
            f"the database is at schema version {version}, newer than this postbackd "
            f"knows ({len(MIGRATIONS)}); upgrade postbackd"
        )
    if version == 0:
        # A new database: pages freed by the janitor go back to the file system (migration
        # 4 asks for it too; set before the first table, it needs no VACUUM).
        await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        if version:  # rows already stored may be rewritten: said before, not only after
            log.info("migrating the database schema to version %d", target)
        # executescript commits on its own; the version bump sits inside the script so that
        # a crash leaves either the old or the new schema.
        await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")
        log.info("database schema migrated to version %d", target)
    async with conn.execute("PRAGMA auto_vacuum") as cur:
        row = await cur.fetchone()
    if row is not None and row[0] != INCREMENTAL:
        # A database made before migration 4: the setting takes effect with one VACUUM,
        # which rewrites the file (it takes as long as a backup, and as much free disk).
        log.info("reclaiming space: VACUUM once for incremental auto_vacuum (migration 4)")
        await conn.execute("VACUUM")
    return len(MIGRATIONS)
