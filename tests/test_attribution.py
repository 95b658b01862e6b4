"""The claim answer rules of PRODUCT.md section 1, "Attribution of a claim answer"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postbackd.attribution import (
    LOSS_REASONS,
    OUTCOMES,
    ClaimDecision,
    Rejection,
    evaluate_claim,
)
from postbackd.index import AppNetworkTrackers
from postbackd.model import Tracker
from postbackd.x.answer import Candidate, ClaimAnswer, Source

CONVERSION = datetime(2026, 11, 28, 12, 0, 0, 123_000, tzinfo=UTC)
MS = timedelta(milliseconds=1)
DAY = timedelta(days=1)

ID_A = "kodemo-ios5f1c2a3b4d5e6f708192a3b4"
ID_B = "kodemo-ios00112233445566778899aabb"
ID_OTHER = "koother-android0123456789abcdef01234567"


def tracker(
    tracker_id: str = ID_A,
    *,
    app_id: str = "kodemo-game5f1c2a3b4d5e6f70",
    network: str = "x_ios",
    default: bool = False,
    click_days: int = 14,
    view_days: int = 0,
    event: str = "purchase",
) -> Tracker:
    return Tracker(
        id=tracker_id,
        app_id=app_id,
        segment_id="seg",
        name=f"tracker {tracker_id}",
        type="reengagement",
        network="x_ios" if network == "x_ios" else "x_android",
        default=default,
        x_account_ids=("18ce54d4x5t",),
        bundle_id="333903271",
        target_event="PURCHASE",
        post_engagement_window_days=click_days,
        post_view_window_days=view_days,
        event_matching_event=event,
        created_at="2026-11-01T00:00:00Z",
    )


def candidate(
    source: Source = "twitter",
    engagement_type: str | None = "CLICK",
    before: timedelta | None = DAY,
    *,
    campaign_name: str | None = None,
    granular: bool = True,
) -> Candidate:
    """A candidate engaged `before` the conversion (None: no engagement time)."""
    return Candidate(
        source=source,
        engagement_type=engagement_type,
        engagement_time=None if before is None else CONVERSION - before,
        campaign_name=campaign_name,
        account_id="18ce54d4x5t",
        granular_data_sharing_allowed=granular,
    )


def decide(
    twitter: Candidate | None = None,
    tpn: Candidate | None = None,
    *,
    trackers: tuple[Tracker, ...] = (),
    event_name: str = "purchase",
    conversion_time: datetime = CONVERSION,
) -> ClaimDecision:
    return evaluate_claim(
        ClaimAnswer(twitter=twitter, tpn=tpn),
        conversion_time=conversion_time,
        event_name=event_name,
        trackers=AppNetworkTrackers(trackers),
    )


def nodes(by_source: dict[Source, Candidate]) -> tuple[Candidate | None, Candidate | None]:
    return by_source.get("twitter"), by_source.get("tpn")


def reasons(decision: ClaimDecision) -> list[tuple[str, str]]:
    return [(r.source, r.reason) for r in decision.rejected]


# Rule 1: candidates


def test_no_candidate_is_not_claimed() -> None:
    decision = decide(trackers=(tracker(),))
    assert decision == ClaimDecision("not_claimed", None, None, ())
    assert not decision.attributed


@pytest.mark.parametrize("source", ["twitter", "tpn"])
def test_a_single_candidate_from_either_node_wins(source: Source) -> None:
    c = candidate(source)
    decision = decide(*nodes({source: c}), trackers=(tracker(),))
    assert decision.outcome == "attributed"
    assert decision.winner is c
    assert decision.rejected == ()


# Rule 6: attributed vs claimed


def test_the_event_matching_event_is_attributed() -> None:
    t = tracker(event="purchase")
    c = candidate()
    decision = decide(c, trackers=(t,), event_name="purchase")
    assert decision == ClaimDecision("attributed", c, t, ())
    assert decision.attributed


def test_another_event_is_only_claimed() -> None:
    t = tracker(event="purchase")
    c = candidate()
    decision = decide(c, trackers=(t,), event_name="level_up")
    assert decision == ClaimDecision("claimed", c, t, ())
    assert not decision.attributed


def test_event_matching_is_exact() -> None:
    assert decide(candidate(), trackers=(tracker(),), event_name="Purchase").outcome == "claimed"


def test_attributed_vs_claimed_follows_the_winners_tracker() -> None:
    a = tracker(ID_A, event="purchase")
    b = tracker(ID_B, event="level_up")
    # The tpn CLICK is later and wins; its tracker (B) decides, not the twitter one's (A).
    twitter = candidate("twitter", before=2 * DAY, campaign_name=f"promo {ID_A}")
    tpn = candidate("tpn", before=DAY, campaign_name=f"promo {ID_B}")
    decision = decide(twitter, tpn, trackers=(a, b), event_name="level_up")
    assert decision.outcome == "attributed"
    assert decision.winner is tpn
    assert decision.tracker is b


# Rule 2: data sharing


def test_data_sharing_refused_on_twitter_passes_to_a_valid_tpn() -> None:
    t = tracker()
    twitter = candidate("twitter", granular=False)
    tpn = candidate("tpn", before=2 * DAY)
    decision = decide(twitter, tpn, trackers=(t,))
    assert decision.outcome == "attributed"
    assert decision.winner is tpn
    assert decision.rejected == (
        Rejection(
            twitter, "rejected_data_sharing", ID_A, "is_granular_data_sharing_allowed is false"
        ),
    )


def test_data_sharing_refused_alone_is_no_attribution() -> None:
    decision = decide(candidate("twitter", granular=False), trackers=(tracker(),))
    assert decision.outcome == "rejected_data_sharing"
    assert decision.winner is None
    assert decision.tracker is None
    assert not decision.attributed


def test_data_sharing_refusal_wins_over_every_later_check() -> None:
    # Refused sharing is reported even when the candidate would also fail on the
    # tracker, the engagement type or the window.
    refused = candidate("twitter", "SWIPE", before=-DAY, granular=False)
    assert decide(refused).outcome == "rejected_data_sharing"
    assert decide(refused, trackers=(tracker(),)).outcome == "rejected_data_sharing"


# Rule 3: the tracker


def test_no_trackers_at_all_is_no_tracker() -> None:
    c = candidate()
    decision = decide(c, trackers=())
    assert decision.outcome == "no_tracker"
    assert decision.tracker is None
    assert decision.rejected == (
        Rejection(c, "no_tracker", None, "no reengagement tracker for this app and network"),
    )


def test_no_campaign_name_falls_to_the_default_tracker() -> None:
    old, default, newest = (
        tracker(ID_A),
        tracker(ID_B, default=True),
        tracker("kodemo-ios" + "c" * 24),
    )
    decision = decide(candidate(campaign_name=None), trackers=(old, default, newest))
    assert decision.tracker is default


def test_no_campaign_name_and_no_default_falls_to_the_newest_tracker() -> None:
    old, newest = tracker(ID_A), tracker(ID_B)
    decision = decide(candidate(campaign_name=None), trackers=(old, newest))
    assert decision.tracker is newest


def test_an_id_in_the_campaign_name_beats_the_default() -> None:
    named, default = tracker(ID_A), tracker(ID_B, default=True)
    decision = decide(candidate(campaign_name=f"Winter promo {ID_A}"), trackers=(named, default))
    assert decision.tracker is named


def test_the_upper_case_id_in_the_campaign_name_matches() -> None:
    named, newest = tracker(ID_A), tracker(ID_B)
    decision = decide(candidate(campaign_name=f"WINTER {ID_A.upper()}"), trackers=(named, newest))
    assert decision.tracker is named


@pytest.mark.parametrize(
    "name",
    [ID_A, f"{ID_A} promo", f"promo {ID_A}", f"promo_{ID_A}_v2", f"promo|{ID_A}|x", f"({ID_A})"],
)
def test_a_bounded_id_matches(name: str) -> None:
    named, newest = tracker(ID_A), tracker(ID_B)
    assert decide(candidate(campaign_name=name), trackers=(named, newest)).tracker is named


@pytest.mark.parametrize(
    "name",
    [f"{ID_A}x", f"{ID_A}7", f"{ID_A}-v2", f"x{ID_A}", f"7{ID_A}", f"promo-{ID_A}"],
)
def test_an_id_inside_a_longer_token_does_not_match(name: str) -> None:
    named, newest = tracker(ID_A), tracker(ID_B)
    assert decide(candidate(campaign_name=name), trackers=(named, newest)).tracker is newest


def test_the_id_of_another_app_or_network_is_ignored() -> None:
    other = tracker(ID_OTHER, app_id="koother-app0123456789abcdef", network="x_android")
    own_old, own_newest = tracker(ID_A), tracker(ID_B)
    name = f"promo {ID_OTHER}"
    # The other group does match the name...
    assert decide(candidate(campaign_name=name), trackers=(other,)).tracker is other
    # ...but this app and network fall back to their own newest tracker.
    decision = decide(candidate(campaign_name=name), trackers=(own_old, own_newest))
    assert decision.tracker is own_newest


def test_each_candidate_uses_its_own_tracker_window() -> None:
    short = tracker(ID_A, click_days=1)
    long = tracker(ID_B, click_days=30)
    # Both CLICKs are 7 days old: too old for A's 1-day window, fine for B's 30 days.
    twitter = candidate("twitter", before=7 * DAY, campaign_name=ID_A)
    tpn = candidate("tpn", before=7 * DAY, campaign_name=ID_B)
    decision = decide(twitter, tpn, trackers=(short, long))
    assert decision.winner is tpn
    assert decision.tracker is long
    assert decision.rejected[0].reason == "rejected_outside_window"
    assert decision.rejected[0].tracker_id == ID_A


# Rule 4: the window


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_a_click_exactly_at_the_window_end_counts(days: int) -> None:
    t = tracker(click_days=days)
    assert decide(candidate(before=days * DAY), trackers=(t,)).outcome == "attributed"


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_a_click_one_ms_past_the_window_is_outside(days: int) -> None:
    t = tracker(click_days=days)
    decision = decide(candidate(before=days * DAY + MS), trackers=(t,))
    assert decision.outcome == "rejected_outside_window"
    assert decision.winner is None


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_a_view_exactly_at_the_window_end_counts(days: int) -> None:
    t = tracker(click_days=30, view_days=days)
    assert decide(candidate(engagement_type="VIEW", before=days * DAY), trackers=(t,)).attributed


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_a_view_one_ms_past_the_window_is_outside(days: int) -> None:
    t = tracker(click_days=30, view_days=days)
    decision = decide(candidate(engagement_type="VIEW", before=days * DAY + MS), trackers=(t,))
    assert decision.outcome == "rejected_outside_window"


def test_views_use_the_post_view_window_not_the_click_window() -> None:
    t = tracker(click_days=14, view_days=1)
    assert decide(candidate(engagement_type="VIEW", before=2 * DAY), trackers=(t,)).outcome == (
        "rejected_outside_window"
    )
    assert decide(candidate(engagement_type="CLICK", before=2 * DAY), trackers=(t,)).attributed


@pytest.mark.parametrize("before", [timedelta(0), MS, timedelta(hours=1), DAY])
def test_a_zero_day_view_window_never_counts_a_view(before: timedelta) -> None:
    t = tracker(view_days=0)
    decision = decide(candidate(engagement_type="VIEW", before=before), trackers=(t,))
    assert decision.outcome == "rejected_outside_window"
    assert decision.winner is None


def test_a_click_at_the_conversion_time_counts() -> None:
    assert decide(candidate(before=timedelta(0)), trackers=(tracker(),)).attributed


@pytest.mark.parametrize("kind", ["CLICK", "VIEW"])
def test_an_engagement_after_the_conversion_is_invalid(kind: str) -> None:
    t = tracker(view_days=1)
    decision = decide(candidate(engagement_type=kind, before=-MS), trackers=(t,))
    assert decision.outcome == "rejected_invalid_time"
    assert decision.rejected[0].detail == f"{kind} 0 days 00:00:00.001 after conversion"


def test_times_are_compared_at_millisecond_precision() -> None:
    t = tracker(click_days=14)
    # The conversion carries microseconds; X's engagement time is whole milliseconds.
    conversion = CONVERSION + timedelta(microseconds=999)
    at_end = candidate(before=14 * DAY)
    assert decide(at_end, trackers=(t,), conversion_time=conversion).attributed
    # An engagement later within the conversion's own millisecond is not "after" it.
    same_ms = Candidate(
        source="twitter",
        engagement_type="CLICK",
        engagement_time=CONVERSION + timedelta(microseconds=500),
        campaign_name=None,
        account_id=None,
        granular_data_sharing_allowed=True,
    )
    assert decide(same_ms, trackers=(t,), conversion_time=conversion).attributed


# A malformed candidate (our addition: the window cannot be judged)


@pytest.mark.parametrize("kind", [None, "SWIPE", "click", ""])
def test_an_unknown_engagement_type_is_malformed(kind: str | None) -> None:
    decision = decide(candidate(engagement_type=kind), trackers=(tracker(),))
    assert decision.outcome == "rejected_malformed"
    assert decision.rejected[0].detail == f"engagement_type {kind!r} is neither CLICK nor VIEW"


def test_a_missing_engagement_time_is_malformed() -> None:
    decision = decide(candidate(before=None), trackers=(tracker(),))
    assert decision.outcome == "rejected_malformed"
    assert decision.rejected[0].detail == "engagement_time missing"


def test_a_malformed_twitter_candidate_passes_to_a_valid_tpn() -> None:
    tpn = candidate("tpn")
    decision = decide(candidate("twitter", "SWIPE"), tpn, trackers=(tracker(),))
    assert decision.winner is tpn


def test_a_long_engagement_type_is_cut_in_the_detail() -> None:
    decision = decide(candidate(engagement_type="X" * 500), trackers=(tracker(),))
    assert len(decision.rejected[0].detail) < 100


# Rule 5: ranking


@pytest.mark.parametrize(("click_source", "view_source"), [("twitter", "tpn"), ("tpn", "twitter")])
def test_a_click_beats_a_later_view(click_source: Source, view_source: Source) -> None:
    t = tracker(view_days=7)
    click = candidate(click_source, "CLICK", before=5 * DAY)
    view = candidate(view_source, "VIEW", before=timedelta(hours=1))
    decision = decide(*nodes({click_source: click, view_source: view}), trackers=(t,))
    assert decision.winner is click
    assert decision.rejected == (
        Rejection(
            view, "outranked", ID_A, f"VIEW outranked by {click_source} CLICK (CLICK before VIEW)"
        ),
    )


@pytest.mark.parametrize(("kind", "view_days"), [("CLICK", 0), ("VIEW", 7)])
def test_the_later_of_two_same_type_engagements_wins(kind: str, view_days: int) -> None:
    t = tracker(view_days=view_days)
    earlier = candidate("twitter", kind, before=3 * DAY)
    later = candidate("tpn", kind, before=DAY)
    decision = decide(earlier, later, trackers=(t,))
    assert decision.winner is later
    assert decision.rejected == (
        Rejection(earlier, "outranked", ID_A, f"{kind} outranked by tpn {kind} (2 days later)"),
    )
    # And the other way round, so the source order is not what decides.
    later_twitter = candidate("twitter", kind, before=DAY)
    earlier_tpn = candidate("tpn", kind, before=3 * DAY)
    assert decide(later_twitter, earlier_tpn, trackers=(t,)).winner is later_twitter


def test_a_tie_goes_to_twitter() -> None:
    twitter = candidate("twitter", before=DAY)
    tpn = candidate("tpn", before=DAY)
    decision = decide(twitter, tpn, trackers=(tracker(),))
    assert decision.winner is twitter
    assert reasons(decision) == [("tpn", "outranked")]
    assert (
        decision.rejected[0].detail == "CLICK outranked by twitter CLICK (same time, twitter first)"
    )


# Rule 6: every candidate rejected


def test_all_rejected_reports_the_first_candidates_reason() -> None:
    t = tracker(click_days=1)
    too_old = candidate("twitter", before=2 * DAY)
    refused = candidate("tpn", granular=False)
    decision = decide(too_old, refused, trackers=(t,))
    assert decision.outcome == "rejected_outside_window"
    assert (decision.winner, decision.tracker) == (None, None)
    assert reasons(decision) == [
        ("twitter", "rejected_outside_window"),
        ("tpn", "rejected_data_sharing"),
    ]
    # Swapped, the twitter reason still comes first.
    swapped = decide(
        candidate("twitter", granular=False), candidate("tpn", before=2 * DAY), trackers=(t,)
    )
    assert swapped.outcome == "rejected_data_sharing"


def test_a_lone_tpn_rejection_is_the_outcome() -> None:
    decision = decide(None, candidate("tpn", before=-DAY), trackers=(tracker(),))
    assert decision.outcome == "rejected_invalid_time"
    assert reasons(decision) == [("tpn", "rejected_invalid_time")]


def test_the_rejected_list_explains_each_candidate() -> None:
    a = tracker(ID_A, view_days=0)
    b = tracker(ID_B, click_days=7)
    view = candidate("twitter", "VIEW", before=2 * DAY, campaign_name=f"promo {ID_A}")
    click = candidate("tpn", "CLICK", before=7 * DAY + MS, campaign_name=f"promo {ID_B}")
    decision = decide(view, click, trackers=(a, b))
    assert decision.outcome == "rejected_outside_window"
    assert decision.rejected == (
        Rejection(
            view,
            "rejected_outside_window",
            ID_A,
            "VIEW 2 days before conversion, post-view window 0 days",
        ),
        Rejection(
            click,
            "rejected_outside_window",
            ID_B,
            "CLICK 7 days 00:00:00.001 before conversion, post-engagement window 7 days",
        ),
    )
    assert [r.source for r in decision.rejected] == ["twitter", "tpn"]


def test_the_value_sets_are_complete() -> None:
    assert set(OUTCOMES) == {
        "not_claimed",
        "attributed",
        "claimed",
        "rejected_data_sharing",
        "no_tracker",
        "rejected_malformed",
        "rejected_invalid_time",
        "rejected_outside_window",
    }
    assert set(LOSS_REASONS) == (set(OUTCOMES) - {"not_claimed", "attributed", "claimed"}) | {
        "outranked"
    }
