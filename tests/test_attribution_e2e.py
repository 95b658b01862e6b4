"""Re-engagement attribution end to end (PRODUCT.md 1, "Attribution of a claim answer"):
the simulated X answers from a scripted engagement file, the real daemon judges the answer,
and the results API shows the claim, its rejected candidates, the attributions, the
device's latest attribution (`network_only`) and the tracker report.

Every conversion happens at `T0` (which has milliseconds) unless a test says otherwise, so
each engagement time below reads as "how long before the conversion".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from e2e import (
    ACCOUNT_A,
    DAY,
    HOUR,
    MS,
    T0,
    World,
    add_account,
    add_app,
    add_postback,
    add_tracker,
    engagement,
    event,
    idfa,
    x_time,
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        await w.close()


async def one_tracker(
    world: World, script: Sequence[Mapping[str, object]] = (), **tracker: object
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Account A, an iOS app, its tracker "Main" and a postback for `purchase`."""
    api = await world.start(script)
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    main = await add_tracker(api, app, "Main", **tracker)
    await add_postback(api, app)
    return app, main


def reasons(claim: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(r["source"], r["reason"]) for r in claim["rejected"]]


async def outcome_of(world: World, app: Mapping[str, Any], device: str, **kw: Any) -> str:
    (event_id,) = await world.send(event(app, idfa=device, **kw))
    return str((await world.claim(event_id))["outcome"])


# --- outcomes -------------------------------------------------------------------------------


async def test_no_candidate_is_not_claimed(world: World) -> None:
    app, _ = await one_tracker(world, [engagement(idfa(1), T0 - DAY)])

    (event_id,) = await world.send(event(app, idfa=idfa(2)))
    claim = await world.claim(event_id)

    assert claim["outcome"] == "not_claimed"
    assert (claim["tracker_id"], claim["source"], claim["rejected"]) == (None, None, [])
    assert await world.attributions() == []


async def test_event_matching_event_is_attributed_another_event_only_claimed(
    world: World,
) -> None:
    device = idfa(1)
    app, main = await one_tracker(world, [engagement(device, T0 - DAY, campaign="Spring")])
    await add_postback(world.api, app, "level_up", conversion_type="LEVEL_ACHIEVED")

    (purchase,) = await world.send(event(app, idfa=device))
    claim = await world.claim(purchase)
    assert {k: claim[k] for k in (
        "outcome", "tracker_id", "source", "engagement_type", "engagement_time", "campaign_name"
    )} == {
        "outcome": "attributed", "tracker_id": main["id"], "source": "twitter",
        "engagement_type": "CLICK", "engagement_time": x_time(T0 - DAY), "campaign_name": "Spring",
    }  # fmt: skip
    assert claim["rejected"] == []

    (level_up,) = await world.send(event(app, idfa=device, name="level_up", at=T0 + HOUR))
    claim = await world.claim(level_up)
    assert (claim["outcome"], claim["tracker_id"]) == ("claimed", main["id"])

    # Only the event-matching event earned a re-engagement attribution.
    (attribution,) = await world.attributions(app_id=app["id"])
    assert {k: attribution[k] for k in (
        "device_id", "network", "tracker_id", "engagement_type", "engagement_time", "event_id"
    )} == {
        "device_id": device.upper(), "network": "x_ios", "tracker_id": main["id"],
        "engagement_type": "CLICK", "engagement_time": x_time(T0 - DAY), "event_id": purchase,
    }  # fmt: skip


async def test_click_at_the_window_end_counts_one_ms_later_does_not(world: World) -> None:
    at_end, past_end = idfa(1), idfa(2)
    app, main = await one_tracker(
        world,
        [engagement(at_end, T0 - 7 * DAY), engagement(past_end, T0 - 7 * DAY - MS)],
        post_engagement_window_days=7,
    )

    assert await outcome_of(world, app, at_end) == "attributed"
    (event_id,) = await world.send(event(app, idfa=past_end))
    claim = await world.claim(event_id)
    assert claim["outcome"] == "rejected_outside_window"
    assert reasons(claim) == [("twitter", "rejected_outside_window")]
    assert claim["rejected"][0]["tracker_id"] == main["id"]
    assert claim["tracker_id"] == main["id"]
    assert [a["device_id"] for a in await world.attributions()] == [at_end.upper()]


async def test_views_count_only_within_a_view_window(world: World) -> None:
    at_end, now, past_end = idfa(1), idfa(2), idfa(3)
    api = await world.start(
        [
            engagement(at_end, T0 - DAY, kind="VIEW"),
            engagement(now, T0, kind="VIEW"),
            engagement(past_end, T0 - DAY - MS, kind="VIEW"),
        ]
    )
    await add_account(api, ACCOUNT_A)
    no_views = await add_app(api, name="No views")
    await add_tracker(api, no_views, "Zero", post_view_window_days=0)
    one_day = await add_app(api, name="One day")
    await add_tracker(api, one_day, "One", post_view_window_days=1)
    for app in (no_views, one_day):
        await add_postback(api, app)

    # A 0-day post-view window: views never count, not even one at the conversion time.
    assert await outcome_of(world, no_views, at_end) == "rejected_outside_window"
    assert await outcome_of(world, no_views, now) == "rejected_outside_window"
    assert await outcome_of(world, one_day, at_end) == "attributed"
    assert await outcome_of(world, one_day, now) == "attributed"
    assert await outcome_of(world, one_day, past_end) == "rejected_outside_window"
    engagement_types = {a["engagement_type"] for a in await world.attributions()}
    assert engagement_types == {"VIEW"}


async def test_engagement_after_the_conversion_is_an_invalid_time(world: World) -> None:
    device = idfa(1)
    app, _ = await one_tracker(world, [engagement(device, T0 + MS)])

    (event_id,) = await world.send(event(app, idfa=device))
    claim = await world.claim(event_id)
    assert claim["outcome"] == "rejected_invalid_time"
    assert reasons(claim) == [("twitter", "rejected_invalid_time")]
    assert await world.attributions() == []


async def test_refused_data_sharing_passes_to_tpn_or_rejects_the_claim(world: World) -> None:
    both, twitter_only = idfa(1), idfa(2)
    app, main = await one_tracker(
        world,
        [
            engagement(both, T0 - HOUR, granular=False),
            engagement(both, T0 - 2 * HOUR, node="tpn"),
            engagement(twitter_only, T0 - HOUR, granular=False),
        ],
    )

    (event_id,) = await world.send(event(app, idfa=both))
    claim = await world.claim(event_id)
    assert (claim["outcome"], claim["source"], claim["tracker_id"]) == (
        "attributed", "tpn", main["id"]
    )  # fmt: skip
    assert claim["engagement_time"] == x_time(T0 - 2 * HOUR)
    assert reasons(claim) == [("twitter", "rejected_data_sharing")]

    (event_id,) = await world.send(event(app, idfa=twitter_only))
    claim = await world.claim(event_id)
    assert (claim["outcome"], claim["source"]) == ("rejected_data_sharing", None)
    assert reasons(claim) == [("twitter", "rejected_data_sharing")]
    assert [a["device_id"] for a in await world.attributions()] == [both.upper()]


async def test_click_ranks_before_a_later_view_then_the_latest_engagement(world: World) -> None:
    view_later, both_clicks, click_first = idfa(1), idfa(2), idfa(3)
    app, _ = await one_tracker(
        world,
        [
            engagement(view_later, T0 - HOUR, kind="VIEW"),
            engagement(view_later, T0 - 2 * DAY, node="tpn"),
            engagement(both_clicks, T0 - 3 * DAY),
            engagement(both_clicks, T0 - DAY, node="tpn"),
            engagement(click_first, T0 - DAY),
            engagement(click_first, T0 - HOUR, node="tpn", kind="VIEW"),
        ],
        post_engagement_window_days=7,
        post_view_window_days=7,
    )

    expected = {
        view_later: ("tpn", "CLICK", T0 - 2 * DAY, [("twitter", "outranked")]),
        both_clicks: ("tpn", "CLICK", T0 - DAY, [("twitter", "outranked")]),
        click_first: ("twitter", "CLICK", T0 - DAY, [("tpn", "outranked")]),
    }
    for device, (source, kind, at, rejected) in expected.items():
        (event_id,) = await world.send(event(app, idfa=device))
        claim = await world.claim(event_id)
        assert claim["outcome"] == "attributed", (device, claim)
        assert (claim["source"], claim["engagement_type"]) == (source, kind), (device, claim)
        assert claim["engagement_time"] == x_time(at), (device, claim)
        assert reasons(claim) == rejected, (device, claim)


async def test_every_rejected_candidate_is_recorded_with_its_reason(world: World) -> None:
    too_late, view_and_private = idfa(1), idfa(2)
    app, main = await one_tracker(
        world,
        [
            engagement(too_late, T0 + MS),
            engagement(too_late, T0 - 8 * DAY, node="tpn"),
            engagement(view_and_private, T0 - HOUR, kind="VIEW"),
            engagement(view_and_private, T0 - HOUR, node="tpn", granular=False),
        ],
        post_engagement_window_days=7,
        post_view_window_days=0,
    )

    # With every candidate rejected, the outcome is the first one's reason (twitter first).
    (event_id,) = await world.send(event(app, idfa=too_late))
    claim = await world.claim(event_id)
    assert claim["outcome"] == "rejected_invalid_time"
    assert reasons(claim) == [("twitter", "rejected_invalid_time"),
                              ("tpn", "rejected_outside_window")]  # fmt: skip
    assert [r["tracker_id"] for r in claim["rejected"]] == [main["id"], main["id"]]
    assert all(r["detail"] for r in claim["rejected"])

    (event_id,) = await world.send(event(app, idfa=view_and_private))
    claim = await world.claim(event_id)
    assert claim["outcome"] == "rejected_outside_window"
    assert reasons(claim) == [("twitter", "rejected_outside_window"),
                              ("tpn", "rejected_data_sharing")]  # fmt: skip
    assert [r["engagement_type"] for r in claim["rejected"]] == ["VIEW", "CLICK"]
    assert await world.attributions() == []


# --- which tracker --------------------------------------------------------------------------


async def test_tracker_named_in_the_campaign_else_the_default(world: World) -> None:
    api = await world.start()
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    default = await add_tracker(api, app, "Default", default=True)
    named = await add_tracker(api, app, "Named")
    await add_tracker(api, app, "Newest")
    other_app = await add_app(api, name="Other Game")
    foreign = await add_tracker(api, other_app, "Foreign")
    android = await add_app(api, "android", name="Android Game")
    droid = await add_tracker(api, android, "Droid")
    await add_postback(api, app)

    cases: list[tuple[str | None, dict[str, Any]]] = [
        (None, default),
        (f"Spring {named['id']} promo", named),
        (f"SPRING {named['id'].upper()}", named),  # case-insensitive
        (f"promo_{named['id']}", named),  # "_" is outside [a-z0-9-]: a boundary
        (named["id"], named),  # the whole name
        (f"promo-{named['id']}", default),  # "-" is inside: not a boundary
        (f"{named['id']}0", default),
        (f"{named['id']}-v2", default),
        (f"promo {foreign['id']}", default),  # another app's tracker
        (f"promo {droid['id']}", default),  # the other network's tracker
    ]
    devices = [idfa(n) for n in range(1, len(cases) + 1)]
    await world.restart(
        [engagement(d, T0 - DAY, campaign=c) for d, (c, _) in zip(devices, cases, strict=True)]
    )

    for device, (campaign, tracker) in zip(devices, cases, strict=True):
        (event_id,) = await world.send(event(app, idfa=device))
        claim = await world.claim(event_id)
        assert (claim["outcome"], claim["tracker_id"]) == ("attributed", tracker["id"]), (
            campaign,
            claim,
        )


async def test_deleted_tracker_is_no_longer_matched(world: World) -> None:
    device = idfa(1)
    app, older = await one_tracker(world)
    newest = await add_tracker(world.api, app, "Newest")
    api = await world.restart([engagement(device, T0 - DAY, campaign=f"promo {older['id']}")])

    (first,) = await world.send(event(app, idfa=device))
    assert (await world.claim(first))["tracker_id"] == older["id"]
    await api.ok("DELETE", f"/api/v1/trackers/{older['id']}", 204)
    (second,) = await world.send(event(app, idfa=device, at=T0 + HOUR))
    assert (await world.claim(second))["tracker_id"] == newest["id"]


async def test_default_and_newest_tracker_changes_act_on_the_next_event(world: World) -> None:
    device = idfa(1)
    app, first = await one_tracker(world, [engagement(device, T0 - DAY, campaign=None)])
    api = world.api
    second = await add_tracker(api, app, "Second")

    async def tracker_of_next_event(hours: int) -> str:
        (event_id,) = await world.send(event(app, idfa=device, at=T0 + hours * HOUR))
        claim = await world.claim(event_id)
        assert claim["outcome"] == "attributed", claim
        return str(claim["tracker_id"])

    # No default: the most recently created tracker.
    assert await tracker_of_next_event(0) == second["id"]
    third = await add_tracker(api, app, "Third", default=True)
    assert await tracker_of_next_event(1) == third["id"]
    # A newer tracker does not beat the default.
    await add_tracker(api, app, "Fourth")
    assert await tracker_of_next_event(2) == third["id"]
    made_default = await api.ok("PATCH", f"/api/v1/trackers/{first['id']}", json={"default": True})
    assert made_default["replaced_default"]["id"] == third["id"]
    assert await tracker_of_next_event(3) == first["id"]


async def test_without_any_tracker_the_event_is_sent_and_the_claim_is_no_tracker(
    world: World,
) -> None:
    device = idfa(1)
    api = await world.start([engagement(device, T0 - DAY)])
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    await add_postback(api, app, x_account_id=ACCOUNT_A.id)

    (event_id,) = await world.send(event(app, idfa=device))
    claim = await world.claim(event_id)
    assert (claim["outcome"], claim["tracker_id"], claim["source"]) == ("no_tracker", None, None)
    assert reasons(claim) == [("twitter", "no_tracker")]
    assert len(await world.claim_requests()) == 1
    assert await world.attributions() == []


# --- device state ---------------------------------------------------------------------------


async def test_network_only_follows_the_devices_latest_attribution_across_a_restart(
    world: World,
) -> None:
    attributed, claimed_only, unknown = idfa(1), idfa(2), idfa(3)
    app, _ = await one_tracker(
        world, [engagement(attributed, T0 - DAY), engagement(claimed_only, T0 - DAY)]
    )
    api = world.api
    await add_postback(
        api, app, "level_up", conversion_type="LEVEL_ACHIEVED", delivery_method="network_only"
    )
    await add_postback(api, app, "tutorial", conversion_type="TUTORIAL_COMPLETE")
    hours = iter(range(1, 100))

    async def level_up(device: str) -> tuple[str, str | None]:
        (event_id,) = await world.send(
            event(app, idfa=device, name="level_up", at=T0 + next(hours) * HOUR)
        )
        (delivery,) = (await world.wait(event_id))["deliveries"]
        return delivery["state"], delivery["reason"]

    skipped = ("skipped", "not_attributed_to_network")
    assert await level_up(attributed) == skipped
    (tutorial,) = await world.send(event(app, idfa=claimed_only, name="tutorial"))
    assert (await world.claim(tutorial))["outcome"] == "claimed"
    (purchase,) = await world.send(event(app, idfa=attributed, at=T0 + next(hours) * HOUR))
    assert (await world.claim(purchase))["outcome"] == "attributed"

    assert await level_up(attributed) == ("delivered", None)
    assert await level_up(claimed_only) == skipped  # a claim is not an attribution
    assert await level_up(unknown) == skipped

    await world.restart()
    assert await level_up(attributed) == ("delivered", None)
    assert await level_up(unknown) == skipped
    sent = [r["params"]["conversion_type"] for r in await world.claim_requests()]
    assert sent.count("LEVEL_ACHIEVED") == 2


async def test_network_only_in_one_batch_follows_each_devices_own_attribution(
    world: World,
) -> None:
    # The intake works out the deliveries once per kind of event in a batch; for a
    # network_only postback the kind includes the device's latest network, so attributed
    # and unknown devices interleaved in one body are each judged on their own.
    attributed, unknown = idfa(1), idfa(2)
    app, _ = await one_tracker(world, [engagement(attributed, T0 - DAY)])
    await add_postback(
        world.api, app, "level_up", conversion_type="LEVEL_ACHIEVED", delivery_method="network_only"
    )
    (purchase,) = await world.send(event(app, idfa=attributed))
    assert (await world.claim(purchase))["outcome"] == "attributed"

    devices = [unknown, attributed, unknown, attributed]
    ids = await world.send(
        *(event(app, idfa=d, name="level_up", at=T0 + n * HOUR) for n, d in enumerate(devices, 1))
    )
    states = [[(d["state"], d["reason"]) for d in (await world.wait(i))["deliveries"]]
              for i in ids]  # fmt: skip
    skipped, sent = [("skipped", "not_attributed_to_network")], [("delivered", None)]
    assert states == [skipped, sent, skipped, sent], states
    sent_types = [r["params"]["conversion_type"] for r in await world.claim_requests()]
    assert sent_types.count("LEVEL_ACHIEVED") == 2


async def test_network_only_forgets_an_attribution_past_its_retention(world: World) -> None:
    # PRODUCT.md 2, "Retention": device state goes attribution_retention_days after it was
    # attributed; until a restart the daemon holds the device in memory, and must not count
    # an attribution the store no longer keeps (or is about to delete).
    device = idfa(1)
    world.settings = {"attribution_retention_s": 2.0}
    app, _ = await one_tracker(world, [engagement(device, T0 - DAY)])
    await add_postback(
        world.api, app, "level_up", conversion_type="LEVEL_ACHIEVED", delivery_method="network_only"
    )
    (purchase,) = await world.send(event(app, idfa=device))
    assert (await world.claim(purchase))["outcome"] == "attributed"
    await asyncio.sleep(2.5)  # the attribution is now older than its retention

    (level_up,) = await world.send(event(app, idfa=device, name="level_up", at=T0 + HOUR))
    (delivery,) = (await world.wait(level_up))["deliveries"]
    assert (delivery["state"], delivery["reason"]) == ("skipped", "not_attributed_to_network")
    sent = [r["params"]["conversion_type"] for r in await world.claim_requests()]
    assert "LEVEL_ACHIEVED" not in sent


# --- reports --------------------------------------------------------------------------------


async def test_tracker_report_counts_claims_and_attributions(world: World) -> None:
    click_1, click_2, view, old, private, nobody = (idfa(n) for n in range(1, 7))
    api = await world.start(
        [
            engagement(click_1, T0 - DAY),
            engagement(click_2, T0 - 2 * DAY),
            engagement(view, T0 - HOUR, kind="VIEW"),
            engagement(old, T0 - 8 * DAY),
            engagement(private, T0 - HOUR, granular=False),
        ]
    )
    await add_account(api, ACCOUNT_A)
    app = await add_app(api)
    main = await add_tracker(
        api, app, "Main", post_engagement_window_days=7, post_view_window_days=1
    )
    await add_postback(api, app)
    await add_postback(api, app, "level_up", conversion_type="LEVEL_ACHIEVED")
    other_app = await add_app(api, name="Other Game")
    other = await add_tracker(api, other_app, "Other")
    await add_postback(api, other_app)

    sent = [
        event(app, idfa=click_1),
        event(app, idfa=click_2),
        event(app, idfa=view),
        event(app, idfa=click_1, name="level_up", at=T0 + HOUR),
        event(app, idfa=old),
        event(app, idfa=private),
        event(app, idfa=nobody),
        event(other_app, idfa=click_1),
    ]
    outcomes = [(await world.claim(i))["outcome"] for i in await world.send(*sent)]
    assert outcomes == [
        "attributed", "attributed", "attributed", "claimed",
        "rejected_outside_window", "rejected_data_sharing", "not_claimed", "attributed",
    ]  # fmt: skip

    report = await api.ok("GET", "/api/v1/reports/trackers", params={"app_id": app["id"]})
    rows = {row["tracker_id"]: row for row in report["items"]}
    assert report["count"] == len(rows) == 2
    assert rows[main["id"]] == {
        "tracker_id": main["id"],
        "tracker_name": "Main",
        "claims": {
            "attributed": 3, "claimed": 1,
            "rejected_outside_window": 1, "rejected_data_sharing": 1,
        },
        "attributions": {"CLICK": 2, "VIEW": 1},
        "x_claimed": 6,
        "accepted": 4,
        "not_accepted": {"rejected_outside_window": 1, "rejected_data_sharing": 1},
    }  # fmt: skip
    # X claimed nothing: no candidate, so no tracker to count it against.
    assert rows[None] == {
        "tracker_id": None,
        "tracker_name": None,
        "claims": {"not_claimed": 1},
        "attributions": {},
        "x_claimed": 0,
        "accepted": 0,
        "not_accepted": {},
    }

    everything = await api.ok("GET", "/api/v1/reports/trackers")
    other_row = next(r for r in everything["items"] if r["tracker_id"] == other["id"])
    assert (other_row["claims"], other_row["attributions"]) == ({"attributed": 1}, {"CLICK": 1})
    assert len(await world.attributions(tracker_id=main["id"])) == 3
    assert len(await world.attributions(app_id=other_app["id"])) == 1
