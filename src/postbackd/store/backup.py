"""`postbackd backup`: an online, consistent copy of the embedded store while the daemon runs.

SQLite's online backup API copies the database page by page. The source connection opens
the file read-only and holds one read transaction for the whole copy: in WAL mode a reader
never blocks the daemon's writer, and its snapshot does not move, so the copy is the
database as of one commit (every event acknowledged before the backup started is in it),
and the copy never restarts however busy the daemon is. Page steps give the progress.

Nothing here takes the daemon's lock file or writes to its data directory: a backup only
reads. The copy is written next to DEST under a temporary name (mode 0600: it holds the
configuration, and the X account tokens unless `secret_key` encrypts them), switched to a
rollback journal so it is one self-contained file, checked with `PRAGMA integrity_check`,
and only then renamed to DEST.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from postbackd.errors import PostbackdError
from postbackd.store.db import DB_NAME
from postbackd.store.sealing import is_sealed

# 4 MiB per step at the default 4 KiB page: progress a few times a second on a slow disk.
PAGES_PER_STEP: Final = 1024
SHOWN_PROBLEMS: Final = 10
BUSY_TIMEOUT_S: Final = 30.0

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


class BackupError(PostbackdError):
    """The backup cannot be made as asked (no database, DEST exists, DEST not writable)."""


class CopyDamaged(PostbackdError):
    """The copy failed `PRAGMA integrity_check`: it is not kept."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        hidden = len(problems) - SHOWN_PROBLEMS
        more = f" (and {hidden} more)" if hidden > 0 else ""
        super().__init__(f"the copy failed PRAGMA integrity_check: {shown}{more}")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Copy:
    source: Path
    dest: Path
    pages: int
    size_bytes: int
    accounts: int
    encrypted_accounts: int


def _check_dest(dest: Path, force: bool) -> None:
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory: name the file to write, e.g. {dest / DB_NAME}")
    if dest.exists() and not force:
        raise BackupError(f"{dest} already exists: give --force to replace it")
    parent = dest.parent
    if not parent.is_dir():
        raise BackupError(f"cannot write {dest}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BackupError(f"cannot write {dest}: the directory {parent} is not writable")


def _open_source(source: Path) -> sqlite3.Connection:
    if not source.is_file():
        raise BackupError(f"no database at {source}: is --data-dir the daemon's data directory?")
    # mode=ro: the backup never creates, migrates or writes the daemon's database.
    uri = f"file:{quote(str(source.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # The read transaction that fixes the snapshot for the whole copy.
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as e:
        raise BackupError(f"cannot read the database {source}: {e}") from None
    return conn


def _accounts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(X accounts, those whose tokens are encrypted) in the copy."""
    try:
        rows = conn.execute("SELECT access_token FROM x_accounts").fetchall()
    except sqlite3.OperationalError:
        return 0, 0  # a database from before the first migration
    return len(rows), sum(1 for (token,) in rows if is_sealed(str(token)))


def backup_database(
    data_dir: Path, dest: Path, *, force: bool = False, progress: Progress | None = None
) -> Copy:
    """Copy the database of `data_dir` to `dest`; CopyDamaged when the copy fails its
    integrity check (and `dest` is then left as it was)."""
    source = (data_dir / DB_NAME).absolute()
    _check_dest(dest, force)
    src = _open_source(source)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        # Owner-only from the first byte: SQLite keeps the mode of an existing file.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as e:
        src.close()
        raise BackupError(f"cannot write {dest}: {e.strerror}") from None
    try:
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            try:
                src.backup(
                    dst,
                    pages=PAGES_PER_STEP,
                    progress=(
                        None if progress is None
                        else lambda _status, remaining, total: progress(total - remaining, total)
                    ),
                )  # fmt: skip
            except sqlite3.Error as e:
                raise BackupError(f"the copy of {source} failed: {e}") from None
            finally:
                src.close()
            # One file, no -wal beside it: a copy that moves as one file.
            dst.execute("PRAGMA journal_mode=DELETE")
            # One row per problem, or one row of several lines: one problem a line.
            rows = dst.execute("PRAGMA integrity_check").fetchall()
            problems = [line for (row,) in rows for line in str(row).splitlines()]
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            accounts, encrypted = _accounts(dst) if problems == ["ok"] else (0, 0)
        finally:
            dst.close()
        if problems != ["ok"]:
            raise CopyDamaged(problems)
        os.chmod(partial, 0o600)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, dest)
        _sync_directory(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Copy(source, dest, pages, dest.stat().st_size, accounts, encrypted)


def _sync_directory(path: Path) -> None:
    """The rename reaches the disk too (a crash right after must not lose the copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
