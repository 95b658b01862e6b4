"""The simulated X's request log, read as it grows: for every event's claim, when X first
answered it 200. X logs the time of its answer with the query it got, whose
`hashed_device_id` names the event (each benchmark event has its own IDFA), on the same
clock as the load generator's journal (both `time.time()` on this machine).

The log is paged from where the last read stopped (`/_mock/requests?offset=&limit=`), so the
harness holds one entry per event and the simulated X answers small pages; the simulated X
must keep its whole log for the offsets to hold (`request_log_max` unset).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

_PAGE = 5000
_CLAIMS_PATH = "/conversion_event"


@dataclass(slots=True)
class XLog:
    session: aiohttp.ClientSession
    x_url: str
    # hashed_device_id -> X's time (epoch seconds) of its first 200 to that claim.
    first_ok: dict[str, float] = field(default_factory=dict)
    read: int = 0  # log entries read so far: the next page's offset
    # One reader at a time: the background follower and the scenario's own calls share
    # the offset.
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up(self) -> None:
        """Read every entry logged since the last call."""
        async with self._reading:
            await self._read_new()

    async def _read_new(self) -> None:
        while True:
            url = f"{self.x_url}/_mock/requests"
            query = {"offset": str(self.read), "limit": str(_PAGE)}
            async with self.session.get(url, params=query) as answer:
                page = await answer.json()
            entries = page["requests"]
            if self.read > int(page["total"]):
                raise RuntimeError("the simulated X's request log was cut: offsets moved")
            for entry in entries:
                if entry["status"] != 200 or not str(entry["path"]).endswith(_CLAIMS_PATH):
                    continue
                device = entry["params"].get("hashed_device_id")
                if device is not None and device not in self.first_ok:
                    self.first_ok[device] = float(entry["ts"])
            self.read += len(entries)
            if len(entries) < _PAGE:
                return

    async def _follow(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(aiohttp.ClientError):
                await self.catch_up()

    @contextlib.asynccontextmanager
    async def following(self, every_s: float) -> AsyncIterator[XLog]:
        """Catch up every `every_s` seconds in the background while the block runs, and
        once more at its end."""
        task = asyncio.create_task(self._follow(every_s))
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.catch_up()
