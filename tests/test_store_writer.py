"""The supervised store writer (PRODUCT.md 2, "Store failures"): a commit that fails for the
store's sake fails exactly its jobs with `store_unavailable` and the writer carries on; the
first commit that succeeds makes it healthy again; nothing ever waits on a future that nobody
will resolve."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postbackd.errors import StoreUnavailable
from postbackd.store.writer import Writer, store_failure
from storekit import migrated


def disk_full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13  # SQLITE_FULL, as SQLite sets it
    return error


class Recorded:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.fatal: list[BaseException] = []


@pytest.fixture
async def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
async def writer(tmp_path: Path, recorded: Recorded) -> AsyncIterator[Writer]:
    path = await migrated(tmp_path)
    w = Writer(path, on_error=recorded.errors.append, on_fatal=recorded.fatal.append)
    await w.open()
    yield w
    await w.close()


def insert_app(name: str) -> object:
    def job(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "INSERT INTO apps (id, name, platform, created_at) VALUES (?, ?, 'ios', 'now')",
            (name, name),
        ).rowcount

    return job


def count_apps(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM apps").fetchone()[0])


async def test_a_full_disk_fails_the_commit_and_the_next_commit_recovers(
    writer: Writer, recorded: Recorded
) -> None:
    def full(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO apps (id, name, platform, created_at) VALUES "
                     "('lost', 'lost', 'ios', 'now')")  # fmt: skip
        raise disk_full()

    assert await writer.submit(insert_app("a")) == 1
    # One commit: the failing job and a good one with it. Both fail, nothing is kept.
    failing = [writer.submit(full), writer.submit(insert_app("b"))]
    for future in failing:
        with pytest.raises(StoreUnavailable) as caught:
            await future
        assert caught.value.kind == "disk_full"
        assert caught.value.code == "store_unavailable" and caught.value.status == 503
    assert not writer.healthy
    assert recorded.errors == ["disk_full"]
    # Nothing of the failed commit is in the store; the writer carries on.
    assert await writer.submit(insert_app("c")) == 1
    assert writer.healthy
    assert await writer.call(count_apps) == 2  # a and c
    assert recorded.fatal == []


async def test_rollback_after_sqlite_rolled_back_itself_does_not_kill_the_writer(
    writer: Writer,
) -> None:
    # After a full disk during COMMIT, SQLite has rolled the transaction back already: a
    # second ROLLBACK raises. That used to kill the writer, and every later write hung.
    def rolled_back(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        raise disk_full()

    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(writer.submit(rolled_back), 5)
    assert await asyncio.wait_for(writer.submit(insert_app("after")), 5) == 1


async def test_a_bad_job_costs_the_others_of_its_commit_nothing(writer: Writer) -> None:
    def bug(conn: sqlite3.Connection) -> None:
        raise ValueError("a bug in one job")

    futures = [writer.submit(insert_app("x")), writer.submit(bug), writer.submit(insert_app("y"))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ValueError)
    assert writer.healthy  # a bug is not a store failure


async def test_a_corrupt_store_is_fatal(writer: Writer, recorded: Recorded) -> None:
    def corrupt(conn: sqlite3.Connection) -> None:
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = 11  # SQLITE_CORRUPT
        raise error

    with pytest.raises(StoreUnavailable):
        await writer.submit(corrupt)
    assert recorded.errors == ["corrupt"]
    assert len(recorded.fatal) == 1


async def test_a_dead_writer_fails_every_waiting_job_and_asks_for_an_exit(
    tmp_path: Path, recorded: Recorded
) -> None:
    path = await migrated(tmp_path)
    w = Writer(path, on_fatal=recorded.fatal.append)
    await w.open()

    def slow(conn: sqlite3.Connection) -> int:
        return 1

    def broken(batch: object) -> list[object]:
        raise RuntimeError("a bug in the writer itself")

    w._commit = broken  # type: ignore[assignment,method-assign]  # the thread dies of a bug
    first = w.submit(slow)
    queued = w.submit(slow)
    for future in (first, queued):
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(future, 5)
    assert len(recorded.fatal) == 1
    with pytest.raises(StoreUnavailable):  # later writes fail at once, never hang
        await asyncio.wait_for(w.submit(slow), 1)
    await w.close()


def test_store_failure_kinds() -> None:
    def coded(code: int) -> sqlite3.Error:
        error = sqlite3.OperationalError("x")
        error.sqlite_errorcode = code
        return error

    assert store_failure(coded(13)).kind == "disk_full"  # type: ignore[union-attr]
    assert store_failure(coded(10 | (3 << 8))).kind == "io_error"  # type: ignore[union-attr]
    assert store_failure(coded(5)).kind == "busy"  # type: ignore[union-attr]
    assert store_failure(coded(26)).kind == "corrupt"  # type: ignore[union-attr]
    assert store_failure(coded(19)) is None  # a constraint: the request's fault
    assert store_failure(ValueError("bug")) is None
