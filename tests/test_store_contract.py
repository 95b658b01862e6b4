"""The store contract (store/base.py), through the interface alone, on every store: what the
engine, intake, API, janitor and catalog rely on, whichever store holds the state
(PRODUCT.md 5: "one contract test suite runs on both")."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import factories
from pgproc import pg_server, pg_url
from postbackd.catalog import KINDS, Catalog
from postbackd.delivery.model import Attribution, Claim, Delivery, NewDelivery, Result
from postbackd.errors import StoreUnavailable
from postbackd.event import Event
from postbackd.settings import Settings
from postbackd.store.base import HeldGroup, Store
from postbackd.store.factory import create_store
from postbackd.store.sealing import SecretKeyError
from storekit import APP, delivery, event

__all__ = ["pg_server", "pg_url"]  # fixtures of the PostgreSQL store

# Each store the contract runs on; a store adds its name here and its settings below.
STORES = ["sqlite", "postgresql"]
NOW = 1_800_000_000_000
DAY_MS = 86_400_000
LATE = "2026-11-21T08:00:00.000Z"
EARLY = "2026-11-20T08:00:00.000Z"


def store_settings(database_url: str | None, tmp_path: Path, **kw: object) -> Settings:
    """The settings of a store: the embedded one in the data dir when `database_url` is
    None, else the database it names."""
    return Settings(data_dir=tmp_path / "data", database_url=database_url, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    """None for the embedded store; a fresh database on the PostgreSQL server of the test run
    (tests/pgproc.py) for the shared one."""
    if kind == "sqlite":
        return None
    if kind == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    raise AssertionError(f"no settings for the {kind} store")


@pytest.fixture
async def store(database_url: str | None, tmp_path: Path) -> AsyncIterator[Store]:
    opened = create_store(store_settings(database_url, tmp_path))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def planned(
    *items: tuple[int, Sequence[NewDelivery]], received_at_ms: int = NOW
) -> list[tuple[Event, Sequence[NewDelivery]]]:
    return [(event(n, received_at_ms), deliveries) for n, deliveries in items]


async def lease_all(store: Store, lane: str, now_ms: int = NOW) -> list[Delivery]:
    (found,) = await store.lease_due([(lane, (0, 0), 1_000)], now_ms, 1_000)
    return [Delivery(*row) for row in found[1]]


def result(d: Delivery, state: str = "delivered", **kw: object) -> Result:
    values: dict[str, object] = {
        "delivery_id": d.id, "state": state, "reason": None, "attempts": d.attempts + 1,
        "due_ms": d.due_ms, "account_id": d.lane or None, "last_status": 200,
        "last_error": None,
    } | kw  # fmt: skip
    return Result(**values)  # type: ignore[arg-type]


def claim(d: Delivery, outcome: str = "attributed", tracker_id: str = "kotr1") -> Claim:
    return Claim(d.event_id, d.app_id, d.network, tracker_id, outcome, "click", "CLICK",
                 LATE, "Winter", b'[{"reason": "older"}]')  # fmt: skip


def attribution(d: Delivery, device: str, network: str, engagement_time: str) -> Attribution:
    return Attribution(d.app_id, device, network, "kotr1", "CLICK", engagement_time, d.event_id)


# --- life ----------------------------------------------------------------------------------


async def test_an_open_store_is_healthy_and_a_closed_one_refuses(store: Store) -> None:
    assert store.healthy
    await store.close()
    assert not store.healthy
    with pytest.raises(StoreUnavailable):
        await store.accept(planned((1, [delivery("a", NOW)])), NOW)
    with pytest.raises(StoreUnavailable):
        await store.count_by_state(NOW)
    with pytest.raises(StoreUnavailable):
        await store.write_results([], NOW)
    await store.close()  # twice is fine
    assert await store.size_bytes() >= 0


# --- intake --------------------------------------------------------------------------------


async def test_accept_stores_fresh_events_and_tells_duplicates(store: Store) -> None:
    stored = await store.accept(
        planned((1, [delivery("a", NOW), delivery("b", NOW)]), (2, [delivery("a", NOW)]),
                (1, [delivery("a", NOW)])),
        NOW,
    )  # fmt: skip
    assert stored.fresh == [True, True, False]  # a repeat within the batch is a duplicate too
    again = await store.accept(planned((2, [delivery("a", NOW)]), (3, [])), NOW)
    assert again.fresh == [False, True]
    assert await store.count_by_state(NOW) == {"scheduled": 0, "ready": 3, "held": 0, "dead": 0}
    details = await store.event_details("ev-1", NOW)
    assert details is not None
    assert details["event"]["event_id"] == "ev-1"
    assert [d["state"] for d in details["deliveries"]] == ["ready", "ready"]
    ids = [d.id for lane in ("a", "b") for d in await lease_all(store, lane)]
    assert len(set(ids)) == 3 and all(i > 0 for i in ids)
    without = await store.event_details("ev-3", NOW)  # an event no postback applied to
    assert without is not None and without["deliveries"] == without["claims"] == []
    assert await store.event_details("ev-9", NOW) is None


async def test_accept_hands_over_the_due_deliveries_that_are_the_daemons_own(
    store: Store,
) -> None:
    """The embedded store's deliveries are its daemon's from the start: the ready ones due
    now come back from `accept`, exactly as a read would load them (their event parsed
    already); a shared store's are leased like any other, and none come back."""
    stored = await store.accept(
        planned((1, [delivery("a", NOW), delivery("b", NOW + 5_000)]),
                (2, [delivery("a", NOW, state="held"), delivery("b", NOW)]),
                (1, [delivery("a", NOW)])),
        NOW,
    )  # fmt: skip
    if store.lease_s is not None:
        assert stored.owned == []
        return
    read = [*await lease_all(store, "a"), *await lease_all(store, "b")]
    assert [(d.id, d.event_id, d.lane, d.due_ms) for d in stored.owned] == [
        (d.id, d.event_id, d.lane, d.due_ms) for d in read
    ]
    assert [d.event_id for d in stored.owned] == ["ev-1", "ev-2"]
    for owned, loaded in zip(stored.owned, read, strict=True):
        assert owned.event is not None and owned.event.to_json() == loaded.event_body
        assert dataclasses.replace(owned, event_body=b"", event=None) == dataclasses.replace(
            loaded, event_body=b""
        )


async def test_new_ids_never_reuse_old_ones_across_a_reopen(
    database_url: str | None, tmp_path: Path
) -> None:
    settings = store_settings(database_url, tmp_path)
    first = create_store(settings)
    await first.open()
    await first.accept(planned((1, [delivery("a", NOW)] * 3)), NOW)
    before = {d.id for d in await lease_all(first, "a")}
    await first.close()
    again = create_store(settings)
    await again.open()
    try:
        await again.accept(planned((2, [delivery("a", NOW)])), NOW)
        after = {d.id for d in await lease_all(again, "a")}
    finally:
        await again.close()
    assert before < after and len(after) == 4


# --- due work, per lane --------------------------------------------------------------------


async def test_lanes_are_leased_in_due_order_each_with_its_next_due(store: Store) -> None:
    await store.accept(
        planned(*((n, [delivery("a", NOW - 100 + n)]) for n in range(5)),
                (10, [delivery("b", NOW - 50)]),
                (11, [delivery("b", NOW + 5_000, state="scheduled")]),
                (12, [delivery("", NOW, state="held", reason="no_x_account")]),
                (13, [delivery("c", NOW, state="skipped", reason="no_device_id")])),
        NOW - 200,
    )  # fmt: skip
    assert sorted(await store.pending_lanes()) == ["a", "b"]
    found = await store.lease_due([("a", (0, 0), 3), ("b", (0, 0), 3)], NOW, 100)
    (lane_a, rows_a, next_a), (lane_b, rows_b, next_b) = found
    a = [Delivery(*row) for row in rows_a]
    assert lane_a == "a" and [d.event_id for d in a] == ["ev-0", "ev-1", "ev-2"]
    assert next_a == NOW  # as many rows as asked: read again now
    assert a[0].event_body and Event.from_json(a[0].event_body).event_id == "ev-0"
    assert (a[0].app_id, a[0].lane, a[0].attempts, a[0].retry_attempts) == (APP, "a", 0, 3)
    assert lane_b == "b" and [Delivery(*r).event_id for r in rows_b] == ["ev-10"]
    assert next_b == NOW + 5_000  # the scheduled one, not due yet
    # From the cursor on: the rest of lane a, and nothing more.
    last = a[-1]
    (rest,) = await store.lease_due([("a", (last.due_ms, last.id), 10)], NOW, 100)
    assert [Delivery(*r).event_id for r in rest[1]] == ["ev-3", "ev-4"] and rest[2] is None
    # max_rows bounds all lanes together.
    capped = await store.lease_due([("a", (0, 0), 10), ("b", (0, 0), 10)], NOW, 2)
    assert sum(len(rows) for _, rows, _ in capped) == 2


async def test_leases_can_be_renewed_and_given_back(store: Store) -> None:
    await store.accept(planned((1, [delivery("a", NOW)])), NOW)
    (d,) = await lease_all(store, "a")
    await store.renew_leases(NOW + 1)
    await store.release_leases([d.id])
    # Given back: pending, and leased again at once.
    assert [x.id for x in await lease_all(store, "a")] == [d.id]
    assert store.lease_s is None or store.lease_s > 0


# --- results -------------------------------------------------------------------------------


async def test_results_move_deliveries_and_keep_claims_and_attributions(store: Store) -> None:
    await store.accept(planned(*((n, [delivery("a", NOW)]) for n in range(4))), NOW)
    d0, d1, d2, d3 = await lease_all(store, "a")
    await store.write_results(
        [
            result(d0, claim=claim(d0), attribution=attribution(d0, "dev-1", "x_ios", LATE)),
            # An earlier engagement's answer arriving later does not replace the latest.
            result(d1, claim=claim(d1), attribution=attribution(d1, "dev-1", "x_and", EARLY)),
            result(d2, "scheduled", due_ms=NOW + 60_000, last_status=503, last_error="503"),
            result(d3, "dead", reason="x_error", last_status=400, last_error="bad"),
        ],
        NOW + 1,
    )
    assert await lease_all(store, "a") == []  # one waits for its retry, the others are final
    (retry,) = await lease_all(store, "a", NOW + 60_000)
    assert (retry.id, retry.attempts) == (d2.id, 1)
    assert await store.count_by_state(NOW) == {"scheduled": 1, "ready": 0, "held": 0, "dead": 1}
    assert await store.device_attributions(APP, ["dev-1", "dev-2"]) == {
        "dev-1": ("x_ios", LATE, NOW + 1)
    }
    details = await store.event_details(d0.event_id, NOW)
    assert details is not None
    (stored,) = details["deliveries"]
    assert (stored["state"], stored["attempts"], stored["last_status"]) == ("delivered", 1, 200)
    (kept,) = details["claims"]
    assert kept["outcome"] == "attributed" and kept["rejected"] == [{"reason": "older"}]
    rows = await store.list_attributions(APP, None, None, 10)
    assert [row[1]["event_id"] for row in rows] == [d0.event_id, d1.event_id]
    after_first = await store.list_attributions(None, "kotr1", rows[0][0], 10)
    assert [row[1]["event_id"] for row in after_first] == [d1.event_id]
    report = await store.tracker_report(APP)
    assert report["kotr1"]["claims"] == {"attributed": 2}
    assert report["kotr1"]["attributions"] == {"CLICK": 2}
    assert report["kotr1"]["accepted"] == 2 and report["kotr1"]["x_claimed"] == 2
    assert await store.tracker_report("kogame-other") == {}


async def test_lists_page_in_their_order_and_show_in_flight(store: Store) -> None:
    await store.accept(
        planned(*((n, [delivery("a", NOW + 10 - n)]) for n in range(3)),
                (5, [delivery("a", NOW + 9_000, state="scheduled")])),
        NOW,
    )  # fmt: skip
    ready = await store.list_deliveries("ready", None, 2, NOW + 10)
    assert [item["event_id"] for _, item in ready] == ["ev-2", "ev-1"]  # due order
    more = await store.list_deliveries("ready", ready[-1][0], 10, NOW + 10)
    assert [item["event_id"] for _, item in more] == ["ev-0"]
    scheduled = await store.list_deliveries("scheduled", None, 10, NOW + 10)
    assert [(key[0], item["state"]) for key, item in scheduled] == [(NOW + 9_000, "scheduled")]
    flying = ready[0][1]["id"]
    everything = await store.list_deliveries(None, None, 10, NOW + 10, {flying})
    assert [key for key, _ in everything] == sorted(key for key, _ in everything)
    assert {item["id"]: item["state"] for _, item in everything}[flying] == "in_flight"
    in_flight = await store.list_deliveries("in_flight", None, 10, NOW + 10, {flying})
    assert [item["id"] for _, item in in_flight] == [flying]
    # A request at X is not listed as ready.
    ready = await store.list_deliveries("ready", None, 10, NOW + 10, {flying})
    assert flying not in [item["id"] for _, item in ready]


# --- holds, replay, cancel -----------------------------------------------------------------


async def test_held_groups_are_released_into_the_signing_lane(store: Store) -> None:
    held = delivery("", NOW, state="held", reason="no_x_account", postback_id="kopbA")
    await store.accept(planned((1, [held]), (2, [held]), (3, [delivery("a", NOW)])), NOW)
    assert await store.held_groups() == [HeldGroup("kopbA", None, APP, "x_ios", 2)]
    assert (await store.count_by_state(NOW))["held"] == 2
    assert await store.release_held("kopbA", None, "acct", NOW + 5) == 2
    assert await store.held_groups() == []
    released = await lease_all(store, "acct", NOW + 5)
    assert [d.event_id for d in released] == ["ev-1", "ev-2"]
    assert all(d.due_ms == NOW + 5 and d.lane == "acct" for d in released)
    assert await store.release_held("kopbA", None, "acct", NOW + 5) == 0


async def test_dead_deliveries_are_replayed_with_their_retries_restored(store: Store) -> None:
    await store.accept(planned((1, [delivery("a", NOW)]), (2, [delivery("a", NOW)])), NOW)
    d1, d2 = await lease_all(store, "a")
    await store.write_results(
        [result(d, "dead", attempts=4, account_id="acct", last_error="5xx") for d in (d1, d2)],
        NOW,
    )
    assert await store.replay_dead([d1.id], NOW + 1) == {"acct": 1}
    assert await store.replay_dead(None, NOW + 2) == {"acct": 1}
    assert await store.replay_dead(None, NOW + 3) == {}
    again = await lease_all(store, "acct", NOW + 2)
    assert [(d.id, d.attempts, d.due_ms) for d in again] == [(d1.id, 0, NOW + 1),
                                                            (d2.id, 0, NOW + 2)]  # fmt: skip


async def test_cancel_takes_what_has_not_gone_out(store: Store) -> None:
    mine = dataclasses.replace(delivery("a", NOW), postback_id="kopbA")
    other = dataclasses.replace(delivery("a", NOW), postback_id="kopbB")
    held = delivery("", NOW, state="held", reason="no_x_account", postback_id="kopbA")
    await store.accept(planned((1, [mine, other]), (2, [mine]), (3, [held]), (4, [mine])), NOW)
    leased = {d.event_id: d for d in await lease_all(store, "a") if d.postback_id == "kopbA"}
    done, flying, chosen = leased["ev-1"], leased["ev-2"], leased["ev-4"]
    await store.write_results([result(done)], NOW)
    assert await store.pending_of_postback("kopbA") == 3  # ev-2, the held ev-3, ev-4
    assert await store.cancel([chosen.id], None, (), NOW) == 1
    assert await store.pending_of_postback("kopbA") == 2
    # By postback: the held one goes, the one at X finishes, the delivered one stays so.
    assert await store.cancel(None, "kopbA", {flying.id}, NOW) == 1
    assert await store.pending_of_postback("kopbA") == 1
    assert await store.pending_of_postback("kopbB") == 1
    cancelled = await store.list_deliveries("cancelled", None, 10, NOW)
    assert sorted(item["event_id"] for _, item in cancelled) == ["ev-3", "ev-4"]
    # What another daemon holding some of them learns (Engine._drop_cancelled).
    asked = [done.id, flying.id, chosen.id]
    assert await store.cancelled_among(asked) == [chosen.id]
    # A result on its way after a cancel: only delivered or dead overrides it.
    await store.write_results([result(chosen, "scheduled", due_ms=NOW + 1)], NOW)
    details = await store.event_details("ev-4", NOW)
    assert details is not None and details["deliveries"][0]["state"] == "cancelled"
    await store.write_results([result(flying)], NOW)
    assert await store.pending_of_postback("kopbA") == 0


# --- retention -----------------------------------------------------------------------------


async def test_retention_deletes_what_is_final_and_old(store: Store) -> None:
    old = NOW - 40 * DAY_MS
    await store.accept(
        planned(*((n, [delivery("a", old)]) for n in range(3)), received_at_ms=old), old
    )
    await store.accept(planned((10, [delivery("a", old)]), received_at_ms=old), old)
    await store.accept(planned((20, [delivery("a", NOW)])), NOW)
    leased = {d.event_id: d for d in await lease_all(store, "a")}
    final = [leased[f"ev-{n}"] for n in range(3)] + [leased["ev-20"]]
    await store.write_results(
        [result(d, claim=claim(d), attribution=attribution(d, f"dev-{d.id}", "x_ios", LATE))
         for d in final],
        old,
    )  # fmt: skip
    cutoff = NOW - 30 * DAY_MS
    totals = {"events": 0, "deliveries": 0, "claims": 0}
    after: int | None = 0
    while after is not None:
        deleted = await store.delete_events(cutoff, after)
        for name in totals:
            totals[name] += getattr(deleted, name)
        after = deleted.next_after
    assert totals == {"events": 3, "deliveries": 3, "claims": 3}
    assert await store.event_details("ev-0", NOW) is None
    assert await store.event_details("ev-10", NOW) is not None  # still pending: kept
    assert await store.event_details("ev-20", NOW) is not None  # young: kept
    # Attributions have their own, longer retention.
    assert len(await store.list_attributions(None, None, None, 10)) == 4
    gone = await store.delete_attributions(old + 1)
    assert (gone.attributions, gone.devices) == (4, 4) and gone.next_after is None
    assert await store.device_attributions(APP, [f"dev-{d.id}" for d in final]) == {}
    for _ in range(1_000):
        if await store.reclaim(2_000) == 0:
            break
    else:
        raise AssertionError("reclaim never finished")


# --- configuration -------------------------------------------------------------------------


async def test_configuration_round_trips_with_its_version(store: Store) -> None:
    assert await store.seal_tokens() == 0
    empty = await store.load_index()
    assert not empty.apps and not empty.accounts
    start = await store.config_version()
    app, account = factories.app(), factories.account()
    campaign, segment = factories.campaign(), factories.segment()
    tracker, postback = factories.tracker(), factories.postback()
    version = await store.apply([("insert", e) for e in
                                 (app, account, campaign, segment, tracker, postback)])  # fmt: skip
    assert version > start and await store.config_version() == version
    index = await store.load_index()
    assert index.apps == {app.id: app} and index.accounts == {account.id: account}
    assert index.trackers == {tracker.id: tracker} and index.postbacks == {postback.id: postback}
    renamed = dataclasses.replace(app, name="Renamed")
    second = await store.apply([("update", renamed)])
    assert second > version
    assert (await store.load_index()).apps[app.id].name == "Renamed"
    third = await store.apply([("delete", postback), ("delete", tracker)])
    assert third > second
    index = await store.load_index()
    assert index.postbacks == {} and index.trackers == {} and index.apps[app.id] == renamed


async def test_a_failed_change_applies_nothing(store: Store) -> None:
    app = factories.app()
    version = await store.apply([("insert", app)])
    with pytest.raises(StoreUnavailable):  # the app exists: no driver's error leaves a store
        await store.apply([("insert", factories.account()), ("insert", app)])
    assert await store.config_version() == version
    assert (await store.load_index()).accounts == {}


async def test_tokens_are_sealed_with_the_key_and_refused_without_it(
    database_url: str | None, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    sealed = create_store(store_settings(database_url, tmp_path, secret_key=key))
    await sealed.open()
    try:
        await sealed.apply([("insert", factories.account(access_token="tok-secret-1"))])
        assert (await sealed.load_index()).accounts["18ce54d4x5t"].access_token == "tok-secret-1"
        assert await sealed.seal_tokens() == 0  # every row is under the first key already
    finally:
        await sealed.close()
    for keys in (None, Fernet.generate_key().decode()):
        other = create_store(store_settings(database_url, tmp_path, secret_key=keys))
        await other.open()
        try:
            with pytest.raises(SecretKeyError):
                await other.seal_tokens()
        finally:
            await other.close()


async def test_the_catalog_follows_changes_another_daemon_made(store: Store) -> None:
    catalog = await Catalog.load(store)
    # Another daemon of the store adds an app: its change reaches this one's index on the
    # store's notice (here: asked for), with no restart.
    elsewhere = factories.app(id="kogame-elsewhere", name="Elsewhere")
    await store.apply([("insert", elsewhere)])
    assert "kogame-elsewhere" not in catalog.index.apps
    await catalog.reload()
    assert catalog.index.apps["kogame-elsewhere"] == elsewhere
    # A change of this daemon that lands after another's it has not seen: both end up in
    # the index (the version says one was missed, and the catalog reads it again).
    other = factories.app(id="kogame-other", name="Other")
    await store.apply([("insert", other)])
    saved = await catalog.create(KINDS["apps"], {"name": "Mine", "platform": "ios"})
    async with asyncio.timeout(5):
        while "kogame-other" not in catalog.index.apps:
            await asyncio.sleep(0.01)
    assert saved.entity.id in catalog.index.apps
    assert set(catalog.index.apps) == set((await store.load_index()).apps)


# --- rate budgets (PRODUCT.md 5) -------------------------------------------------------------

CAP = 200
WINDOW_MS = 5_000


def shared_only(store: Store) -> None:
    if not store.budgets_shared:
        pytest.skip(
            "the embedded store has one daemon: its budget is local (delivery/ratelimit.py)"
        )


async def test_slices_never_grant_more_than_the_window_holds(store: Store) -> None:
    first = await store.take_budget("acct", 150, NOW, CAP, WINDOW_MS)
    second = await store.take_budget("acct", 150, NOW + 10, CAP, WINDOW_MS)
    if not store.budgets_shared:
        # One daemon: the store grants what is asked; the local budget is the limit.
        assert (first.granted, second.granted) == (150, 150)
        return
    assert (first.granted, second.granted) == (150, 50)
    assert first.window_no == second.window_no
    assert first.window_end_ms == second.window_end_ms == NOW + WINDOW_MS
    spent = await store.take_budget("acct", 1, NOW + 20, CAP, WINDOW_MS)
    assert spent.granted == 0
    # Another account's budget is its own.
    assert (await store.take_budget("other", 150, NOW, CAP, WINDOW_MS)).granted == 150
    # The next window holds the whole limit again.
    fresh = await store.take_budget("acct", 500, NOW + WINDOW_MS, CAP, WINDOW_MS)
    assert fresh.granted == CAP
    assert fresh.window_no == first.window_no + 1
    assert fresh.window_end_ms == NOW + 2 * WINDOW_MS


async def test_a_slice_given_back_is_granted_again_in_its_window_only(store: Store) -> None:
    shared_only(store)
    grant = await store.take_budget("acct", CAP, NOW, CAP, WINDOW_MS)
    await store.return_budget("acct", grant.window_no, 30)
    assert (await store.take_budget("acct", 100, NOW + 1, CAP, WINDOW_MS)).granted == 30
    # A return of an ended window never adds to the next one.
    later = await store.take_budget("acct", 150, NOW + WINDOW_MS, CAP, WINDOW_MS)
    await store.return_budget("acct", grant.window_no, 100)
    assert (await store.take_budget("acct", 100, NOW + WINDOW_MS + 1, CAP, WINDOW_MS)).granted == 50
    assert later.window_no == grant.window_no + 1


async def test_x_headers_correct_the_shared_window(store: Store) -> None:
    shared_only(store)
    grant = await store.take_budget("acct", 20, NOW, CAP, WINDOW_MS)
    # X counted 120 requests of this window (another client of the token, or answers not
    # seen yet): only 80 are left, whatever was granted; X names the window's end.
    reset = NOW + 3_000
    corrected = await store.correct_budget("acct", CAP, 80, reset, NOW + 5, CAP)
    assert (corrected.window_no, corrected.window_end_ms) == (grant.window_no, reset)
    assert (await store.take_budget("acct", 100, NOW + 6, CAP, WINDOW_MS)).granted == 80
    # An answer of an older window changes nothing.
    await store.correct_budget("acct", CAP, CAP, NOW - 1_000, NOW + 7, CAP)
    assert (await store.take_budget("acct", 1, NOW + 8, CAP, WINDOW_MS)).granted == 0
    # X's next window, counted as X counts it (10 of its requests arrived already).
    after = await store.correct_budget("acct", CAP, 190, reset + WINDOW_MS, reset + 10, CAP)
    assert after.window_no == grant.window_no + 1
    assert after.window_end_ms == reset + WINDOW_MS
    assert (await store.take_budget("acct", 500, reset + 11, CAP, WINDOW_MS)).granted == 190


async def test_a_429_spends_the_window_and_x_lowers_the_limit(store: Store) -> None:
    shared_only(store)
    await store.take_budget("acct", 10, NOW, CAP, WINDOW_MS)
    await store.correct_budget("acct", CAP, 0, NOW + 2_000, NOW + 1, CAP, limited=True)
    assert (await store.take_budget("acct", 1, NOW + 2, CAP, WINDOW_MS)).granted == 0
    # From X's reset on, X's lower limit is the window's (never above the configured cap).
    await store.correct_budget("acct", 50, None, None, NOW + 3, CAP)
    assert (await store.take_budget("acct", 500, NOW + 2_000, CAP, WINDOW_MS)).granted == 50
    await store.correct_budget("acct", 10_000, None, None, NOW + 2_001, CAP)
    assert (await store.take_budget("acct", 500, NOW + 2_002, CAP, WINDOW_MS)).granted == CAP - 50


async def test_daemons_on_one_store_share_the_window(
    store: Store, database_url: str | None, tmp_path: Path
) -> None:
    shared_only(store)
    other = create_store(store_settings(database_url, tmp_path / "other"))
    await other.open()
    try:
        grants = await asyncio.gather(*(
            s.take_budget("acct", 7, NOW, CAP, WINDOW_MS) for _ in range(40) for s in (store, other)
        ))  # fmt: skip
        assert sum(g.granted for g in grants) == CAP
        assert len({(g.window_no, g.window_end_ms) for g in grants}) == 1
    finally:
        await other.close()
