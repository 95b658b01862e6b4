"""The network of each device's latest attribution, for `network_only` postbacks: a bounded
in-memory cache in front of the `devices` table."""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from postbackd.store import deliveries as sql
from postbackd.store.journal import Journal

_NONE: Final = ""  # cached "no attribution yet"


class DeviceNetworks:
    def __init__(self, journal: Journal, capacity: int = 200_000) -> None:
        self._journal = journal
        self._capacity = capacity
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember(self, app_id: str, device_key: str, network: str) -> None:
        key = (app_id, device_key)
        self._cache[key] = network
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
                found[key] = cached or None
        if missing:
            stored = await self._journal.call(sql.device_networks, app_id, missing)
            for key in missing:
                network = stored.get(key)
                self.remember(app_id, key, network or _NONE)
                found[key] = network
        return found
