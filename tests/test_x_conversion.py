from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbackd.x.conversion import (
    claim_params,
    format_conversion_time,
    format_epoch_ms,
    price_to_micros,
)

T = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (T, "2026-11-28T12:00:00.123Z"),
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), "2026-11-28T12:00:00.000Z"),
        # Cut, not rounded: .999999 stays in its second.
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2026-12-31T23:59:59.999Z"),
        (
            datetime(
                2026, 11, 28, 14, 30, 0, 5000, tzinfo=timezone(timedelta(hours=2, minutes=30))
            ),
            "2026-11-28T12:00:00.005Z",
        ),
        (datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC), "0005-01-02T03:04:05.000Z"),
    ],
)
def test_format_conversion_time(dt: datetime, expected: str) -> None:
    assert format_conversion_time(dt) == expected


@given(st.integers(min_value=946_684_800_000, max_value=253_402_300_799_999))
def test_format_epoch_ms_is_format_conversion_time(epoch_ms: int) -> None:
    # What the engine sends, from an event's conversion time in epoch milliseconds.
    moment = datetime.fromtimestamp(epoch_ms // 1000, UTC) + timedelta(milliseconds=epoch_ms % 1000)
    assert format_epoch_ms(epoch_ms) == format_conversion_time(moment)


def test_claim_params_take_epoch_ms_as_a_datetime() -> None:
    common = {"x_app_id": "1", "os_type": "IOS", "hashed_device_id": "h",
              "conversion_type": "PURCHASE", "windows": None}  # fmt: skip
    epoch_ms = (T - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert claim_params(conversion_time=epoch_ms, **common) == claim_params(
        conversion_time=T, **common
    )


def test_format_conversion_time_refuses_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_conversion_time(datetime(2026, 11, 28, 12, 0))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (9.99, 9_990_000),
        ("9.99", 9_990_000),
        (" 9.99 ", 9_990_000),
        (0.1, 100_000),
        (0.3, 300_000),  # 0.1 + 0.2 style float noise must not leak in
        (1.005, 1_005_000),
        (19, 19_000_000),
        ("19", 19_000_000),
        (0, 0),
        ("0.0000005", 0),  # half-even: exactly half a micro goes to the even neighbour
        ("0.0000015", 2),
        ("0.0000025", 2),
        ("0.00000051", 1),
        (1.5e-06, 2),
        ("1e3", 1_000_000_000),
        ("007.5", 7_500_000),
        ("9.", 9_000_000),
        ("1.1234565", 1_123_456),  # seven digits: rounded half-even, not cut
        ("1.1234575", 1_123_458),
        ("\u0661\u0662", 12_000_000),  # non-ASCII digits, as Decimal reads them
        (Decimal("12.345678"), 12_345_678),
        ("9223372036854.775807", 2**63 - 1),
        (None, None),
        ("", None),
        ("  ", None),
    ],
)
def test_price_to_micros(value: object, micros: int | None) -> None:
    assert price_to_micros(value) == micros


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "boolean"),
        (False, "boolean"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("NaN", "finite"),
        ("-Infinity", "finite"),
        ("abc", "not a number"),
        ("1,99", "not a number"),
        (-0.01, "negative"),
        ("-5", "negative"),
        ([1], "list"),
        ({"v": 1}, "dict"),
        ("1e40", "too large"),
        ("9223372036854.775808", "too large"),
    ],
)
def test_price_to_micros_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        price_to_micros(value)


def test_claim_params_full() -> None:
    params = claim_params(
        x_app_id="333903271",
        os_type="IOS",
        hashed_device_id="aGFzaA==",
        conversion_type="PURCHASE",
        conversion_time=T,
        windows=(14, 1),
        device_ip="2001:db8::1",
        price_micro=9_990_000,
        price_currency="USD",
        number_items=2,
        level=0,
    )
    assert params == [
        ("app_id", "333903271"),
        ("os_type", "IOS"),
        ("hashed_device_id", "aGFzaA=="),
        ("conversion_type", "PURCHASE"),
        ("conversion_time", "2026-11-28T12:00:00.123Z"),
        ("click_window", "14"),
        ("view_through_window", "1"),
        ("device_ip_address", "2001:db8::1"),
        ("price_micro", "9990000"),
        ("price_currency", "USD"),
        ("number_items", "2"),
        ("level", "0"),
    ]


def test_claim_params_minimal_leaves_optional_out() -> None:
    params = claim_params(
        x_app_id="com.example.game",
        os_type="ANDROID",
        hashed_device_id="h",
        conversion_type="RE_ENGAGE",
        conversion_time=T,
        windows=None,
    )
    assert [name for name, _ in params] == [
        "app_id",
        "os_type",
        "hashed_device_id",
        "conversion_type",
        "conversion_time",
    ]


def test_claim_params_zero_view_window_is_sent() -> None:
    params = dict(
        claim_params(
            x_app_id="a",
            os_type="IOS",
            hashed_device_id="h",
            conversion_type="PURCHASE",
            conversion_time=T,
            windows=(30, 0),
        )
    )
    assert params["click_window"] == "30"
    assert params["view_through_window"] == "0"
