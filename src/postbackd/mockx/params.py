"""The query parameters of `POST /{version}/conversion_event`, checked the way X answers them.

Reference, "Query parameters" and "Errors": a missing required parameter is
`MISSING_PARAMETER`, a malformed one `INVALID_PARAMETER`, windows outside X's values or a
click window shorter than the view-through window `INVALID_TIME_WINDOW`; each error names
the parameter.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

# X's own enum (reference, "Query parameters"): kept here rather than imported from the
# daemon's model, so the simulated X does not share a mistake with the code it checks.
CONVERSION_TYPES: Final = frozenset(
    {
        "PURCHASE", "SIGN_UP", "INSTALL", "RE_ENGAGE", "UPDATE", "TUTORIAL_COMPLETE",
        "RESERVATION", "ADD_TO_CART", "ADD_TO_WISHLIST", "LOGIN", "CHECKOUT_INITIATED",
        "SEARCH", "LEVEL_ACHIEVED", "ACHIEVEMENT_UNLOCKED", "CONTENT_VIEW", "SHARE", "INVITE",
        "ADDED_PAYMENT_INFO", "SPENT_CREDITS", "RATED",
    }
)  # fmt: skip
OS_TYPES: Final = frozenset({"IOS", "ANDROID"})
ENGAGEMENT_TYPES: Final = frozenset({"CLICK", "VIEW"})
CLICK_WINDOWS_DAYS: Final = frozenset({1, 7, 14, 30})
VIEW_THROUGH_WINDOWS_DAYS: Final = frozenset({0, 1, 7, 14, 30})
DEFAULT_CLICK_WINDOW_DAYS: Final = 14
DEFAULT_VIEW_THROUGH_WINDOW_DAYS: Final = 1
REQUIRED: Final = ("app_id", "os_type", "hashed_device_id", "conversion_type", "conversion_time")

_CONVERSION_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_INTEGER: Final = re.compile(r"-?[0-9]+")
_COUNT: Final = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class XError:
    code: str
    message: str
    parameter: str | None = None

    def to_json(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


@dataclass(frozen=True, slots=True)
class ConversionQuery:
    app_id: str
    os_type: str
    hashed_device_id: str
    conversion_type: str
    conversion_time: datetime
    click_window: int
    view_through_window: int


def parse_conversion_time(text: str) -> datetime | None:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`, the only form the reference gives; None otherwise."""
    if _CONVERSION_TIME.fullmatch(text) is None:
        return None
    try:
        # The form is checked above; this reads it ('Z' is UTC) and refuses a date that
        # does not exist, such as February 30.
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_conversion(pairs: list[tuple[str, str]]) -> ConversionQuery | list[XError]:
    params = dict(pairs)
    errors = [
        XError("MISSING_PARAMETER", f"{name} is required", name)
        for name in REQUIRED
        if not params.get(name)
    ]
    if len(params) != len(pairs):
        names = sorted(n for n, count in Counter(n for n, _ in pairs).items() if count > 1)
        errors += [XError("INVALID_PARAMETER", f"{n} is given more than once", n) for n in names]
    conversion_time = parse_conversion_time(params.get("conversion_time", ""))
    for name, value in params.items():
        valid = conversion_time is not None if name == "conversion_time" else _valid(name, value)
        if value and not valid:
            errors.append(XError("INVALID_PARAMETER", f"{name} is not valid: {value!r}", name))
    click = _window(params, "click_window", CLICK_WINDOWS_DAYS, DEFAULT_CLICK_WINDOW_DAYS, errors)
    view = _window(
        params,
        "view_through_window",
        VIEW_THROUGH_WINDOWS_DAYS,
        DEFAULT_VIEW_THROUGH_WINDOW_DAYS,
        errors,
    )
    if click is not None and view is not None and click < view:
        errors.append(
            XError(
                "INVALID_TIME_WINDOW",
                "click_window must be at least view_through_window",
                "click_window",
            )
        )
    if errors or click is None or view is None or conversion_time is None:
        return errors
    return ConversionQuery(
        app_id=params["app_id"],
        os_type=params["os_type"],
        hashed_device_id=params["hashed_device_id"],
        conversion_type=params["conversion_type"],
        conversion_time=conversion_time,
        click_window=click,
        view_through_window=view,
    )


# Most values repeat from call to call (OS, conversion type, IP, price, currency): each
# distinct (name, value) is checked once.
@functools.lru_cache(maxsize=4096)
def _valid(name: str, value: str) -> bool:
    check = _CHECKS.get(name)
    return check is None or check(value)


def _window(
    params: dict[str, str], name: str, allowed: frozenset[int], default: int, errors: list[XError]
) -> int | None:
    text = params.get(name)
    if text is None:
        return default
    if not _is_int(text):
        errors.append(XError("INVALID_PARAMETER", f"{name} must be a number of days", name))
        return None
    if int(text) not in allowed:
        days = ", ".join(str(d) for d in sorted(allowed))
        errors.append(XError("INVALID_TIME_WINDOW", f"{name} must be one of {days}", name))
        return None
    return int(text)


def _is_hashed_device_id(text: str) -> bool:
    # base64 of an HMAC-SHA256 digest: exactly 32 bytes.
    try:
        return len(binascii.a2b_base64(text, strict_mode=True)) == 32
    except binascii.Error:
        return False


def _is_int(text: str) -> bool:
    return _INTEGER.fullmatch(text) is not None


def _is_count(text: str) -> bool:
    return _COUNT.fullmatch(text) is not None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_iso_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


_CHECKS: Final[dict[str, Callable[[str], bool]]] = {
    "os_type": OS_TYPES.__contains__,
    "hashed_device_id": _is_hashed_device_id,
    "conversion_type": CONVERSION_TYPES.__contains__,
    "device_ip_address": _is_ip,
    "price_micro": _is_count,
    "price_currency": lambda text: _CURRENCY.fullmatch(text) is not None,
    "number_items": _is_count,
    "level": _is_int,
    "user_payment_info": lambda text: text in ("true", "false"),
    "non_twitter_engagement_type": ENGAGEMENT_TYPES.__contains__,
    "non_twitter_engagement_time": _is_iso_time,
}
