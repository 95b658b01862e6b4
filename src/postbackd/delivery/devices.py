"""The network of each device's latest attribution, for `network_only` postbacks: a bounded
in-memory cache in front of the `devices` table.

PRODUCT.md 1, step 6: a device's latest attribution is that of its latest engagement. X's
answers arrive in any order, so the cache, like the table, keeps the engagement time and
only a later (or equal) engagement replaces what it holds.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from postbackd.store import deliveries as sql
from postbackd.store.reader import Reader

_NONE: Final = ("", "")  # cached "no attribution yet": (network, engagement time)


class DeviceNetworks:
    def __init__(self, reader: Reader, capacity: int = 200_000) -> None:
        self._reader = reader
        self._capacity = capacity
        self._cache: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        # Counts `remember` calls: a store read that overlapped one may predate its
        # attribution, and must not put "none" in the cache over it.
        self._remembered = 0

    def remember(self, app_id: str, device_key: str, network: str, engagement_time: str) -> None:
        key = (app_id, device_key)
        self._remembered += 1
        held = self._cache.get(key)
        if held is not None and held[1] > engagement_time:
            return  # the device already has a later engagement's attribution
        self._put(key, (network, engagement_time))

    def _put(self, key: tuple[str, str], value: tuple[str, str]) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def lookup(self, app_id: str, device_keys: list[str]) -> dict[str, str | None]:
        """Each device's latest attributed network, None when it has none."""
        found: dict[str, str | None] = {}
        missing: list[str] = []
        for key in device_keys:
            cached = self._cache.get((app_id, key))
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached[0] or None
        if missing:
            before = self._remembered
            stored = await self._reader.call(sql.device_attributions, app_id, missing)
            overlapped = self._remembered != before
            for key in missing:
                # Remembered while the read ran? Then the cache may know better.
                cached = self._cache.get((app_id, key))
                value = stored.get(key)
                if cached is not None and (value is None or cached[1] >= value[1]):
                    found[key] = cached[0] or None
                    continue
                if value is not None:
                    self._put((app_id, key), value)
                elif not overlapped:
                    self._put((app_id, key), _NONE)
                found[key] = value[0] if value else None
        return found
