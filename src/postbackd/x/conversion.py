"""The claim request: X's `conversion_event` call and its query parameters.

Reference, "The call" and "Query parameters": every parameter travels in the query string
of `POST {base}/{version}/conversion_event`, with an empty body.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

# The path under `{base}/{version}/`; base URL and version are settings (reference).
CONVERSION_PATH: Final = "conversion_event"
# X's price_micro is an integer; keep it within a signed 64-bit integer.
MAX_PRICE_MICRO: Final = 2**63 - 1
_ONE_MICRO: Final = Decimal("0.000001")


def format_conversion_time(dt: datetime) -> str:
    """ISO-8601 UTC with exactly three millisecond digits and `Z` (reference).

    Sub-millisecond digits are cut, not rounded, so a time never moves into the next second.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("conversion_time must be timezone-aware")
    t = dt.astimezone(UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


def format_epoch_ms(epoch_ms: int) -> str:
    """`format_conversion_time` of a time in epoch milliseconds, at a fraction of the cost:
    the date and time of day are formatted once per second (most claims of a second share it)."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_format_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=1024)
def _format_second(epoch_s: int) -> str:
    t = datetime.fromtimestamp(epoch_s, UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def price_to_micros(value: object) -> int | None:
    """A Kochava `sum`/`price` (number or numeric string) as X's integer `price_micro`.

    Exact decimal arithmetic: 9.99 -> 9990000, half-even to a whole micro. None or a blank
    string means no price; anything that is not a finite, non-negative number is refused.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):  # JSON true/false: bool is an int subclass
        raise ValueError("price is a boolean, not a number")
    if isinstance(value, float):
        # repr is the shortest decimal that reads back as this float: what the sender wrote.
        value = repr(value)
    if isinstance(value, str):
        micros = _plain_micros(value.strip())
        if micros is not None:
            return _checked(micros)
    if not isinstance(value, int | str | Decimal):
        raise ValueError(f"price is a {type(value).__name__}, not a number")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError("price is not a number") from None
    if not amount.is_finite():
        raise ValueError("price is not a finite number")
    if amount < 0:
        raise ValueError("price is negative")
    try:
        micros = int(amount.quantize(_ONE_MICRO, rounding=ROUND_HALF_EVEN).scaleb(6))
    except InvalidOperation:  # more digits than the decimal context holds
        raise ValueError("price is too large") from None
    return _checked(micros)


def _plain_micros(text: str) -> int | None:
    """Micros of a plain price (ASCII digits, at most six after the point: nothing to round)
    in integer arithmetic, three times cheaper than `Decimal`; None for any other form."""
    whole, point, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if not point:
        return int(whole) * 1_000_000
    if not (0 < len(fraction) <= 6 and fraction.isascii() and fraction.isdigit()):
        return None
    return int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))


def _checked(micros: int) -> int:
    if micros > MAX_PRICE_MICRO:
        raise ValueError("price is too large")
    return micros


def claim_params(
    *,
    x_app_id: str,
    os_type: str,
    hashed_device_id: str,
    conversion_type: str,
    conversion_time: datetime | int,
    windows: tuple[int, int] | None,
    device_ip: str | None = None,
    price_micro: int | None = None,
    price_currency: str | None = None,
    number_items: int | None = None,
    level: int | None = None,
) -> list[tuple[str, str]]:
    """The query parameters of one claim request, optional ones left out when None.

    `conversion_time` is a datetime or epoch milliseconds. `windows` is (click_window,
    view_through_window) in days; None leaves both out, so X applies its defaults
    (PRODUCT.md, "Claim request": no matching tracker).
    """
    if isinstance(conversion_time, int):
        time_text = format_epoch_ms(conversion_time)
    else:
        time_text = format_conversion_time(conversion_time)
    params = [
        ("app_id", x_app_id),
        ("os_type", os_type),
        ("hashed_device_id", hashed_device_id),
        ("conversion_type", conversion_type),
        ("conversion_time", time_text),
    ]
    if windows is not None:
        params += [("click_window", str(windows[0])), ("view_through_window", str(windows[1]))]
    optional = (
        ("device_ip_address", device_ip),
        ("price_micro", price_micro),
        ("price_currency", price_currency),
        ("number_items", number_items),
        ("level", level),
    )
    params += [(name, str(value)) for name, value in optional if value is not None]
    return params
