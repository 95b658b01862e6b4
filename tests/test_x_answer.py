from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from postbackd.x.answer import ClaimAnswer, parse_answer, parse_errors


def node(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "engagement_type": "CLICK",
        "engagement_time": "2026-11-20T08:15:00.000Z",
        "attribution_type": "PROMOTED",
        "promoted_properties": {
            "account_id": "18ce54d4x5t",
            "campaign_name": "Winter promo kodemo-ios5f1c2a3b4d5e6f708192a3b4",
        },
    }
    base.update(overrides)
    return base


def answer(data: object) -> bytes:
    return orjson.dumps({"request": {"params": {}}, "data": data})


def test_twitter_node_is_read() -> None:
    parsed = parse_answer(answer({"twitter_attribution": node(), "tpn_attribution": None}))
    assert parsed.tpn is None
    assert parsed.twitter is not None
    assert parsed.twitter.source == "twitter"
    assert parsed.twitter.engagement_type == "CLICK"
    assert parsed.twitter.engagement_time == datetime(2026, 11, 20, 8, 15, tzinfo=UTC)
    assert parsed.twitter.campaign_name == "Winter promo kodemo-ios5f1c2a3b4d5e6f708192a3b4"
    assert parsed.twitter.account_id == "18ce54d4x5t"
    assert parsed.twitter.granular_data_sharing_allowed is True
    assert parsed.candidates == (parsed.twitter,)


def test_both_nodes_twitter_first() -> None:
    parsed = parse_answer(
        answer(
            {
                "tpn_attribution": node(engagement_type="VIEW"),
                "twitter_attribution": node(engagement_type="CLICK"),
            }
        )
    )
    assert [(c.source, c.engagement_type) for c in parsed.candidates] == [
        ("twitter", "CLICK"),
        ("tpn", "VIEW"),
    ]


def test_null_nodes_mean_not_claimed() -> None:
    parsed = parse_answer(answer({"twitter_attribution": None, "tpn_attribution": None}))
    assert parsed == ClaimAnswer(twitter=None, tpn=None)
    assert parsed.candidates == ()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b'{"data": ',
        b"[]",
        b"null",
        b"42",
        b'"data"',
        b"{}",
        b'{"data": null}',
        b'{"data": []}',
        b'{"data": "x"}',
        b'{"data": {}}',
        b'{"data": {"twitter_attribution": 1, "tpn_attribution": "CLICK"}}',
        b'{"data": {"twitter_attribution": [], "tpn_attribution": true}}',
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_garbage_gives_no_candidate(body: bytes) -> None:
    assert parse_answer(body) == ClaimAnswer(twitter=None, tpn=None)


def test_empty_node_is_a_candidate_with_nothing_known() -> None:
    parsed = parse_answer(answer({"twitter_attribution": {}}))
    assert parsed.twitter is not None
    assert parsed.twitter.engagement_type is None
    assert parsed.twitter.engagement_time is None
    assert parsed.twitter.campaign_name is None
    assert parsed.twitter.account_id is None
    assert parsed.twitter.granular_data_sharing_allowed is True


@pytest.mark.parametrize(
    "promoted", [None, "x", [], {"campaign_name": None, "account_id": 5}, {"campaign_name": 7}]
)
def test_bad_promoted_properties(promoted: object) -> None:
    parsed = parse_answer(answer({"twitter_attribution": node(promoted_properties=promoted)}))
    assert parsed.twitter is not None
    assert parsed.twitter.campaign_name is None
    assert parsed.twitter.account_id is None


def test_unknown_engagement_type_is_kept_as_sent() -> None:
    parsed = parse_answer(answer({"twitter_attribution": node(engagement_type="IMPRESSION")}))
    assert parsed.twitter is not None
    assert parsed.twitter.engagement_type == "IMPRESSION"
    parsed = parse_answer(answer({"twitter_attribution": node(engagement_type=1)}))
    assert parsed.twitter is not None
    assert parsed.twitter.engagement_type is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-20T08:15:00.000Z", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T08:15:00.5Z", datetime(2026, 11, 20, 8, 15, 0, 500000, tzinfo=UTC)),
        ("2026-11-20T10:15:00.000+02:00", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T03:45:00-04:30", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("2026-11-20T08:15:00", datetime(2026, 11, 20, 8, 15, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        ("2026-13-45T99:00:00Z", None),
        ("0001-01-01T00:00:00+01:00", None),  # before datetime's first UTC instant
        (1764000000, None),
        (None, None),
    ],
)
def test_engagement_time(raw: object, expected: datetime | None) -> None:
    parsed = parse_answer(answer({"twitter_attribution": node(engagement_time=raw)}))
    assert parsed.twitter is not None
    assert parsed.twitter.engagement_time == expected
    if expected is not None:
        assert parsed.twitter.engagement_time is not None
        assert parsed.twitter.engagement_time.utcoffset() is not None
        assert parsed.twitter.engagement_time.tzinfo == UTC


@pytest.mark.parametrize(
    ("in_node", "at_data", "allowed"),
    [
        (False, None, False),
        (True, None, True),
        (None, False, False),  # node silent: the data-level value applies
        (None, True, True),
        (True, False, True),  # the node's own value wins
        (False, True, False),
        (None, None, True),  # absent everywhere: allowed
        ("false", None, False),
        ("False", None, False),
        ("FALSE", None, True),
        (0, None, True),
        ("no", None, True),
        (None, "false", False),
        (None, 0, True),
    ],
)
def test_granular_data_sharing(in_node: object, at_data: object, allowed: bool) -> None:
    twitter = node()
    if in_node is not None:
        twitter["is_granular_data_sharing_allowed"] = in_node
    data: dict[str, object] = {"twitter_attribution": twitter, "tpn_attribution": node()}
    if at_data is not None:
        data["is_granular_data_sharing_allowed"] = at_data
    parsed = parse_answer(answer(data))
    assert parsed.twitter is not None
    assert parsed.twitter.granular_data_sharing_allowed is allowed


def test_granular_explicit_null_in_node_falls_back_to_data() -> None:
    data = {
        "is_granular_data_sharing_allowed": False,
        "twitter_attribution": node(is_granular_data_sharing_allowed=None),
    }
    parsed = parse_answer(answer(data))
    assert parsed.twitter is not None
    assert parsed.twitter.granular_data_sharing_allowed is False


def test_parse_errors() -> None:
    body = orjson.dumps(
        {
            "errors": [
                {
                    "code": "INVALID_PARAMETER",
                    "message": "Expected an enum",
                    "parameter": "os_type",
                },
                {"code": "MISSING_PARAMETER", "message": "second"},
            ],
            "request": {"params": {}},
        }
    )
    assert parse_errors(body) == ("INVALID_PARAMETER", "Expected an enum")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", (None, None)),
        (b"garbage", (None, None)),
        (b"[]", (None, None)),
        (b'{"errors": null}', (None, None)),
        (b'{"errors": "boom"}', (None, None)),
        (b'{"errors": []}', (None, None)),
        (b'{"errors": [1, "x", {"code": "TOO_MANY_REQUESTS"}]}', ("TOO_MANY_REQUESTS", None)),
        (b'{"errors": [{"code": 88, "message": "Rate limit"}]}', (None, "Rate limit")),
        (b'{"errors": [{}]}', (None, None)),
    ],
)
def test_parse_errors_tolerates_garbage(
    body: bytes, expected: tuple[str | None, str | None]
) -> None:
    assert parse_errors(body) == expected
