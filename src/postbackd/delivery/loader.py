"""Loading due deliveries from the store, fairly per lane (PRODUCT.md 2, "Isolation").

Every pending delivery belongs to a lane, the X account expected to sign it, and the loader
reads each lane through its own position in the lane's index, with its own share of memory:
an account's backlog of any size, rate-limited, slow or held, fills only its own share and
never keeps another account's due deliveries from being loaded. (A single window filled in
due order would let the biggest backlog win: fairness is a structure, not a buffer size.)

Memory stays bounded whatever the backlog: about `capacity` deliveries are loaded across
the lanes (each lane at least `MIN_SHARE`); the rest wait in the store, where they are safe
across a crash anyway.

A lane is read again when it has room (half its share or less in memory) and work may be due:
the loader knows when its next pending delivery is due, and is told (`rewind`) when rows
become pending in it: accepted, released, replayed, or scheduled for a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from postbackd.errors import StoreUnavailable
from postbackd.logs import RateLimitedLog
from postbackd.store.base import ROW_DUE_MS, ROW_ID, LaneRows, Store

from .model import Delivery

log = logging.getLogger(__name__)
T = TypeVar("T", int, tuple[int, int])

DEFAULT_CAPACITY: Final = 20_000
# A lane's share never falls below this, however many lanes have work.
MIN_SHARE: Final = 64
# Rows per read at most: a big read would hold the GIL away from the event loop for long.
LOAD_BATCH: Final = 2_000
_IDLE_POLL_S: Final = 1.0
# How often the store's lanes with pending work are listed again and every lane's position
# checked against it: a safety net for one daemon (every way a row becomes pending also tells
# the loader); on a shared store, how work ingested through another daemon, or left by a dead
# one whose leases ran out, reaches this one (at least once per lease length).
_RESCAN_S: Final = 60.0
_NEVER: Final = 2**62


@dataclass(slots=True)
class LaneLoad:
    cursor: tuple[int, int] = (0, 0)  # (due_ms, id) of the last row read
    loaded: int = 0  # deliveries of this lane in memory
    next_due_ms: int = 0  # earliest due time of rows not read yet; _NEVER: none known
    rewinds: int = 0  # counts `rewind` calls, to tell if one came during a read


class Loader:
    def __init__(
        self,
        store: Store,
        deliver: Callable[[Delivery], bool],
        now_ms: Callable[[], int],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        """`deliver(d)` hands a loaded delivery to the engine; False when the engine holds
        it already (its result is on the way to the store)."""
        self._store = store
        self._deliver = deliver
        self._now_ms = now_ms
        self._capacity = capacity
        self._lanes: dict[str, LaneLoad] = {}
        self.share = capacity  # recomputed at each pass: `_update_share`
        # Deliveries whose result was committed while a read was under way (`finished`).
        self._finished: set[int] | None = None
        # What waits for the read under way to end (`after_read`).
        self._after_read: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._warn = RateLimitedLog(log)

    def _update_share(self) -> int:
        """Deliveries a lane may have in memory: the capacity split among lanes with work."""
        busy = sum(1 for s in self._lanes.values() if s.loaded or s.next_due_ms < _NEVER)
        self.share = max(MIN_SHARE, self._capacity // max(1, busy))
        return self.share

    def lane(self, lane: str) -> LaneLoad:
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = LaneLoad()
        return state

    def rewind(self, lane: str, due_ms: int) -> None:
        """Rows of `lane` became pending, due at `due_ms` or later: read from there. The
        position may have passed `due_ms` while they were being committed."""
        state = self.lane(lane)
        state.cursor = min(state.cursor, (due_ms, -1))
        state.next_due_ms = min(state.next_due_ms, due_ms)
        state.rewinds += 1
        self._wake.set()

    def hand_over(self, deliveries: list[Delivery]) -> set[str]:
        """Deliveries just accepted and due, handed over from memory instead of being read
        back: the lanes that took all of theirs. A lane takes them only when they come next
        in its (due, id) order, nothing earlier of it left unread, and it has room for all;
        otherwise it reads them from the store as before (the caller rewinds it)."""
        by_lane: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_lane.setdefault(d.lane, []).append(d)
        taken: set[str] = set()
        share = self.share
        for lane, batch in by_lane.items():
            state = self.lane(lane)
            last = batch[-1]
            if (
                state.next_due_ms <= last.due_ms  # earlier rows wait unread in the store
                or state.cursor > (batch[0].due_ms, batch[0].id)
                or state.loaded + len(batch) > share
            ):
                continue
            for d in batch:
                if self._deliver(d):
                    state.loaded += 1
            # A read under way may still return these rows: the engine knows them already.
            state.cursor = (last.due_ms, last.id)
            taken.add(lane)
        return taken

    def finished(self, delivery_id: int) -> None:
        """The delivery's result is committed. A read under way may still return it as
        pending: a shared store reads on another connection than it writes results on, so
        the read's snapshot can predate that commit, and the engine, which forgets a
        delivery once its result is committed, would send it again."""
        if self._finished is not None:
            self._finished.add(delivery_id)

    def after_read(self, callback: Callable[[], None]) -> None:
        """Call `callback` once a read under way, if any, has handed over its rows: what it
        returns may predate a change just committed (a cancel), as with `finished`."""
        if self._finished is None:
            callback()
        else:
            self._after_read.append(callback)

    def released(self, lane: str) -> None:
        """A delivery loaded for `lane` left memory (its result is in the store)."""
        state = self._lanes.get(lane)
        if state is None:
            return
        state.loaded -= 1
        if state.loaded == self.share // 2:
            self._wake.set()  # room again: read the lane's next due work

    async def run(self) -> None:
        for lane in await self._store.pending_lanes():
            self.lane(lane)
        loop = asyncio.get_running_loop()
        lease_s = self._store.lease_s
        rescan_s = _RESCAN_S if lease_s is None else min(_RESCAN_S, lease_s)
        rescan_at = loop.time() + rescan_s
        while True:
            self._wake.clear()
            try:
                if loop.time() >= rescan_at:
                    rescan_at = loop.time() + rescan_s
                    await self._rescan()
                await self._pass()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # the store fails: try again
                self._warn.warning("load", f"could not read due deliveries: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._sleep_s())

    async def _rescan(self) -> None:
        for lane in await self._store.pending_lanes():
            self.lane(lane)
        now = self._now_ms()
        for state in self._lanes.values():
            state.next_due_ms = min(state.next_due_ms, now)

    def _sleep_s(self) -> float:
        """Until the earliest lane with room has work due (at most the idle poll)."""
        share = self.share
        due = min(
            (s.next_due_ms for s in self._lanes.values() if s.loaded <= share // 2),
            default=_NEVER,
        )
        return max(0.0, min(_IDLE_POLL_S, (due - self._now_ms()) / 1000))

    async def _pass(self) -> None:
        """Read the lanes that have room and work due, all in one trip to the store (at
        most LOAD_BATCH rows), in turns: a lane read goes to the back of the
        line, so with more due work than one read takes, every lane gets its turn."""
        while True:
            share = self._update_share()
            now = self._now_ms()
            reads = [
                (lane, state.cursor, min(share - state.loaded, LOAD_BATCH))
                for lane, state in self._lanes.items()
                if state.next_due_ms <= now and state.loaded <= share // 2
            ]
            if not reads:
                return
            rewinds = {lane: self._lanes[lane].rewinds for lane, _, _ in reads}
            finished = self._finished = set()
            try:
                found = await self._store.lease_due(reads, now, LOAD_BATCH)
                read_any = self._take_rows(found, rewinds, finished)
            finally:
                self._finished = None
                waiting, self._after_read = self._after_read, []
                for callback in waiting:
                    callback()
            if not read_any:
                return

    def _take_rows(
        self, found: list[LaneRows], rewinds: dict[str, int], finished: set[int]
    ) -> bool:
        """Hand over what a read found; whether it found any row."""
        read_any = False
        for lane, rows, due in found:
            state = self._lanes.pop(lane)
            self._lanes[lane] = state  # to the back of the line
            if rows:
                last = rows[-1]
                # A rewind during the read may point before what was just read.
                state.cursor = _after(
                    state, rewinds[lane], (last[ROW_DUE_MS], last[ROW_ID]), state.cursor
                )
                for row in rows:
                    if row[ROW_ID] not in finished and self._deliver(Delivery(*row)):
                        state.loaded += 1
                read_any = True
            next_due = _NEVER if due is None else due
            state.next_due_ms = _after(state, rewinds[lane], next_due, state.next_due_ms)
        return read_any


def _after(state: LaneLoad, rewinds: int, read: T, current: T) -> T:
    """What a read found, unless a rewind came meanwhile: then the earlier of the two."""
    return read if state.rewinds == rewinds else min(read, current)
