"""The configuration entities of PRODUCT.md section 1 and the constants their rules use.

Entities are frozen dataclasses: a change builds a new object, so a snapshot of the
configuration (see `index.py`) can be shared by every task without locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Platform = Literal["ios", "android"]
Network = Literal["x_ios", "x_android"]
DeliveryMethod = Literal["all", "network_only"]

PLATFORMS: Final = ("ios", "android")
NETWORKS: Final = ("x_ios", "x_android")
NETWORK_OF_PLATFORM: Final[dict[str, Network]] = {"ios": "x_ios", "android": "x_android"}
# X's `os_type` query parameter for each network (reference: "Query parameters").
OS_TYPE_OF_NETWORK: Final[dict[str, str]] = {"x_ios": "IOS", "x_android": "ANDROID"}

TRACKER_TYPES: Final = ("reengagement",)
# Seed: "By default, the Post-Engagement Attribution Window is set to 14 days" and the
# post-view one to 0 days; the allowed values are X's own click/view window values.
POST_ENGAGEMENT_WINDOWS_DAYS: Final = (1, 7, 14, 30)
POST_VIEW_WINDOWS_DAYS: Final = (0, 1, 7, 14, 30)
DEFAULT_POST_ENGAGEMENT_WINDOW_DAYS: Final = 14
DEFAULT_POST_VIEW_WINDOW_DAYS: Final = 0

# Kochava's postback settings: delay from realtime to 10 minutes, retries from none to 10,
# 3 by default; delivery method "All" by default.
MAX_DELIVERY_DELAY_S: Final = 600
MAX_RETRY_ATTEMPTS: Final = 10
DEFAULT_RETRY_ATTEMPTS: Final = 3
DELIVERY_METHODS: Final = ("all", "network_only")
# Kochava's third delivery method; it needs agencies, which postbackd does not model.
UNSUPPORTED_DELIVERY_METHODS: Final = ("network_and_agency",)

# X's conversion_type enum (reference: "Query parameters").
CONVERSION_TYPES: Final = frozenset(
    {
        "PURCHASE",
        "SIGN_UP",
        "INSTALL",
        "RE_ENGAGE",
        "UPDATE",
        "TUTORIAL_COMPLETE",
        "RESERVATION",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "LOGIN",
        "CHECKOUT_INITIATED",
        "SEARCH",
        "LEVEL_ACHIEVED",
        "ACHIEVEMENT_UNLOCKED",
        "CONTENT_VIEW",
        "SHARE",
        "INVITE",
        "ADDED_PAYMENT_INFO",
        "SPENT_CREDITS",
        "RATED",
    }
)


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    platform: Platform
    bundle_id: str | None
    created_at: str

    @property
    def network(self) -> Network:
        return NETWORK_OF_PLATFORM[self.platform]


@dataclass(frozen=True, slots=True)
class XAccount:
    id: str
    name: str
    # Write-only secrets: `public()` leaves them out and `repr` hides them so that no log
    # line or error message can carry them by accident.
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)
    ammp: bool
    authenticated: bool
    authenticated_at: str | None
    last_auth_error: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    app_id: str
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    campaign_id: str
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Tracker:
    id: str
    app_id: str
    segment_id: str
    name: str
    type: str
    network: Network
    default: bool
    x_account_ids: tuple[str, ...]
    bundle_id: str
    target_event: str
    post_engagement_window_days: int
    post_view_window_days: int
    event_matching_event: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Postback:
    id: str
    app_id: str
    network: Network
    event_name: str
    x_app_id: str
    conversion_type: str
    x_account_id: str | None
    delivery_delay_s: int
    retry_attempts: int
    delivery_method: DeliveryMethod
    enabled: bool
    created_at: str


Entity = App | XAccount | Campaign | Segment | Tracker | Postback

# Fields an answer never carries (PRODUCT.md: access tokens are write-only).
SECRET_FIELDS: Final = frozenset({"access_token", "access_token_secret"})


def public(entity: Entity) -> dict[str, object]:
    """The JSON form of an entity as the API shows it: every field but the secrets."""
    out: dict[str, object] = {}
    for name in entity.__dataclass_fields__:
        if name in SECRET_FIELDS:
            continue
        value = getattr(entity, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out
