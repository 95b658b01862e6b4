"""`postbackd backup`: an online copy of the store taken while the real daemon (`postbackd
serve`, a separate process) takes events; the copy passes PRAGMA integrity_check and a
daemon started on it serves the same configuration and events. Then the refusals."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, seed_config
from postbackd.store import backup as backup_module
from postbackd.store.backup import CopyDamaged, backup_database
from postbackd.store.db import DB_NAME
from procs import Proc, client, start_daemon, start_mock

POSTBACKD = str(Path(sys.executable).with_name("postbackd"))
CONFIG_KINDS = ("apps", "x-accounts", "campaigns", "trackers", "postbacks")


async def run_backup(
    *args: str, cwd: Path, env_data_dir: str | None = None, database_url: str | None = None
) -> tuple[int, str, str]:
    unset = ("POSTBACKD_DATA_DIR", "POSTBACKD_DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if env_data_dir is not None:
        env["POSTBACKD_DATA_DIR"] = env_data_dir
    if database_url is not None:
        env["POSTBACKD_DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        POSTBACKD, "backup", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def mock() -> AsyncIterator[Proc]:
    proc = await start_mock()
    try:
        yield proc
    finally:
        await proc.stop()


class Traffic:
    """Batches of events posted one after another until stopped; each acknowledged event id
    with the time its 202 arrived."""

    def __init__(self, api: Api, app_id: str) -> None:
        self.api = api
        self.app_id = app_id
        self.acked: list[tuple[float, str]] = []
        self.stop = asyncio.Event()

    def batch(self, n: int) -> list[dict[str, Any]]:
        return [
            {
                "action": "event",
                "event_id": f"ev-{n}-{i}",
                "kochava_app_id": self.app_id,
                "device_ids": {"idfa": f"{n:08x}-0000-4000-8000-{i:012x}"},
                "data": {"event_name": "purchase", "event_data": {"sum": 1.5}},
            }
            for i in range(50)
        ]

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            items = self.batch(n)
            answer = await self.api.ok("POST", "/track/json", 202, json=items)
            assert answer["accepted"] == len(items), answer
            now = time.monotonic()
            self.acked += [(now, item["event_id"]) for item in items]
            n += 1

    def acked_before(self, moment: float) -> set[str]:
        return {event_id for at, event_id in self.acked if at < moment}


async def configuration(api: Api) -> dict[str, Any]:
    return {kind: await api.ok("GET", f"/api/v1/{kind}") for kind in CONFIG_KINDS}


def stored_event_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


async def test_a_backup_taken_under_load_restores_the_configuration_and_events(
    tmp_path: Path, mock: Proc
) -> None:
    data_dir = tmp_path / "data"
    dest = tmp_path / "backups" / "copy.sqlite3"
    dest.parent.mkdir()
    daemon = await start_daemon(data_dir, mock.url)
    try:
        async with client(daemon) as api:
            seeded = await seed_config(api)
            config = await configuration(api)
            traffic = Traffic(api, seeded["app"]["id"])
            load = asyncio.create_task(traffic.run())
            while len(traffic.acked) < 500:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            code, out, err = await run_backup(str(dest), "--data-dir", str(data_dir),
                                              cwd=tmp_path)  # fmt: skip
            finished = time.monotonic()
            # The daemon took events all along (a backup only reads).
            while len(traffic.acked_before(finished)) == len(traffic.acked):
                await asyncio.sleep(0.01)
            traffic.stop.set()
            await load
    finally:
        assert await daemon.stop() == 0

    assert code == 0, (out, err)
    assert traffic.acked_before(started) and traffic.acked_before(finished) != traffic.acked_before(
        started
    ), "the backup ran while events were being accepted"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert not [p.name for p in dest.parent.iterdir() if p != dest], "one file, nothing left"
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    lines = out.splitlines()
    assert lines[0].startswith(f"{dest}: a copy of {data_dir.absolute() / DB_NAME} (")
    assert lines[0].endswith("MiB, mode 0600); PRAGMA integrity_check: ok")
    assert "the api_token setting (POSTBACKD_API_TOKEN)" in out  # given, so no token file
    assert "x_consumer_key, x_consumer_secret and x_hmac_key" in out
    assert "the tokens of 1 X account(s) are in plain text in this copy" in out
    assert lines[-1].startswith("Restore: stop the daemon, put the copy in the data directory")

    # One snapshot: every event acknowledged before the backup began, none it never had.
    copied = stored_event_ids(dest)
    assert traffic.acked_before(started) <= copied
    assert copied <= {event_id for _, event_id in traffic.acked}
    assert copied <= stored_event_ids(data_dir / DB_NAME)

    # Restore as docs/operations.md says: the copy as the database of a data directory.
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir(mode=0o700)
    os.replace(dest, restored_dir / DB_NAME)
    restored = await start_daemon(restored_dir, mock.url)
    try:
        async with client(restored) as api:
            assert await configuration(api) == config
            for event_id in sorted(traffic.acked_before(started))[:: max(1, len(copied) // 20)]:
                found = await api.ok("GET", f"/api/v1/events/{event_id}")
                assert found["event"]["event_id"] == event_id, found
                assert len(found["deliveries"]) == 1, found
    finally:
        assert await restored.stop() == 0
    assert stored_event_ids(restored_dir / DB_NAME) == copied


def make_database(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT)")
        conn.execute("CREATE INDEX t_b ON t(b)")
        conn.executemany(
            "INSERT INTO t (b) VALUES (?)", ((os.urandom(40).hex(),) for _ in range(rows))
        )
    conn.close()


async def test_a_postgresql_database_is_not_backed_up_as_a_file(tmp_path: Path) -> None:
    make_database(tmp_path / "data" / DB_NAME, 10)  # a stale embedded store beside it
    url = "postgresql://postbackd:pw-Secret-42@db.internal:5432/pb"
    code, out, err = await run_backup("copy.sqlite3", "--data-dir", "data", cwd=tmp_path,
                                      database_url=url)  # fmt: skip
    assert (code, out) == (2, "")
    assert err == (
        "postbackd: error: backup copies the embedded SQLite store, and POSTBACKD_DATABASE_URL "
        "names a PostgreSQL database (postgresql://postbackd:***@db.internal:5432/pb): back "
        "that up with PostgreSQL's own tools (pg_dump, or a base backup)\n"
    )
    assert not (tmp_path / "copy.sqlite3").exists()
    code, _, err = await run_backup("copy.sqlite3", "--data-dir", "data", cwd=tmp_path,
                                    database_url="sqlite:")  # fmt: skip
    assert code == 0, err


async def test_refusals_name_the_cause_and_exit_2(tmp_path: Path) -> None:
    code, out, err = await run_backup("copy.sqlite3", "--data-dir", "missing", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert err == (
        f"postbackd: error: no database at {tmp_path / 'missing' / DB_NAME}: is --data-dir "
        "the daemon's data directory?\n"
    )
    assert not (tmp_path / "missing").exists(), "a backup creates nothing in the data dir"

    make_database(tmp_path / "data" / DB_NAME, 100)
    (tmp_path / "copy.sqlite3").write_text("precious")
    code, _, err = await run_backup("copy.sqlite3", "--data-dir", "data", cwd=tmp_path)
    assert (code, err) == (2, "postbackd: error: copy.sqlite3 already exists: give --force to "
                              "replace it\n")  # fmt: skip
    assert (tmp_path / "copy.sqlite3").read_text() == "precious"
    (tmp_path / "data" / "api-token").write_text("generated-token\n")
    code, out, err = await run_backup("copy.sqlite3", "--force", cwd=tmp_path,
                                      env_data_dir="data")  # fmt: skip
    assert code == 0, err
    # The token file is named, never shown.
    assert f"  - {Path('data') / 'api-token'}: the API token file" in out
    assert "generated-token" not in out + err
    with sqlite3.connect(tmp_path / "copy.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)
    conn.close()

    code, _, err = await run_backup("nowhere/copy.sqlite3", "--data-dir", "data", cwd=tmp_path)
    assert (code, err) == (2, "postbackd: error: cannot write nowhere/copy.sqlite3: the "
                              "directory nowhere does not exist\n")  # fmt: skip
    code, _, err = await run_backup(".", "--data-dir", "data", cwd=tmp_path)
    assert code == 2 and err.startswith("postbackd: error: . is a directory: name the file")


async def test_a_copy_that_fails_its_integrity_check_is_not_kept(tmp_path: Path) -> None:
    db = tmp_path / "data" / DB_NAME
    make_database(db, 2000)
    # An index dropped from the schema behind SQLite's back: its pages belong to nothing.
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("DELETE FROM sqlite_schema WHERE name = 't_b'")
    conn.close()
    code, out, err = await run_backup("copy.sqlite3", "--data-dir", "data", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err.startswith("postbackd: the copy failed PRAGMA integrity_check: *** in database ")
    assert " is never used" in err
    assert err.endswith("; copy.sqlite3 was not written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_progress_counts_pages_and_a_busy_writer_never_restarts_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "data" / DB_NAME
    make_database(db, 5000)
    monkeypatch.setattr(backup_module, "PAGES_PER_STEP", 16)
    stop = threading.Event()

    def write() -> None:
        with sqlite3.connect(db, isolation_level=None) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO t (b) VALUES (?)", (os.urandom(40).hex(),))
        conn.close()

    writer = threading.Thread(target=write)
    seen: list[tuple[int, int]] = []
    writer.start()
    try:
        # A step at a time, the writer gets the lock between steps.
        copy = backup_database(tmp_path / "data", tmp_path / "copy.sqlite3",
                               progress=lambda done, total: (seen.append((done, total)),
                                                              time.sleep(0.001)))  # fmt: skip
    finally:
        stop.set()
        writer.join()
    assert len(seen) > 10
    done = [d for d, _ in seen]
    assert done == sorted(done), "the copy restarted"
    assert {total for _, total in seen} == {copy.pages}
    assert seen[-1] == (copy.pages, copy.pages)
    with sqlite3.connect(copy.dest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] >= 5000
    conn.close()


def test_damage_is_told_in_ten_problems_at_most() -> None:
    problems = [f"Page {n} is never used" for n in range(3, 40)]
    assert str(CopyDamaged(problems)) == (
        "the copy failed PRAGMA integrity_check: "
        + "; ".join(problems[:10])
        + f" (and {len(problems) - 10} more)"
    )
