"""Results into the store: while the store cannot write, X's answers wait in memory and are
written once it can (never forgotten until a restart, never sent twice meanwhile)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from postbackd.delivery.model import Delivery, Result
from postbackd.delivery.recorder import Batch, Recorder
from postbackd.store.embedded import EmbeddedStore
from storekit import delivery, insert


@pytest.fixture
def store(embedded_store: EmbeddedStore) -> EmbeddedStore:
    return embedded_store


def loaded(n: int) -> Delivery:
    return Delivery(n, f"ev-{n}", "kopb0001", "app", "x_ios", "purchase", "333", "PURCHASE",
                    None, 3, 0, 100, 100, "a", b"{}")  # fmt: skip


def delivered(n: int) -> Result:
    return Result(n, "delivered", None, 1, 100, "a", 200, None)


def states(conn: sqlite3.Connection) -> dict[int, str]:
    return dict(conn.execute("SELECT id, state FROM deliveries"))


async def test_results_wait_for_the_store_and_are_written_when_it_can(store: EmbeddedStore) -> None:
    await insert(store.writer, [(n, delivery("a", 100)) for n in range(1, 4)], first_id=1)
    written: list[Batch] = []
    lost: list[Batch] = []
    recorder = Recorder(store, lambda: 5_000, written.append, lost.append, retry_s=0.05)
    full = [True]
    writer = store.writer
    original = writer.submit

    def submit(job: object) -> asyncio.Future[object]:
        if full[0]:

            def refused(conn: sqlite3.Connection) -> None:
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode = 13
                raise error

            return original(refused)
        return original(job)  # type: ignore[arg-type]

    writer.submit = submit  # type: ignore[method-assign]
    for n in (1, 2, 3):
        recorder.add(loaded(n), delivered(n))
    await asyncio.sleep(0.3)  # several tries, all refused
    assert written == [] and lost == []
    assert recorder.unwritten == 3  # still the engine's: not read again, not forgotten
    full[0] = False
    async with asyncio.timeout(3):
        while not written:
            await asyncio.sleep(0.01)
    assert [d.id for batch in written for d, _ in batch] == [1, 2, 3]
    assert recorder.unwritten == 0
    assert await store.writer.call(states) == {1: "delivered", 2: "delivered", 3: "delivered"}


async def test_drain_writes_what_is_gathered(store: EmbeddedStore) -> None:
    await insert(store.writer, [(1, delivery("a", 100))], first_id=1)
    written: list[Batch] = []
    recorder = Recorder(store, lambda: 5_000, written.append, lambda _: None)
    recorder.add(loaded(1), delivered(1))
    assert await recorder.drain(2.0) == 0
    assert written and await store.writer.call(states) == {1: "delivered"}


async def test_results_of_a_few_milliseconds_go_as_one_write(store: EmbeddedStore) -> None:
    """Each commit rewrites whole pages: results answered over several passes of the loop
    share one write, not one each."""
    await insert(store.writer, [(n, delivery("a", 100)) for n in range(1, 4)], first_id=1)
    written: list[Batch] = []
    recorder = Recorder(store, lambda: 5_000, written.append, lambda _: None, gather_s=0.05)
    for n in (1, 2, 3):
        recorder.add(loaded(n), delivered(n))
        await asyncio.sleep(0)  # another pass of the loop
    async with asyncio.timeout(3):
        while not written:
            await asyncio.sleep(0.01)
    assert [[d.id for d, _ in batch] for batch in written] == [[1, 2, 3]]
    assert await store.writer.call(states) == {1: "delivered", 2: "delivered", 3: "delivered"}
