"""Property tests (hypothesis) of the pure parts where one wrong edge costs money: the
attribution rules, the ingest parser, the rate budget's header corrections, the retry
schedule and the list cursors. Each runs a bounded, derandomized number of examples, so the
suite stays fast and CI sees the same cases every run."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import factories
from postbackd.api.paging import decode_cursor, encode_cursor
from postbackd.attribution import CLICK, VIEW, evaluate_claim
from postbackd.delivery.ratelimit import AccountBudget
from postbackd.delivery.retry import RetryPolicy
from postbackd.errors import ApiError, BadRequest, Invalid
from postbackd.event import Event, parse_event, split_body
from postbackd.index import AppNetworkTrackers
from postbackd.x.answer import Candidate, ClaimAnswer

bounded = settings(max_examples=300, derandomize=True, database=None, deadline=None)

DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 2026-11-28T10:00:00Z plus any microseconds: the rules judge at millisecond precision.
CONVERSION_MS = 1_795_860_000_000


def at_ms(ms: int, micros: int = 0) -> datetime:
    return EPOCH + timedelta(milliseconds=ms, microseconds=micros)


def candidate(
    source: str = "twitter",
    kind: str | None = CLICK,
    engagement_ms: int | None = CONVERSION_MS,
    *,
    sharing: bool = True,
) -> Candidate:
    return Candidate(
        source=source,  # type: ignore[arg-type]
        engagement_type=kind,
        engagement_time=None if engagement_ms is None else at_ms(engagement_ms),
        campaign_name=None,
        account_id=None,
        granular_data_sharing_allowed=sharing,
    )


def trackers(click_days: int, view_days: int) -> AppNetworkTrackers:
    return AppNetworkTrackers(
        (
            factories.tracker(
                post_engagement_window_days=click_days, post_view_window_days=view_days
            ),
        )
    )


# Distances from the engagement to the conversion, dense around every window's edges.
EDGES = [d * DAY_MS + e for d in (0, 1, 7, 14, 30) for e in (-2, -1, 0, 1, 2)]
distances = st.sampled_from(EDGES) | st.integers(-40 * DAY_MS, 40 * DAY_MS)


@bounded
@given(
    click_days=st.sampled_from([1, 7, 14, 30]),
    view_days=st.sampled_from([0, 1, 7, 14, 30]),
    kind=st.sampled_from([CLICK, VIEW]),
    distance_ms=distances,
    micros=st.integers(0, 999),
)
def test_window_edges_at_millisecond_precision(
    click_days: int, view_days: int, kind: str, distance_ms: int, micros: int
) -> None:
    window_ms = (click_days if kind == CLICK else view_days) * DAY_MS
    decision = evaluate_claim(
        ClaimAnswer(candidate(kind=kind, engagement_ms=CONVERSION_MS - distance_ms), None),
        # Microseconds of the conversion never move an engagement across an edge.
        conversion_time=at_ms(CONVERSION_MS, micros),
        event_name="purchase",
        trackers=trackers(click_days, view_days),
    )
    if distance_ms < 0:
        assert decision.outcome == "rejected_invalid_time"
    elif window_ms > 0 and distance_ms <= window_ms:  # both ends included; 0 days: never
        assert decision.outcome == "attributed"
        assert decision.winner is not None and decision.rejected == ()
    else:
        assert decision.outcome == "rejected_outside_window"
    if decision.outcome != "attributed":
        assert [r.reason for r in decision.rejected] == [decision.outcome]
    # The engine passes the event's epoch milliseconds: the same decision.
    assert decision == evaluate_claim(
        ClaimAnswer(candidate(kind=kind, engagement_ms=CONVERSION_MS - distance_ms), None),
        conversion_time=CONVERSION_MS,
        event_name="purchase",
        trackers=trackers(click_days, view_days),
    )


def verdict(c: Candidate, click_days: int, view_days: int) -> str | int:
    """The rules of PRODUCT.md 1 for one candidate, written out plainly: its reason, or its
    engagement time in ms when it counts."""
    if not c.granular_data_sharing_allowed:
        return "rejected_data_sharing"
    if c.engagement_type not in (CLICK, VIEW) or c.engagement_time is None:
        return "rejected_malformed"
    engagement_ms = (c.engagement_time - EPOCH) // timedelta(milliseconds=1)
    delta = CONVERSION_MS - engagement_ms
    if delta < 0:
        return "rejected_invalid_time"
    days = click_days if c.engagement_type == CLICK else view_days
    return engagement_ms if days > 0 and delta <= days * DAY_MS else "rejected_outside_window"


candidates = st.builds(
    candidate,
    kind=st.sampled_from([CLICK, VIEW, "IMPRESSION", None]),
    engagement_ms=st.none() | distances.map(lambda d: CONVERSION_MS - d),
    sharing=st.booleans(),
)


@bounded
@given(
    twitter=st.none() | candidates,
    tpn=st.none() | candidates,
    click_days=st.sampled_from([1, 7, 14, 30]),
    view_days=st.sampled_from([0, 1, 7, 14, 30]),
    event_name=st.sampled_from(["purchase", "level"]),
)
def test_candidate_order_and_rejected_reasons(
    twitter: Candidate | None,
    tpn: Candidate | None,
    click_days: int,
    view_days: int,
    event_name: str,
) -> None:
    if tpn is not None:
        tpn = Candidate("tpn", *(getattr(tpn, f) for f in (
            "engagement_type", "engagement_time", "campaign_name", "account_id",
            "granular_data_sharing_allowed")))  # fmt: skip
    decision = evaluate_claim(
        ClaimAnswer(twitter, tpn),
        conversion_time=at_ms(CONVERSION_MS),
        event_name=event_name,
        trackers=trackers(click_days, view_days),
    )
    present = [c for c in (twitter, tpn) if c is not None]
    if not present:
        assert (decision.outcome, decision.rejected) == ("not_claimed", ())
        return
    verdicts = [verdict(c, click_days, view_days) for c in present]
    valid = [(c, v) for c, v in zip(present, verdicts, strict=True) if isinstance(v, int)]
    if not valid:
        # Every candidate rejected: the first one's reason is the outcome, twitter first.
        assert decision.outcome == verdicts[0] and decision.winner is None
        assert [r.reason for r in decision.rejected] == verdicts
        return
    # CLICK before VIEW, then the latest engagement; on a tie, twitter (listed first).
    best = max(valid, key=lambda cv: (cv[0].engagement_type == CLICK, cv[1]))
    assert decision.winner is best[0]
    assert decision.outcome == ("attributed" if event_name == "purchase" else "claimed")
    losers = [(c, v) for c, v in zip(present, verdicts, strict=True) if c is not best[0]]
    assert [r.source for r in decision.rejected] == [c.source for c, _ in losers]
    for rejection, (_, v) in zip(decision.rejected, losers, strict=True):
        assert rejection.reason == ("outranked" if isinstance(v, int) else v)


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=12,
    )  # fmt: skip


def event_like() -> st.SearchStrategy[dict[str, Any]]:
    """Objects near the ingest shape, each field right, wrong or absent."""
    return st.fixed_dictionaries(
        {},
        optional={
            "action": st.sampled_from(["event", "install"]) | json_values(),
            "kochava_app_id": st.just("kogame") | json_values(),
            "event_id": st.text(max_size=140) | json_values(),
            "device_ids": st.dictionaries(st.sampled_from(["idfa", "adid"]),
                                          st.text(max_size=130) | json_values()) | json_values(),
            "origination_ip": st.sampled_from(["203.0.113.9", "::1", "fe80::1%eth0", "1.2.3"])
            | st.text(max_size=40),
            "usertime": st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
            | json_values(),
            "data": st.fixed_dictionaries(
                {}, optional={"event_name": st.text(max_size=260) | json_values(),
                              "event_data": json_values()}) | json_values(),
        },
    )  # fmt: skip


def dumps(value: object) -> bytes:
    """JSON bytes of `value`; numbers beyond 64 bits (which orjson refuses to write) through
    the standard library, so that such bodies reach the parser too."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


bodies = (
    st.binary(max_size=300)
    | event_like().map(dumps)
    | st.lists(event_like(), max_size=4).map(dumps)
    | st.lists(event_like().map(dumps), max_size=4).map(b"\n".join)
    | json_values().map(dumps)
)


@settings(max_examples=250, derandomize=True, database=None, deadline=None)
@given(
    body=bodies,
    content_type=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]),
)
def test_the_ingest_parser_answers_any_bytes(body: bytes, content_type: str) -> None:
    """Any body: items or a refusal naming what is wrong; never another exception."""
    try:
        items = split_body(body, content_type, max_items=3)
    except ApiError as refused:
        assert refused.status in (400, 413) and refused.message
        return
    assert len(items) <= 3  # none: the handler refuses the batch as empty
    received_ms = CONVERSION_MS
    for item in items:
        try:
            event = parse_event(item, received_at_ms=received_ms)
        except Invalid as refused:
            assert refused.message
            continue
        assert isinstance(event, Event)
        assert event.app_id and event.event_name
        assert event.conversion_time_ms <= received_ms + DAY_MS
        assert Event.from_json(event.to_json()) == event


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_795_860_000.0

    def __call__(self) -> float:
        return self.now_s


budget_steps = st.lists(
    st.one_of(
        st.tuples(st.just("take")),
        st.tuples(st.just("give_back")),
        st.tuples(st.just("advance"), st.floats(0, 1000)),
        st.tuples(
            st.just("observe"),
            st.none() | st.integers(-5, 200),
            st.none() | st.integers(-5, 300),
            st.none() | st.floats(-1000, 2000),  # seconds from now, past or future
        ),
        st.tuples(st.just("block_until"), st.none() | st.floats(-1000, 2000)),
    ),
    max_size=40,
)


@bounded
@given(limit=st.integers(1, 100), window_s=st.floats(1, 900), steps=budget_steps)
def test_rate_budget_stays_within_its_limit(
    limit: int, window_s: float, steps: list[tuple[Any, ...]]
) -> None:
    clock = Clock()
    budget = AccountBudget(limit, window_s, clock)
    current_limit = limit
    for step in steps:
        before = (budget.remaining, budget.reset_at)
        match step:
            case ("take",):
                wait_s = budget.try_take()
                assert wait_s >= 0
                if wait_s > 0:
                    assert budget.remaining == 0 and budget.reset_at is not None
            case ("give_back",):
                budget.give_back()
            case ("advance", seconds):
                clock.now_s += seconds
            case ("observe", new_limit, remaining, reset_in):
                reset = None if reset_in is None else clock.now_s + reset_in
                budget.observe(new_limit, remaining, reset)
                if new_limit is not None and new_limit > 0:
                    current_limit = new_limit
                elif reset is not None and reset <= clock.now_s:
                    # An answer naming a window already over never undoes the current one.
                    assert (budget.remaining, budget.reset_at) == before
            case ("block_until", reset_in):
                reset = None if reset_in is None else clock.now_s + reset_in
                budget.block_until(reset)
                if reset is not None and reset <= clock.now_s:
                    # A reset not ahead of our clock: a late answer of an older window
                    # leaves the current one; otherwise a pause of at most a window (never
                    # a loop of sends refused at once).
                    paused = budget.reset_at
                    assert (budget.remaining, paused) == before or (
                        budget.remaining == 0
                        and paused is not None
                        and clock.now_s < paused <= clock.now_s + window_s
                    )
                elif reset is None or before[1] is None or reset >= before[1]:
                    assert budget.remaining == 0
                else:
                    # Earlier than the open window's end: a 429 of an older window, unless
                    # that end was only a local guess (then X's reset replaces it).
                    assert budget.remaining == 0 or (budget.remaining, budget.reset_at) == before
        assert 0 <= budget.remaining <= current_limit
        reset_at = budget.reset_at
        assert reset_at is None or reset_at > clock.now_s


@bounded
@given(
    base_s=st.floats(0.001, 60),
    factor=st.floats(1, 10),
    cap_extra_s=st.floats(0, 3600),
    retry=st.integers(1, 10_000),
    seed=st.integers(0, 2**32),
)
def test_retry_delays_grow_within_their_cap(
    base_s: float, factor: float, cap_extra_s: float, retry: int, seed: int
) -> None:
    policy = RetryPolicy(base_s=base_s, factor=factor, cap_s=base_s + cap_extra_s)
    ceiling = policy.ceiling_s(retry)
    assert policy.ceiling_s(1) == min(policy.cap_s, base_s)
    assert min(base_s, policy.cap_s) <= ceiling <= policy.cap_s
    assert policy.ceiling_s(retry + 1) >= ceiling
    delay = policy.delay_s(retry, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ValueError):
        policy.ceiling_s(0)


list_names = st.sampled_from(["apps", "trackers", "segments", "deliveries", "attributions"])
filters = st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=3)
keys = st.one_of(
    st.tuples(st.text(max_size=40), st.text(max_size=40)),
    st.tuples(st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**63 - 1)),
)


@bounded
@given(list_name=list_names, given_filters=filters, key=keys, other=filters)
def test_cursor_round_trip(
    list_name: str, given_filters: dict[str, str], key: tuple[Any, ...], other: dict[str, str]
) -> None:
    shape = tuple(type(part) for part in key)
    cursor = encode_cursor(list_name, given_filters, key)
    assert decode_cursor(cursor, list_name, given_filters, shape) == key  # type: ignore[arg-type]
    if other != given_filters:
        with pytest.raises(BadRequest) as refused:
            decode_cursor(cursor, list_name, other, shape)  # type: ignore[arg-type]
        assert refused.value.field == "cursor"


@bounded
@given(text=st.text(max_size=80) | st.binary(max_size=60).map(lambda b: b.hex()))
def test_any_text_as_a_cursor_is_a_key_or_a_refusal_naming_cursor(text: str) -> None:
    try:
        decode_cursor(text, "apps", {}, (str, str))
    except BadRequest as refused:
        assert refused.field == "cursor"
