"""Each device's latest attribution, for `network_only` postbacks (PRODUCT.md 1, step 6:
"the device's latest attribution becomes (network, tracker)"): the latest engagement wins,
whatever order X's answers arrive in, in the store and in the cache in front of it; and
once it is older than `attribution_retention_days`, none, with or without a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from postbackd.delivery.devices import DeviceNetworks
from postbackd.delivery.model import Attribution, Result
from postbackd.store.embedded import EmbeddedStore

APP = "kogame"
EARLY = "2026-11-20T08:00:00.000Z"
LATE = "2026-11-21T08:00:00.000Z"
DAY_MS = 86_400_000
KEEP_MS = 400 * DAY_MS  # attribution_retention_days' default
NOW_MS = 1_795_860_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def time(self) -> float:
        return self.now_ms / 1000

    def monotonic(self) -> float:
        return self.now_ms / 1000


@pytest.fixture
def store(embedded_store: EmbeddedStore) -> EmbeddedStore:
    return embedded_store


def attributed(delivery_id: int, network: str, engagement_time: str) -> Result:
    return Result(
        delivery_id, "delivered", None, 1, 0, "acct", 200, None,
        attribution=Attribution(APP, "dev-1", network, "kotracker", "CLICK", engagement_time,
                                f"ev-{delivery_id}"),
    )  # fmt: skip


async def test_the_store_keeps_the_latest_engagement_not_the_last_written(
    store: EmbeddedStore,
) -> None:
    await store.write_results([attributed(1, "x_ios", LATE)], 10)
    # An answer about an earlier engagement, arriving later: it does not replace the latest.
    await store.write_results([attributed(2, "x_android", EARLY)], 20)
    assert await store.device_attributions(APP, ["dev-1"]) == {"dev-1": ("x_ios", LATE, 10)}
    # Both answers are kept as attributions (the history), only the device state ignores it.
    count = await store.writer.call(
        lambda c: c.execute("SELECT COUNT(*) FROM attributions").fetchone()
    )
    assert count == (2,)


async def test_the_cache_keeps_the_latest_engagement(store: EmbeddedStore) -> None:
    devices = DeviceNetworks(store, KEEP_MS)
    devices.remember(APP, "dev-1", "x_ios", LATE)
    devices.remember(APP, "dev-1", "x_android", EARLY)
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": "x_ios"}


class SlowStore:
    """A store whose answer is held until released: a store read that overlaps an answer."""

    def __init__(self, answer: dict[str, tuple[str, str, int]]) -> None:
        self.answer = answer
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def device_attributions(self, *args: Any) -> Any:
        self.reading.set()
        await self.release.wait()
        return self.answer


async def test_a_lookup_that_overlaps_an_attribution_does_not_erase_it() -> None:
    slow = SlowStore({})  # the store has no attribution yet when it is read
    devices = DeviceNetworks(slow, KEEP_MS)  # type: ignore[arg-type]
    lookup = asyncio.create_task(devices.lookup(APP, ["dev-1"]))
    await slow.reading.wait()
    devices.remember(APP, "dev-1", "x_ios", LATE)  # X's answer arrives meanwhile
    slow.release.set()
    await lookup
    # The next event of the device must see the attribution, not a cached "none".
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": "x_ios"}


async def test_devices_without_attribution_are_cached_as_none(
    store: EmbeddedStore,
) -> None:
    devices = DeviceNetworks(store, KEEP_MS)
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": None}
    await store.close()  # the answer now comes from the cache alone
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": None}


async def test_an_attribution_older_than_the_retention_is_none_in_the_cache(
    store: EmbeddedStore,
) -> None:
    clock = Clock()
    devices = DeviceNetworks(store, KEEP_MS, clock=clock)
    devices.remember(APP, "dev-1", "x_ios", LATE)
    clock.now_ms += KEEP_MS  # the last millisecond it is kept
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": "x_ios"}
    # One millisecond more: the janitor may delete it from the store, and a restarted daemon
    # would read none; the cache must not remember it longer.
    clock.now_ms += 1
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": None}


async def test_an_aged_attribution_the_janitor_has_not_deleted_yet_is_none(
    store: EmbeddedStore,
) -> None:
    clock = Clock()
    recorded_ms = NOW_MS - KEEP_MS - 1
    await store.write_results([attributed(1, "x_ios", LATE)], recorded_ms)
    devices = DeviceNetworks(store, KEEP_MS, clock=clock)
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": None}
    # A newer attribution of the device counts again.
    devices.remember(APP, "dev-1", "x_android", "2026-11-22T08:00:00.000Z")
    assert await devices.lookup(APP, ["dev-1"]) == {"dev-1": "x_android"}
