"""Every configuration rule of PRODUCT.md section 1, as plain function calls."""

from __future__ import annotations

from typing import Any

import pytest

from factories import account, app, campaign, postback, segment, tracker
from postbackd import rules
from postbackd.errors import Conflict, Invalid
from postbackd.index import Index
from postbackd.model import public

APP_ID = "kogame0123456789abcdef"


def index(**kw: Any) -> Index:
    base: dict[str, Any] = {
        "apps": [app()],
        "accounts": [account()],
        "campaigns": [campaign()],
        "segments": [segment()],
        "trackers": [],
        "postbacks": [],
    }
    return Index(**(base | kw))


def tracker_input(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app_id": APP_ID,
        "segment_id": "koseg0011223344",
        "name": "Reengage",
        "network": "x_ios",
        "x_account_ids": ["18ce54d4x5t"],
        "target_event": "PURCHASE",
        "event_matching_event": "purchase",
    }
    return base | kw


def postback_input(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app_id": APP_ID,
        "network": "x_ios",
        "event_name": "purchase",
        "conversion_type": "PURCHASE",
    }
    return base | kw


def refused(fn: Any, *args: Any, field: str, error: type[Exception] = Invalid) -> str:
    with pytest.raises(error) as caught:
        fn(*args)
    assert caught.value.field == field  # type: ignore[attr-defined]
    return str(caught.value)


# --- apps -------------------------------------------------------------------------------


def test_app_id_is_generated_in_kochava_form() -> None:
    made = rules.check_app({"name": "Demo Game", "platform": "ios"}, index(apps=[]), None)
    assert made.id.startswith("kodemo-game")
    assert len(made.id) == len("kodemo-game") + 16
    assert made.bundle_id is None


def test_app_id_given_must_be_kochava_form() -> None:
    refused(rules.check_app, {"id": "Game1", "name": "G", "platform": "ios"}, index(), None,
            field="id")  # fmt: skip
    made = rules.check_app({"id": "kogame-x1", "name": "G", "platform": "ios"}, index(), None)
    assert made.id == "kogame-x1"


def test_app_id_unique() -> None:
    refused(rules.check_app, {"id": APP_ID, "name": "G", "platform": "ios"}, index(), None,
            field="id", error=Conflict)  # fmt: skip


@pytest.mark.parametrize("platform", ["windows", "", 1, None, "IOS"])
def test_app_platform_values(platform: object) -> None:
    refused(rules.check_app, {"name": "G", "platform": platform}, index(), None, field="platform")


@pytest.mark.parametrize(
    ("platform", "bundle_id", "ok"),
    [
        ("ios", "333903271", True),
        ("ios", "com.example.game", False),
        ("android", "com.example.game", True),
        ("android", "333903271", False),
        ("android", "game", False),
    ],
)
def test_app_bundle_id_matches_platform(platform: str, bundle_id: str, ok: bool) -> None:
    data = {"name": "G", "platform": platform, "bundle_id": bundle_id}
    if ok:
        assert rules.check_app(data, index(apps=[]), None).bundle_id == bundle_id
    else:
        refused(rules.check_app, data, index(apps=[]), None, field="bundle_id")


def test_app_name_required_and_typed() -> None:
    refused(rules.check_app, {"platform": "ios"}, index(), None, field="name")
    refused(rules.check_app, {"name": 5, "platform": "ios"}, index(), None, field="name")
    refused(rules.check_app, {"name": "  ", "platform": "ios"}, index(), None, field="name")


# --- X accounts ---------------------------------------------------------------------------


def test_account_starts_unauthenticated_and_hides_secrets() -> None:
    made = rules.check_account(
        {"id": "abc123", "name": "A", "access_token": "t0ken", "access_token_secret": "s3cret"},
        index(),
        None,
    )
    assert made.authenticated is False
    assert made.ammp is False
    shown = public(made)
    assert "access_token" not in shown and "access_token_secret" not in shown
    assert "t0ken" not in repr(made) and "s3cret" not in repr(made)


def test_account_new_credentials_drop_authentication() -> None:
    existing = account()
    same = rules.check_account(
        {**public(existing), "access_token": "tok-1", "access_token_secret": "sec-1",
         "name": "Renamed"},
        index(), existing,
    )  # fmt: skip
    assert same.authenticated is True
    changed = rules.check_account(
        {**public(existing), "access_token": "tok-2", "access_token_secret": "sec-1"},
        index(),
        existing,
    )
    assert changed.authenticated is False


def test_account_secrets_required() -> None:
    refused(rules.check_account, {"id": "a1", "name": "A", "access_token": "t"}, index(), None,
            field="access_token_secret")  # fmt: skip


# --- campaigns and segments ---------------------------------------------------------------


def test_campaign_needs_existing_app_and_unique_name() -> None:
    refused(rules.check_campaign, {"app_id": "konope", "name": "C"}, index(), None, field="app_id")
    refused(rules.check_campaign, {"app_id": APP_ID, "name": "WINTER"}, index(), None,
            field="name", error=Conflict)  # fmt: skip


def test_segment_needs_existing_campaign() -> None:
    refused(rules.check_segment, {"campaign_id": "konope", "name": "S"}, index(), None,
            field="campaign_id")  # fmt: skip


# --- trackers -----------------------------------------------------------------------------


def test_tracker_defaults() -> None:
    made = rules.check_tracker(tracker_input(), index(), None)
    assert made.post_engagement_window_days == 14
    assert made.post_view_window_days == 0
    assert made.default is False
    assert made.type == "reengagement"
    # The bundle id is inherited from the app.
    assert made.bundle_id == "333903271"


def test_tracker_id_is_ko_slug_24_hex() -> None:
    made = rules.check_tracker(tracker_input(name="Winter Promo"), index(), None)
    assert made.id.startswith("kowinter-promo")
    tail = made.id.removeprefix("kowinter-promo")
    assert len(tail) == 24 and int(tail, 16) >= 0


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_tracker_engagement_window_allowed(days: int) -> None:
    made = rules.check_tracker(tracker_input(post_engagement_window_days=days), index(), None)
    assert made.post_engagement_window_days == days


@pytest.mark.parametrize("days", [0, 2, 15, 31, -1, "14", 14.0, True, None])
def test_tracker_engagement_window_refused(days: object) -> None:
    data = tracker_input(post_engagement_window_days=days)
    if days is None:  # null means "the default"
        assert rules.check_tracker(data, index(), None).post_engagement_window_days == 14
        return
    refused(rules.check_tracker, data, index(), None, field="post_engagement_window_days")


@pytest.mark.parametrize("days", [0, 1, 7, 14])
def test_tracker_view_window_allowed(days: int) -> None:
    made = rules.check_tracker(tracker_input(post_view_window_days=days), index(), None)
    assert made.post_view_window_days == days


@pytest.mark.parametrize("days", [2, 3, 60, -1, False])
def test_tracker_view_window_values_refused(days: object) -> None:
    refused(rules.check_tracker, tracker_input(post_view_window_days=days), index(), None,
            field="post_view_window_days")  # fmt: skip


def test_tracker_view_window_not_above_engagement_window() -> None:
    data = tracker_input(post_engagement_window_days=7, post_view_window_days=14)
    message = refused(rules.check_tracker, data, index(), None, field="post_view_window_days")
    assert "not be above" in message
    # Equal is fine.
    data = tracker_input(post_engagement_window_days=7, post_view_window_days=7)
    assert rules.check_tracker(data, index(), None).post_view_window_days == 7


def test_tracker_name_unique_within_app_case_insensitive() -> None:
    existing = tracker(name="Reengage")
    refused(rules.check_tracker, tracker_input(name="REENGAGE"), index(trackers=[existing]),
            None, field="name", error=Conflict)  # fmt: skip
    # The same tracker keeps its own name on update.
    again = rules.check_tracker(
        tracker_input(name="reengage"), index(trackers=[existing]), existing
    )
    assert again.id == existing.id


def test_tracker_name_may_repeat_in_another_app() -> None:
    other_app = app(id="koother0123456789abcd", name="Other")
    other = tracker(app_id=other_app.id, name="Reengage")
    made = rules.check_tracker(
        tracker_input(), index(apps=[app(), other_app], trackers=[other]), None
    )
    assert made.name == "Reengage"


def test_tracker_network_must_match_platform() -> None:
    message = refused(rules.check_tracker, tracker_input(network="x_android"), index(), None,
                      field="network")  # fmt: skip
    assert "platform" in message
    refused(rules.check_tracker, tracker_input(network="x_web"), index(), None, field="network")


def test_tracker_accounts_must_exist_and_be_authenticated() -> None:
    refused(rules.check_tracker, tracker_input(x_account_ids=["nobody"]), index(), None,
            field="x_account_ids[0]")  # fmt: skip
    unauth = account(id="unauth1", authenticated=False)
    message = refused(
        rules.check_tracker,
        tracker_input(x_account_ids=["18ce54d4x5t", "unauth1"]),
        index(accounts=[account(), unauth]),
        None,
        field="x_account_ids[1]",
    )
    assert "not authenticated" in message
    refused(rules.check_tracker, tracker_input(x_account_ids=[]), index(), None,
            field="x_account_ids")  # fmt: skip
    refused(rules.check_tracker, tracker_input(x_account_ids="18ce54d4x5t"), index(), None,
            field="x_account_ids")  # fmt: skip


def test_tracker_bundle_id_refused_when_neither_has_one() -> None:
    bare = app(bundle_id=None)
    refused(rules.check_tracker, tracker_input(), index(apps=[bare]), None, field="bundle_id")
    made = rules.check_tracker(tracker_input(bundle_id="444"), index(apps=[bare]), None)
    assert made.bundle_id == "444"


def test_tracker_target_event_is_an_x_conversion_type() -> None:
    refused(rules.check_tracker, tracker_input(target_event="BUY"), index(), None,
            field="target_event")  # fmt: skip
    made = rules.check_tracker(tracker_input(target_event="RE_ENGAGE"), index(), None)
    assert made.target_event == "RE_ENGAGE"


def test_tracker_segment_must_exist_and_belong_to_the_app() -> None:
    refused(rules.check_tracker, tracker_input(segment_id="nope"), index(), None,
            field="segment_id")  # fmt: skip
    other_app = app(id="koother0123456789abcd")
    foreign_campaign = campaign(id="koforeign", app_id=other_app.id)
    foreign_segment = segment(id="koforeignseg", campaign_id="koforeign")
    idx = index(
        apps=[app(), other_app],
        campaigns=[campaign(), foreign_campaign],
        segments=[segment(), foreign_segment],
    )
    refused(rules.check_tracker, tracker_input(segment_id="koforeignseg"), idx, None,
            field="segment_id")  # fmt: skip


def test_tracker_event_matching_event_required() -> None:
    data = tracker_input()
    del data["event_matching_event"]
    refused(rules.check_tracker, data, index(), None, field="event_matching_event")


def test_replaced_default_names_the_previous_default() -> None:
    old = tracker(default=True)
    new = rules.check_tracker(tracker_input(default=True), index(trackers=[old]), None)
    assert rules.replaced_default(new, index(trackers=[old])) == old
    # Another network's default is not replaced (there is none on iOS-only apps here).
    not_default = rules.check_tracker(tracker_input(), index(trackers=[old]), None)
    assert rules.replaced_default(not_default, index(trackers=[old])) is None
    # Re-saving the default itself replaces nothing.
    assert rules.replaced_default(old, index(trackers=[old])) is None


# --- postbacks ----------------------------------------------------------------------------


def test_postback_defaults() -> None:
    made = rules.check_postback(postback_input(), index(), None)
    assert made.delivery_delay_s == 0
    assert made.retry_attempts == 3
    assert made.delivery_method == "all"
    assert made.enabled is True
    assert made.x_app_id == "333903271"  # the app's bundle id
    assert made.x_account_id is None


@pytest.mark.parametrize(("value", "ok"), [(0, True), (600, True), (601, False), (-1, False),
                                           (1.5, False), ("10", False)])  # fmt: skip
def test_postback_delay_range(value: object, ok: bool) -> None:
    data = postback_input(delivery_delay_s=value)
    if ok:
        assert rules.check_postback(data, index(), None).delivery_delay_s == value
    else:
        refused(rules.check_postback, data, index(), None, field="delivery_delay_s")


@pytest.mark.parametrize(("value", "ok"), [(0, True), (10, True), (11, False), (-1, False),
                                           (True, False)])  # fmt: skip
def test_postback_retry_range(value: object, ok: bool) -> None:
    data = postback_input(retry_attempts=value)
    if ok:
        assert rules.check_postback(data, index(), None).retry_attempts == value
    else:
        refused(rules.check_postback, data, index(), None, field="retry_attempts")


def test_postback_delivery_method_values() -> None:
    made = rules.check_postback(postback_input(delivery_method="network_only"), index(), None)
    assert made.delivery_method == "network_only"
    message = refused(rules.check_postback, postback_input(delivery_method="network_and_agency"),
                      index(), None, field="delivery_method")  # fmt: skip
    assert "agenc" in message
    refused(rules.check_postback, postback_input(delivery_method="some"), index(), None,
            field="delivery_method")  # fmt: skip


def test_postback_one_per_app_network_event() -> None:
    existing = postback()
    refused(rules.check_postback, postback_input(), index(postbacks=[existing]), None,
            field="event_name", error=Conflict)  # fmt: skip
    other_event = rules.check_postback(
        postback_input(event_name="level_up"), index(postbacks=[existing]), None
    )
    assert other_event.event_name == "level_up"


def test_postback_network_must_match_platform() -> None:
    refused(rules.check_postback, postback_input(network="x_android"), index(), None,
            field="network")  # fmt: skip


def test_postback_conversion_type_from_x_list() -> None:
    refused(rules.check_postback, postback_input(conversion_type="purchase"), index(), None,
            field="conversion_type")  # fmt: skip


def test_postback_x_account_must_exist() -> None:
    refused(rules.check_postback, postback_input(x_account_id="ghost"), index(), None,
            field="x_account_id")  # fmt: skip
    made = rules.check_postback(postback_input(x_account_id="18ce54d4x5t"), index(), None)
    assert made.x_account_id == "18ce54d4x5t"


def test_postback_x_app_id_inherited_or_required() -> None:
    bare = app(bundle_id=None)
    refused(rules.check_postback, postback_input(), index(apps=[bare]), None, field="x_app_id")
    refused(rules.check_postback, postback_input(x_app_id="com.example"), index(), None,
            field="x_app_id")  # fmt: skip


def test_postback_unknown_app() -> None:
    refused(rules.check_postback, postback_input(app_id="konope"), index(), None, field="app_id")
