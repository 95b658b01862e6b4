"""The claim request as X receives it (PRODUCT.md 1, "Claim request"): parameters, device
hash, windows, events that are never sent, and which account's token signs the call.

The real daemon and the simulated X on loopback ports; X's side is read from its request
log (`GET /_mock/requests`), the daemon's from the results API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from e2e import (
    ACCOUNT_A,
    ACCOUNT_B,
    ACCOUNT_C,
    ANDROID_PACKAGE,
    DAY,
    IOS_BUNDLE,
    MS,
    T0,
    World,
    add_account,
    add_app,
    add_postback,
    add_tracker,
    engagement,
    event,
    hashed_device_id,
    x_time,
)

IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
ADID = "8A4B2C1D-1234-4ABC-9DEF-0123456789AB"
ZERO_ID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        await w.close()


async def test_ios_claim_carries_every_parameter(world: World) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    # The windows sent are the largest of each kind among the trackers whose event-matching
    # event is this event, taken separately: click from one tracker, view from another.
    await add_tracker(api, app, "Week", post_engagement_window_days=7, post_view_window_days=1)
    await add_tracker(api, app, "Month", post_engagement_window_days=30, post_view_window_days=0)
    await add_tracker(api, app, "Views", post_engagement_window_days=7, post_view_window_days=7)
    # Another event's tracker does not count, nor does another app's.
    await add_tracker(
        api, app, "Levels", event_matching_event="level_up",
        post_engagement_window_days=30, post_view_window_days=30,
    )  # fmt: skip
    other = await add_app(api, name="Other Game")
    await add_tracker(api, other, "Other", post_engagement_window_days=30, post_view_window_days=30)
    await add_postback(api, app)

    (event_id,) = await world.send(
        event(
            app,
            idfa=IDFA,
            at=T0 + 123 * MS,
            origination_ip="203.0.113.7",
            event_data={"sum": 9.99, "currency": "USD", "quantity": 2},
        )
    )
    await world.claim(event_id)

    (request,) = await world.claim_requests()
    assert request["method"] == "POST"
    assert request["path"] == "/12/conversion_event"
    assert request["token"] == ACCOUNT_A.token
    assert request["params"] == {
        "app_id": IOS_BUNDLE,
        "os_type": "IOS",
        # Reference (our choice): the IDFA is upper-cased before hashing.
        "hashed_device_id": hashed_device_id(IDFA.upper()),
        "conversion_type": "PURCHASE",
        # usertime in UTC with its milliseconds.
        "conversion_time": x_time(T0 + 123 * MS),
        "click_window": "30",
        "view_through_window": "7",
        "device_ip_address": "203.0.113.7",
        "price_micro": "9990000",
        "price_currency": "USD",
        "number_items": "2",
    }


async def test_android_claim_hashes_the_lower_cased_adid(world: World) -> None:
    # The simulated X answers only the correctly hashed id of a device it saw engage.
    api = await world.start([engagement(ADID, T0 - DAY)])
    await add_account(api, ACCOUNT_A)
    app = await add_app(api, "android")
    await add_tracker(api, app, "Android")
    await add_postback(api, app)

    (event_id,) = await world.send(event(app, adid=ADID, device_ids={"android_id": "a1b2c3d4"}))
    assert (await world.claim(event_id))["outcome"] == "attributed"
    (attribution,) = await world.attributions()
    assert (attribution["device_id"], attribution["network"]) == (ADID.lower(), "x_android")

    (request,) = await world.claim_requests()
    params = request["params"]
    assert params["os_type"] == "ANDROID"
    assert params["app_id"] == ANDROID_PACKAGE
    assert params["hashed_device_id"] == hashed_device_id(ADID.lower())
    # Defaults of a tracker: 14-day engagement window, 0-day view window.
    assert (params["click_window"], params["view_through_window"]) == ("14", "0")


async def test_windows_are_left_out_without_a_tracker_for_the_event(world: World) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    await add_tracker(api, app, "Purchases", post_engagement_window_days=7)
    other = await add_app(api, name="Other Game")
    await add_tracker(api, other, "Other levels", event_matching_event="level_up")
    await add_postback(api, app, "level_up", conversion_type="LEVEL_ACHIEVED")

    (event_id,) = await world.send(event(app, idfa=IDFA, name="level_up"))
    await world.claim(event_id)

    (request,) = await world.claim_requests()
    params = request["params"]
    assert params["conversion_type"] == "LEVEL_ACHIEVED"
    assert "click_window" not in params
    assert "view_through_window" not in params


@pytest.mark.parametrize(
    ("platform", "unusable"),
    [
        ("ios", [{}, {"idfa": ZERO_ID}, {"idfa": "0" * 32}, {"idfv": IDFA}, {"adid": IDFA}]),
        ("android", [{}, {"adid": ZERO_ID}, {"android_id": "a1b2c3d4e5f60718"}, {"idfa": IDFA}]),
    ],
)
async def test_events_without_a_usable_device_id_are_skipped_and_never_sent(
    world: World, platform: str, unusable: list[dict[str, str]]
) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api, platform)
    await add_tracker(api, app, "Tracker")
    await add_postback(api, app)

    skipped = await world.send(*(event(app, device_ids=ids) for ids in unusable))
    for event_id in skipped:
        found = await world.wait(event_id)
        assert [(d["state"], d["reason"]) for d in found["deliveries"]] == [
            ("skipped", "no_device_id")
        ], found
        assert found["claims"] == []
    # A usable event sent after them is the only request X ever gets.
    (sent,) = await world.send(event(app, device_ids={"idfa": IDFA, "adid": IDFA}))
    await world.claim(sent)
    assert len(await world.claim_requests()) == 1


async def test_one_batch_mixing_events_with_and_without_a_device_id_plans_each_on_its_own(
    world: World,
) -> None:
    # The intake works out the deliveries once per kind of event in a batch: events of the
    # same app and name, with and without a usable id, interleaved in one body.
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api, "ios")
    await add_tracker(api, app, "Tracker")
    await add_postback(api, app)

    ids = await world.send(
        event(app, adid=IDFA),  # no IDFA on iOS
        event(app, idfa=IDFA),
        event(app, idfa="00000000-0000-0000-0000-000000000000"),
        event(app, idfa=IDFA.replace("A", "B")),
    )
    states = [[(d["state"], d["reason"]) for d in (await world.wait(i))["deliveries"]]
              for i in ids]  # fmt: skip
    skipped, sent = [("skipped", "no_device_id")], [("delivered", None)]
    assert states == [skipped, sent, skipped, sent], states
    assert len(await world.claim_requests()) == 2


async def test_postback_account_signs_without_fallback_and_waits_for_authentication(
    world: World,
) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    await world.revoke(ACCOUNT_B)
    account_b = await add_account(api, ACCOUNT_B)
    assert account_b["authenticated"] is False
    app = await add_app(api)
    await add_tracker(api, app, "Tracker")  # names account A, which is authenticated
    await add_postback(api, app, x_account_id=ACCOUNT_B.id)

    (event_id,) = await world.send(event(app, idfa=IDFA))
    held = await world.wait(event_id, {"held"})
    assert held["deliveries"][0]["reason"] == "account_unauthenticated"
    # No fallback to the tracker's account A: nothing reached X.
    assert await world.claim_requests() == []

    await world.restore(ACCOUNT_B)
    account_b = await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_B.id}/authenticate")
    assert account_b["authenticated"] is True
    await world.claim(event_id)
    (request,) = await world.claim_requests()
    assert request["token"] == ACCOUNT_B.token
    assert (await world.details(event_id))["deliveries"][0]["x_account_id"] == ACCOUNT_B.id


async def test_earliest_created_authenticated_tracker_account_signs(world: World) -> None:
    api = await world.start()
    # Created in the order C, A, B; C is named on no tracker of the app.
    for account in (ACCOUNT_C, ACCOUNT_A, ACCOUNT_B):
        await add_account(api, account)
    app = await add_app(api)
    await add_tracker(api, app, "B only", x_account_ids=[ACCOUNT_B.id])
    await add_tracker(api, app, "B and A", x_account_ids=[ACCOUNT_B.id, ACCOUNT_A.id])
    await add_postback(api, app)

    (first,) = await world.send(event(app, idfa=IDFA))
    await world.claim(first)

    # A loses its authentication: the next earliest authenticated named account signs.
    await world.revoke(ACCOUNT_A)
    account_a = await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_A.id}/authenticate")
    assert account_a["authenticated"] is False
    (second,) = await world.send(event(app, idfa=IDFA))
    await world.claim(second)

    tokens = [r["token"] for r in await world.claim_requests()]
    assert tokens == [ACCOUNT_A.token, ACCOUNT_B.token]


@pytest.mark.parametrize("release_by", ["new tracker", "edited postback"])
async def test_no_x_account_holds_until_the_rule_yields_an_authenticated_account(
    world: World, release_by: str
) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    await add_account(api, ACCOUNT_B)
    app = await add_app(api)
    # Account B is named on another app's tracker only: not a signer for this app.
    other = await add_app(api, name="Other Game")
    await add_tracker(api, other, "Other app", x_account_ids=[ACCOUNT_B.id])
    postback = await add_postback(api, app)

    (event_id,) = await world.send(event(app, idfa=IDFA))
    held = await world.wait(event_id, {"held"})
    assert held["deliveries"][0]["reason"] == "no_x_account"
    assert await world.claim_requests() == []

    if release_by == "new tracker":
        await add_tracker(api, app, "Tracker", x_account_ids=[ACCOUNT_A.id])
    else:
        path = f"/api/v1/postbacks/{postback['id']}"
        await api.ok("PATCH", path, json={"x_account_id": ACCOUNT_A.id})
    await world.claim(event_id)
    (request,) = await world.claim_requests()
    assert request["token"] == ACCOUNT_A.token


async def test_an_app_bundle_id_change_reaches_the_claims_of_what_took_it_by_default(
    world: World,
) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    following = await add_tracker(api, app, "Follows")
    pinned = await add_tracker(api, app, "Pinned", bundle_id="444000111")
    postback = await add_postback(api, app)
    level_up = await add_postback(api, app, "level_up", x_app_id="555000222")
    (before,) = await world.send(event(app, idfa=IDFA))
    await world.claim(before)

    await api.ok("PATCH", f"/api/v1/apps/{app['id']}", json={"bundle_id": "777000333"})

    # What took the app's bundle id follows it; what was given another value keeps it.
    tracker = await api.ok("GET", f"/api/v1/trackers/{following['id']}")
    assert tracker["bundle_id"] == "777000333"
    assert (await api.ok("GET", f"/api/v1/trackers/{pinned['id']}"))["bundle_id"] == "444000111"
    assert (await api.ok("GET", f"/api/v1/postbacks/{postback['id']}"))["x_app_id"] == "777000333"
    assert (await api.ok("GET", f"/api/v1/postbacks/{level_up['id']}"))["x_app_id"] == "555000222"
    # The next claim X receives carries the new app id, and so after a restart.
    (after,) = await world.send(event(app, idfa=IDFA))
    await world.claim(after)
    await world.restart()
    (restarted,) = await world.send(event(app, idfa=IDFA))
    await world.claim(restarted)
    sent = [r["params"]["app_id"] for r in await world.claim_requests()]
    assert sent == [IOS_BUNDLE, "777000333", "777000333"]
