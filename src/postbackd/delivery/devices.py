"""The network of each device's latest attribution, for `network_only` postbacks: a bounded
in-memory cache in front of the `devices` table.

PRODUCT.md 1, step 6: a device's latest attribution is that of its latest engagement. X's
answers arrive in any order, so the cache, like the table, keeps the engagement time and
only a later (or equal) engagement replaces what it holds.

Retention (PRODUCT.md 2) deletes device state whose attribution is older than
`attribution_retention_days`; the cache forgets such an entry when it is next looked up, so
that a device reads the same with or without a restart in between.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from postbackd.clock import Clock, SystemClock, now_ms
from postbackd.store.base import Store

# A device's latest attribution: (network, engagement time, when it was recorded in ms).
Held = tuple[str, str, int]
_NONE: Final[Held] = ("", "", 0)  # cached "no attribution yet": it never ages out


class DeviceNetworks:
    def __init__(
        self,
        store: Store,
        retention_ms: int,
        capacity: int = 200_000,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._retention_ms = retention_ms
        self._capacity = capacity
        self._clock = clock or SystemClock()
        self._cache: OrderedDict[tuple[str, str], Held] = OrderedDict()
        # Counts `remember` calls: a store read that overlapped one may predate its
        # attribution, and must not put "none" in the cache over it.
        self._remembered = 0

    def remember(self, app_id: str, device_key: str, network: str, engagement_time: str) -> None:
        key = (app_id, device_key)
        self._remembered += 1
        held = self._cache.get(key)
        if held is not None and held[1] > engagement_time:
            return  # the device already has a later engagement's attribution
        # Stamped no later than the store's `attributed_ms`: the cache forgets first.
        self._put(key, (network, engagement_time, now_ms(self._clock)))

    def _put(self, key: tuple[str, str], value: Held) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def lookup(self, app_id: str, device_keys: list[str]) -> dict[str, str | None]:
        """Each device's latest attributed network, None when it has none."""
        found: dict[str, str | None] = {}
        missing: list[str] = []
        oldest_kept = now_ms(self._clock) - self._retention_ms
        for key in device_keys:
            cached = self._cache.get((app_id, key))
            if cached is not None and cached[2] and cached[2] < oldest_kept:
                del self._cache[(app_id, key)]  # aged out, as in the store
                cached = None
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached[0] or None
        if missing:
            before = self._remembered
            stored = await self._store.device_attributions(app_id, missing)
            overlapped = self._remembered != before
            for key in missing:
                # Remembered while the read ran? Then the cache may know better.
                cached = self._cache.get((app_id, key))
                value = stored.get(key)
                if value is not None and value[2] < oldest_kept:
                    value = None  # aged out, and the janitor has not come by yet
                if cached is not None and (value is None or cached[1] >= value[1]):
                    found[key] = cached[0] or None
                    continue
                if value is not None:
                    self._put((app_id, key), value)
                elif not overlapped:
                    self._put((app_id, key), _NONE)
                found[key] = value[0] if value else None
        return found
