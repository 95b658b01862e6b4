"""Held deliveries and their release (PRODUCT.md 1, "Claim request"): a held delivery goes out
as soon as the signing rule yields an authenticated account, whether by authentication, a
new tracker or an edited postback.

Held rows are grouped by what the rule reads (the postback, and its signing account as it
was accepted); after a configuration change each group gets the rule once more, and only
the groups that now have an account are released. A change that helps nobody moves nothing:
no row is released only to be held again, and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from postbackd.errors import StoreUnavailable
from postbackd.index import Index
from postbackd.logs import RateLimitedLog
from postbackd.store.base import Store

log = logging.getLogger(__name__)

# Bursts of configuration changes are looked at together.
_COALESCE_S: Final = 0.2
_RETRY_S: Final = 1.0


class Releaser:
    def __init__(
        self,
        store: Store,
        index: Callable[[], Index],
        now_ms: Callable[[], int],
        on_released: Callable[[str, int], None],
    ) -> None:
        """`on_released(lane, due_ms)`: rows of the lane became pending, due from `due_ms`."""
        self._store = store
        self._index = index
        self._now_ms = now_ms
        self._on_released = on_released
        self._wake = asyncio.Event()
        self._warn = RateLimitedLog(log)

    def wake(self) -> None:
        """The configuration changed, or deliveries were held: look at the held groups."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.release()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # look again a moment later
                self._warn.warning("release", f"could not release held deliveries: {exc}")
                await asyncio.sleep(_RETRY_S)
                self._wake.set()
            await asyncio.sleep(_COALESCE_S)

    async def release(self) -> int:
        """Release every held group the signing rule now gives an account; the count."""
        groups = await self._store.held_groups()
        index = self._index()
        released = 0
        for postback_id, accepted_account, app_id, network, _ in groups:
            account, _ = index.signer_of_delivery(postback_id, app_id, network, accepted_account)
            if account is None:
                continue
            now = self._now_ms()
            count = await self._store.release_held(postback_id, accepted_account, account.id, now)
            if count:
                released += count
                self._on_released(account.id, now)
                log.info(
                    "%d held deliveries of postback %s released: X account %s signs them",
                    count,
                    postback_id,
                    account.id,
                )
        return released
