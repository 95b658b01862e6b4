"""The store interface: everything the engine, intake, API, janitor and catalog ask of the
durable state, whatever holds it (PRODUCT.md 5).

Two kinds of store implement it: the embedded SQLite store in the data dir (one daemon), and
a shared store that many daemons use at once. Nothing outside the store packages knows
which one runs, and no SQL lives outside them.

Rules every implementation keeps:

- **Accepted means durable** (PRODUCT.md 2): a write method returns (or its future resolves)
  only after its transaction committed. When the store cannot commit for a reason of its
  own (disk full, I/O error, a database that cannot be reached, a closed store), the method
  raises `StoreUnavailable` and nothing of that call is committed. Reads that fail for the
  store's sake raise `StoreUnavailable` too; no driver's exception type leaves a store.
- `healthy` is False from a write that failed for the store's sake to the next that
  succeeds (`/readyz` answers 503 meanwhile).
- **Leases**: due deliveries are handed out leased to this store's owner (one daemon) until
  an expiry; a shared store never hands a delivery leased to a live owner to another, and
  hands a dead owner's deliveries out again once their lease ran out. Recording a
  delivery's result, or releasing it, ends its lease. The embedded store has one owner, so
  its leases are trivial (`lease_s` is None: nothing to renew).
- **Rate budgets** (PRODUCT.md 5): a shared store keeps one row per X account, the state of
  its current window (end, limit, requests granted), that every daemon draws slices from,
  returns what it did not use to, and corrects with X's rate-limit headers; all daemons
  together stay within the account's window. The embedded store has one daemon, whose local
  budget is the whole budget (`budgets_shared` False): it grants whatever is asked and
  ignores returns and corrections.
- Which store runs is `database_url` (store/url.py); the factory (store/factory.py) builds
  it, importing a shared store's module only when it is named: `postbackd.store.postgres`
  provides `create(database: DatabaseUrl, settings: Settings, *, on_error, on_fatal)`,
  returning an unopened `Store` (`on_error(kind)` counts a failed write under a
  `STORE_ERROR_KINDS` label; `on_fatal(error)` asks the daemon to exit non-zero).
- Times are milliseconds since the epoch (`now_ms` is always given by the caller, so that
  tests drive a clock); delivery ids are positive 64-bit integers handed out by the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol

from postbackd.delivery.model import Delivery, NewDelivery, Result
from postbackd.event import Event
from postbackd.index import Index
from postbackd.model import Entity

# What a write that failed for the store's sake is counted under (`on_error(kind)`,
# `postbackd_store_errors{kind}`): a full disk, an I/O error (a database that cannot be
# reached included), a busy or locked database, a corrupt one, a closed store.
STORE_ERROR_KINDS: Final = ("disk_full", "io_error", "busy", "corrupt", "closed")

# --- configuration -------------------------------------------------------------------------

Op = Literal["insert", "update", "delete"]
Change = tuple[Op, Entity]

# --- deliveries ----------------------------------------------------------------------------

# A due delivery as loaded, in the field order of `delivery.model.Delivery` (the loader
# builds the object: a store's thread makes no Python object it does not have to):
# (id, event_id, postback_id, app_id, network, event_name, x_app_id, conversion_type,
#  x_account_id, retry_attempts, attempts, first_due_ms, due_ms, lane, event_body)
DeliveryRow = tuple[
    int, str, str, str, str, str, str, str, str | None, int, int, int, int, str, bytes
]
ROW_ID: Final = 0
ROW_DUE_MS: Final = 12


class Stored(NamedTuple):
    """What `Store.accept` stored: per event, whether it was stored now (False: a
    duplicate); and the deliveries this daemon may send at once (see `accept`)."""

    fresh: list[bool]
    owned: list[Delivery]


# One lane to read: (lane, cursor (due_ms, id) of the last row read, most rows).
LaneRead = tuple[str, tuple[int, int], int]
# What a lane read found: (lane, rows, when its next pending row is due; None: none known).
LaneRows = tuple[str, list[DeliveryRow], int | None]


class HeldGroup(NamedTuple):
    """Held deliveries by what decides their release (delivery/holds.py)."""

    postback_id: str
    x_account_id: str | None  # the postback's signing account as it was accepted
    app_id: str
    network: str
    deliveries: int


# A device's latest attribution: (network, engagement_time, attributed_ms).
DeviceAttribution = tuple[str, str, int]

# --- rate budgets --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetGrant:
    """What a rate-budget call left this daemon with: `granted` requests it may send (a
    take's slice; 0 for a correction), in the window `window_no` of the account's shared
    row, which ends at `window_end_ms`. A slice is spent only in its window: once that ended
    (or the row moved on to another window), what is left of it is void."""

    granted: int
    window_no: int
    window_end_ms: int


# --- results reads -------------------------------------------------------------------------

# A list's paging key (api/paging.py): (due_ms, id) for the pending states, else (id,).
# The pending states list in due order, which a delivery that becomes due later sorts
# after; every other list by id, which new rows sort after.
Key = tuple[int, ...]
Row = tuple[Key, dict[str, Any]]
BY_DUE: Final = ("scheduled", "ready")
# Delivery ids (and list keys) are signed 64-bit integers in every store.
MAX_ID: Final = 2**63 - 1


def delivery_key_size(state: str | None) -> int:
    """How many integers a key of the deliveries listed by `state` has."""
    return 2 if state in BY_DUE else 1


# --- retention -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deleted:
    events: int = 0
    deliveries: int = 0
    claims: int = 0
    attributions: int = 0
    devices: int = 0
    # Where the next batch starts (an id); None when nothing older is left to look at.
    next_after: int | None = None


# -------------------------------------------------------------------------------------------


class Store(Protocol):
    """The durable state of one postbackd (see the module's docstring for the rules)."""

    # --- life ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, bring the schema to this version (migrations, append-only), and make the
        store ready for every other method. Raises `PostbackdError` (or `OSError`) with one
        clear line when it cannot (database unreachable, held by another daemon, schema
        newer than this postbackd); never names a password. Undoes what it opened first."""
        ...

    async def close(self) -> None:
        """Commit what was submitted, then close. Safe to call twice, or after a failed
        `open`. Deliveries still leased are released (a shared store) or simply stay
        pending (the embedded one)."""
        ...

    @property
    def healthy(self) -> bool:
        """Writes succeed: False from a write that failed for the store's sake to the next
        one that succeeds, and once closed."""
        ...

    async def size_bytes(self) -> int:
        """What the store takes on disk (for `postbackd_store_bytes`)."""
        ...

    # --- configuration ---------------------------------------------------------------------

    async def seal_tokens(self) -> int:
        """Bring every stored X account token to the first key of `secret_key` (store
        tokens encrypted at rest; store/sealing.py), before anything else writes; how many
        accounts were rewritten. Raises `SecretKeyError` when the keys given cannot open
        the stored tokens (the daemon cannot start)."""
        ...

    async def load_index(self) -> Index:
        """Every configuration entity, tokens in plain text, in creation order."""
        ...

    async def apply(self, changes: Sequence[Change]) -> int:
        """Write configuration changes in one transaction, all of them or none (parents
        inserted before their children, by the caller's order); the configuration version
        that results."""
        ...

    async def config_version(self) -> int:
        """The configuration's version: it grows by one with every committed `apply`, by
        any daemon of the store, and never goes back while the store is open (a shared
        store keeps it in the database). A daemon that missed a notice (a lost connection)
        compares it with the version of its index, and reloads when they differ."""
        ...

    def watch_config(self, listener: Callable[[int], None]) -> None:
        """Call `listener(version)` when another daemon committed a configuration change
        (a shared store: LISTEN/NOTIFY, and a version check after a reconnect). The
        embedded store has no other daemon and never calls it."""
        ...

    # --- intake ----------------------------------------------------------------------------

    async def accept(
        self, planned: Sequence[tuple[Event, Sequence[NewDelivery]]], now_ms: int
    ) -> Stored:
        """Store each event with its deliveries, unless an event of that id is stored
        already (or comes earlier in the same batch): per event, True when stored now,
        False when it was a duplicate. On return the fresh events and all their deliveries
        are committed (accepted = durable), with new delivery ids; pending ones are due
        from their `due_ms`. On `StoreUnavailable` nothing of the batch is stored.

        `owned`: the ready deliveries due by `now_ms` that are this daemon's already, for
        the engine to take without reading them back (the embedded store: all of them; a
        shared store: none, they are leased like any other)."""
        ...

    # --- the engine: due work, leases, results ---------------------------------------------

    @property
    def lease_s(self) -> float | None:
        """How long a lease lasts: the engine renews its leases well within it. None when
        leases never run out (the embedded store: one daemon holds it)."""
        ...

    async def pending_lanes(self) -> list[str]:
        """Every lane (X account id; "" for none) that has pending deliveries."""
        ...

    async def lease_due(
        self, reads: Sequence[LaneRead], now_ms: int, max_rows: int
    ) -> list[LaneRows]:
        """For each (lane, cursor, limit), in order, the lane's pending deliveries due by
        `now_ms`, after the cursor in (due_ms, id) order, until `max_rows` rows in all;
        each leased to this daemon. With fewer rows than its limit, a lane also gets when
        its next pending row is due (None when it has none), so the loader knows when to
        read it again. The answer is ordered with the writes: a result committed before
        the call is seen by it. A shared store may also return rows before the cursor
        (expired leases of a dead daemon); the caller ignores ids it holds already."""
        ...

    async def renew_leases(self, now_ms: int) -> None:
        """Extend every lease this daemon holds to `now_ms` + `lease_s`."""
        ...

    async def release_leases(self, ids: Collection[int]) -> None:
        """Give deliveries back unsent (shutdown, a delivery dropped from memory): they
        are pending for any daemon again at once."""
        ...

    def write_results(self, results: Sequence[Result], now_ms: int) -> asyncio.Future[None]:
        """Queue results for the next group commit; the future resolves once they are
        committed (and their leases ended), or fails with `StoreUnavailable` (nothing of
        them written; the caller writes them again later). A delivery cancelled meanwhile
        stays cancelled unless the result is `delivered` or `dead`. A claim and an
        attribution of a result are stored with it; the device's latest attribution is
        that of its latest engagement, whatever the order results arrive in."""
        ...

    # --- rate budgets (PRODUCT.md 5) ---------------------------------------------------------

    @property
    def budgets_shared(self) -> bool:
        """Other daemons draw on the same X accounts' budgets: the engine then sends only
        what it took as slices. False for the embedded store (one daemon, a local budget)."""
        ...

    async def take_budget(
        self, account_id: str, want: int, now_ms: int, cap: int, window_ms: int
    ) -> BudgetGrant:
        """Take up to `want` requests of the account's current window. A window that ended
        (or none yet) is opened at `now_ms` for `window_ms` with the window's limit (X's
        last word, never above the configured `cap`) and nothing granted. Never grants more
        than the window has left; 0 when it is spent (wait for `window_end_ms`)."""
        ...

    async def return_budget(self, account_id: str, window_no: int, count: int) -> None:
        """Give back `count` requests of a slice of window `window_no` that were not sent;
        nothing happens when the row has moved on to another window since."""
        ...

    async def correct_budget(
        self,
        account_id: str,
        limit: int | None,
        remaining: int | None,
        reset_ms: int | None,
        now_ms: int,
        cap: int,
        *,
        limited: bool = False,
    ) -> BudgetGrant:
        """Correct the account's row from X's rate-limit headers (None: absent), as the
        local budget does (delivery/ratelimit.py): X's limit (capped) replaces the window's;
        X's remaining for the current window leaves no more than it to grant (requests in
        flight are granted but not yet counted by X, so the lower count is the true one); a
        reset later than the window's end is X's next window, counted as X counts it; an
        answer of a window that ended changes nothing. `limited` (a 429) spends what is left
        of the window X names. Grants nothing: the row's window, for the caller's slice."""
        ...

    # --- holds, replay, cancel ---------------------------------------------------------------

    async def held_groups(self) -> list[HeldGroup]:
        """Held deliveries grouped by (postback, signing account as accepted)."""
        ...

    async def release_held(
        self, postback_id: str, x_account_id: str | None, lane: str, now_ms: int
    ) -> int:
        """One group's held deliveries become ready, in `lane` (the account that signs
        them now), due no earlier than `now_ms`; how many."""
        ...

    async def replay_dead(self, ids: Sequence[int] | None, now_ms: int) -> dict[str, int]:
        """Dead deliveries (all, or those of `ids`) become ready at `now_ms` with their
        retries restored, in the lane of the account that last tried them; the count per
        lane."""
        ...

    async def cancel(
        self,
        ids: Sequence[int] | None,
        postback_id: str | None,
        in_flight: Collection[int],
        now_ms: int,
    ) -> int:
        """Deliveries not gone out (scheduled, ready, held) become `cancelled`: those of
        `ids`, or else every one of `postback_id`; those of `in_flight` (requests at X)
        are left to finish. The count cancelled."""
        ...

    def watch_cancels(self, listener: Callable[[], None]) -> None:
        """Call `listener()` when another daemon cancelled deliveries (a shared store:
        LISTEN/NOTIFY, and once after every reconnect, as a notice may have been missed):
        this daemon may hold some of them in memory. The embedded store never calls it."""
        ...

    async def cancelled_among(self, ids: Sequence[int]) -> list[int]:
        """Those of `ids` that are cancelled."""
        ...

    async def pending_of_postback(self, postback_id: str) -> int:
        """Deliveries of a postback not gone out yet (scheduled, ready, held)."""
        ...

    async def count_by_state(self, now_ms: int) -> dict[str, int]:
        """Deliveries by state for the queue-depth gauge: `scheduled` (pending, due after
        `now_ms`), `ready` (pending, due), `held`, `dead`."""
        ...

    async def device_attributions(
        self, app_id: str, device_keys: Sequence[str]
    ) -> dict[str, DeviceAttribution]:
        """Each device's latest attribution; devices without one are absent."""
        ...

    # --- results reads (JSON-ready items, store/results.py shapes them) ----------------------

    async def list_deliveries(
        self,
        state: str | None,
        after: Key | None,
        limit: int,
        now_ms: int,
        in_flight: Collection[int] = (),
    ) -> list[Row]:
        """Up to `limit` deliveries after the key `after`, each with its key, in list
        order: (due_ms, id) for `scheduled` and `ready`, id for the others and for all.
        `in_flight`: the ids whose request is at X, listed as `in_flight`."""
        ...

    async def event_details(
        self, event_id: str, now_ms: int, in_flight: Collection[int] = ()
    ) -> dict[str, Any] | None:
        """The event, its deliveries and its claims; None when no such event is stored."""
        ...

    async def list_attributions(
        self, app_id: str | None, tracker_id: str | None, after: Key | None, limit: int
    ) -> list[Row]:
        """Up to `limit` attributions with an id above `after`, oldest first, with keys."""
        ...

    async def tracker_report(self, app_id: str | None) -> dict[str, dict[str, Any]]:
        """Per tracker id ("" for none): claims by outcome, attributions by engagement
        type, `x_claimed`, `accepted`, and `not_accepted` by reason."""
        ...

    # --- retention (PRODUCT.md 2) --------------------------------------------------------------

    async def delete_events(self, cutoff_ms: int, after_id: int) -> Deleted:
        """One small batch (one short transaction) of events received before `cutoff_ms`
        whose every delivery is final, with their deliveries and claims, oldest first from
        after `after_id`; `next_after` None when nothing older is left to look at."""
        ...

    async def delete_attributions(self, cutoff_ms: int) -> Deleted:
        """One small batch of attributions recorded before `cutoff_ms`, and of device
        states whose latest attribution is that old; `next_after` None when done."""
        ...

    async def reclaim(self, pages: int) -> int:
        """Give up to `pages` units of freed space back to the file system; how many are
        left to give (0: done). A store that reclaims on its own answers 0."""
        ...
