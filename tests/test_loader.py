"""Fair loading (PRODUCT.md 2, "Isolation"): an account's backlog of any size fills only its
own share of memory and never keeps another account's due deliveries from being loaded."""

from __future__ import annotations

import asyncio

import pytest

from postbackd.delivery.loader import MIN_SHARE, Loader
from postbackd.delivery.model import Delivery
from postbackd.store.embedded import EmbeddedStore
from storekit import delivery, event, insert

NOW_MS = 10_000


@pytest.fixture
def store(embedded_store: EmbeddedStore) -> EmbeddedStore:
    return embedded_store


class Taken:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.ids: set[int] = set()
        self.arrived = asyncio.Event()

    def __call__(self, d: Delivery) -> bool:
        """Like the engine: a delivery already in memory is not taken twice."""
        if d.id in self.ids:
            return False
        self.ids.add(d.id)
        self.deliveries.append(d)
        self.arrived.set()
        return True

    def of(self, lane: str) -> list[int]:
        return [d.id for d in self.deliveries if d.lane == lane]


async def run_until(loader: Loader, done: object, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(loader.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():  # type: ignore[operator]
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_huge_backlog_does_not_keep_another_lane_from_loading(store: EmbeddedStore) -> None:
    # Lane "slow" has 5,000 due deliveries, all due before lane "fast"'s 5: a single window
    # filled in due order would hold only "slow"'s.
    backlog = [(n, delivery("slow", 100 + n)) for n in range(5_000)]
    await insert(store.writer, backlog, first_id=1)
    await insert(
        store.writer, [(10_000 + n, delivery("fast", 9_000)) for n in range(5)], first_id=9_001
    )
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS, capacity=1_000)
    await run_until(loader, lambda: len(taken.of("fast")) == 5)
    assert taken.of("fast") == [9_001, 9_002, 9_003, 9_004, 9_005]
    # Memory stays bounded: the backlog filled its share only (half of the capacity).
    assert len(taken.of("slow")) <= 1_000 // 2 + 64
    assert taken.of("slow") == list(range(1, len(taken.of("slow")) + 1))  # in due order


async def test_a_lane_is_read_again_once_its_deliveries_leave_memory(store: EmbeddedStore) -> None:
    await insert(store.writer, [(n, delivery("a", 100 + n)) for n in range(300)], first_id=1)
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS, capacity=MIN_SHARE * 2)
    await run_until(loader, lambda: len(taken.deliveries) >= MIN_SHARE)
    first = len(taken.deliveries)
    assert first <= MIN_SHARE * 2
    task = asyncio.create_task(loader.run())
    try:
        for d in list(taken.deliveries):
            loader.released(d.lane)  # their results are in the store
        async with asyncio.timeout(5):
            while len(taken.deliveries) == first:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert taken.deliveries[first].id == first + 1  # the next in due order


async def test_future_rows_wait_until_due_and_rewind_finds_late_commits(
    store: EmbeddedStore,
) -> None:
    now = [NOW_MS]
    await insert(store.writer, [(1, delivery("a", NOW_MS + 500, state="scheduled"))], first_id=1)
    taken = Taken()
    loader = Loader(store, taken, lambda: now[0], capacity=1_000)
    task = asyncio.create_task(loader.run())
    try:
        await asyncio.sleep(0.2)
        assert taken.deliveries == []  # not due yet
        now[0] += 600
        await asyncio.wait_for(taken.arrived.wait(), 3)
        assert [d.id for d in taken.deliveries] == [1]
        # A row committed with a due time before the lane's position (accepted while the
        # position moved on): the rewind brings it.
        await insert(store.writer, [(2, delivery("a", NOW_MS))], first_id=2)
        taken.arrived.clear()
        loader.rewind("a", NOW_MS)
        await asyncio.wait_for(taken.arrived.wait(), 3)
        assert [d.id for d in taken.deliveries] == [1, 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lanes_with_pending_rows_are_found_at_start(store: EmbeddedStore) -> None:
    await insert(store.writer, [(n, delivery(f"acct-{n % 7}", 100)) for n in range(70)], first_id=1)
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS)
    await run_until(loader, lambda: len(taken.deliveries) == 70)
    assert {d.lane for d in taken.deliveries} == {f"acct-{n}" for n in range(7)}


class CountedReads:
    """The store's reads of due work, counted per lane."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.lanes: list[str] = []
        original = store.lease_due

        async def lease_due(reads: list[tuple[str, tuple[int, int], int]], *args: int) -> object:
            self.lanes.extend(lane for lane, _, _ in reads)
            return await original(reads, *args)

        store.lease_due = lease_due  # type: ignore[assignment, method-assign]


async def accept(store: EmbeddedStore, first: int, count: int, lane: str) -> list[Delivery]:
    planned = [(event(n), [delivery(lane, NOW_MS)]) for n in range(first, first + count)]
    stored = await store.accept(planned, NOW_MS)
    assert len(stored.owned) == count
    return stored.owned


async def test_accepted_deliveries_are_handed_over_without_reading_them_back(
    store: EmbeddedStore,
) -> None:
    reads = CountedReads(store)
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS, capacity=1_000)
    task = asyncio.create_task(loader.run())
    try:
        # A lane never read: its position is unknown, so it reads what came (the rewind).
        first = await accept(store, 1, 3, "a")
        assert loader.hand_over(first) == set()
        loader.rewind("a", NOW_MS)
        async with asyncio.timeout(3):
            while len(taken.deliveries) < 3:
                await asyncio.sleep(0.01)
        assert reads.lanes.count("a") >= 1
        read_before = len(reads.lanes)
        # Read up to its end: what is accepted next is taken from memory, in order.
        later = await accept(store, 4, 5, "a")
        assert loader.hand_over(later) == {"a"}
        assert taken.of("a") == [d.id for d in [*first, *later]]
        assert taken.deliveries[-1].event is not None  # parsed already, not read back
        await asyncio.sleep(0.2)
        assert len(reads.lanes) == read_before and len(taken.deliveries) == 8
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lane_with_unread_work_or_no_room_reads_from_the_store(
    store: EmbeddedStore,
) -> None:
    """Handing over must not let new rows pass older ones of the lane still in the store, nor
    fill memory beyond the lane's share: then the lane reads, in due order, as before."""
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS, capacity=MIN_SHARE)
    # Lane "a" has older due rows the loader has not read (it is not running).
    older = [(n, delivery("a", 100 + n)) for n in range(1, 11)]
    await insert(store.writer, older, first_id=10_001)  # ids the store's counter never gives
    loader.rewind("a", 100)
    newer = await accept(store, 100, 2, "a")
    assert loader.hand_over(newer) == set()
    assert taken.deliveries == []
    # Lane "b" is read to its end, but more come than its share holds.
    loader.lane("b").next_due_ms = 2**62
    many = await accept(store, 200, MIN_SHARE + 1, "b")
    assert loader.hand_over(many) == set()
    assert taken.deliveries == []
    for lane, first_due in (("a", 100), ("b", NOW_MS)):
        loader.rewind(lane, first_due)
    await run_until(loader, lambda: len(taken.of("a")) == 12)
    assert taken.of("a") == [*range(10_001, 10_011), *(d.id for d in newer)]  # in due order


async def test_a_delivery_finished_while_a_read_was_under_way_is_not_taken_again(
    store: EmbeddedStore,
) -> None:
    """A shared store reads due work on one connection and commits results on another: a
    read whose snapshot predates a result's commit still returns that delivery as pending,
    after the engine forgot it (its result committed). Taken, it would be sent twice."""
    await insert(store.writer, [(n, delivery("a", 100 + n)) for n in (1, 2)], first_id=1)
    taken = Taken()
    loader = Loader(store, taken, lambda: NOW_MS, capacity=1_000)
    original = store.lease_due

    async def lease_due(*args: object) -> object:
        found = await original(*args)  # type: ignore[arg-type]
        loader.finished(1)  # its result commits meanwhile, elsewhere
        return found

    store.lease_due = lease_due  # type: ignore[assignment, method-assign]
    await run_until(loader, lambda: len(taken.deliveries) == 1)
    await asyncio.sleep(0.1)
    assert taken.of("a") == [2]
