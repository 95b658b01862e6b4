"""The lookup snapshot: tracker resolution, signing account and claim windows."""

from __future__ import annotations

from factories import account, app, postback, tracker
from postbackd.index import Index

APP_ID = "kogame0123456789abcdef"


def test_resolve_prefers_campaign_name_then_default_then_newest() -> None:
    first = tracker(id="kofirst000000000000000000000001", name="First")
    default = tracker(id="kodefault00000000000000000000001", name="Default", default=True)
    newest = tracker(id="konewest000000000000000000000001", name="Newest")
    trackers = Index(trackers=[first, default, newest]).trackers_of(APP_ID, "x_ios")
    assert trackers.resolve(f"Promo {first.id}") == first
    assert trackers.resolve("Promo without id") == default
    assert trackers.resolve(None) == default
    no_default = Index(trackers=[first, newest]).trackers_of(APP_ID, "x_ios")
    assert no_default.resolve("Promo") == newest
    assert Index().trackers_of(APP_ID, "x_ios").resolve("x") is None


def test_campaign_name_token_bounds_and_case() -> None:
    t = tracker(id="kopromo00000000000000000000abc")
    trackers = Index(trackers=[t]).trackers_of(APP_ID, "x_ios")
    assert trackers.in_campaign_name(f"Winter_{t.id.upper()}") == t
    assert trackers.in_campaign_name(f"{t.id}") == t
    assert trackers.in_campaign_name(f"({t.id})") == t
    assert trackers.in_campaign_name(f"{t.id}x") is None
    assert trackers.in_campaign_name(f"{t.id}-2") is None
    assert trackers.in_campaign_name(f"a-{t.id}") is None
    assert trackers.in_campaign_name(f"1{t.id}") is None


def test_tracker_of_other_app_or_network_is_not_matched() -> None:
    other = tracker(id="koother00000000000000000000001", app_id="koother")
    android = tracker(id="koandroid000000000000000000001", network="x_android")
    idx = Index(trackers=[other, android])
    assert idx.trackers_of(APP_ID, "x_ios").in_campaign_name(f"c {other.id}") is None
    assert idx.trackers_of(APP_ID, "x_ios").in_campaign_name(f"c {android.id}") is None


def test_signing_account_postback_account_without_fallback() -> None:
    own = account(id="own", authenticated=False)
    named = account(id="named")
    idx = Index(
        accounts=[own, named],
        trackers=[tracker(x_account_ids=("named",))],
    )
    assert idx.signing_account(postback(x_account_id="own")) == (None, "account_unauthenticated")
    assert idx.signing_account(postback()) == (named, None)


def test_signing_account_earliest_created_authenticated_on_trackers() -> None:
    early_unauth = account(id="a1", authenticated=False)
    early = account(id="a2")
    late = account(id="a3")
    unrelated = account(id="a0")
    idx = Index(
        accounts=[unrelated, early_unauth, early, late],
        trackers=[tracker(x_account_ids=("a3", "a1")), tracker(id="kot2", x_account_ids=("a2",))],
    )
    assert idx.signing_account(postback()) == (early, None)
    assert Index(accounts=[unrelated]).signing_account(postback()) == (None, "no_x_account")


def test_claim_windows_largest_among_matching_trackers() -> None:
    idx = Index(
        apps=[app()],
        trackers=[
            tracker(id="kot1", post_engagement_window_days=7, post_view_window_days=1),
            tracker(id="kot2", post_engagement_window_days=30, post_view_window_days=0),
            tracker(id="kot3", post_engagement_window_days=1, post_view_window_days=1,
                    event_matching_event="other"),
        ],
    )  # fmt: skip
    assert idx.claim_windows(APP_ID, "x_ios", "purchase") == (30, 1)
    assert idx.claim_windows(APP_ID, "x_ios", "level_up") is None
    assert idx.claim_windows(APP_ID, "x_android", "purchase") is None


def test_postbacks_of_event() -> None:
    p = postback()
    idx = Index(postbacks=[p])
    assert idx.postbacks_of(APP_ID, "purchase") == (p,)
    assert idx.postbacks_of(APP_ID, "other") == ()
