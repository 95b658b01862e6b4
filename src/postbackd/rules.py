"""The configuration rules of PRODUCT.md section 1, checked on create and on update.

Each `check_*` takes the object as it would become (the stored fields merged with the
change) and the current `Index`, and returns the entity or raises `Invalid` / `Conflict`
naming the field. They are plain functions: no HTTP, no SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from postbackd import ids
from postbackd.errors import Conflict, Invalid
from postbackd.fields import Reader
from postbackd.index import Index
from postbackd.model import (
    CONVERSION_TYPES,
    DEFAULT_POST_ENGAGEMENT_WINDOW_DAYS,
    DEFAULT_POST_VIEW_WINDOW_DAYS,
    DEFAULT_RETRY_ATTEMPTS,
    DELIVERY_METHODS,
    MAX_DELIVERY_DELAY_S,
    MAX_RETRY_ATTEMPTS,
    NETWORK_OF_PLATFORM,
    NETWORKS,
    PLATFORMS,
    POST_ENGAGEMENT_WINDOWS_DAYS,
    POST_VIEW_WINDOWS_DAYS,
    TRACKER_TYPES,
    UNSUPPORTED_DELIVERY_METHODS,
    App,
    Campaign,
    Postback,
    Segment,
    Tracker,
    XAccount,
)

# iOS: the numeric App Store id; Android: a Java-style package name (reference, `app_id`).
_IOS_APP_ID: Final = re.compile(r"[0-9]{1,20}")
_ANDROID_PACKAGE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")
_X_ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET_MAX: Final = 512


def check_bundle_id(field: str, value: str, platform: str) -> str:
    if platform == "ios" and not _IOS_APP_ID.fullmatch(value):
        raise Invalid(f"{field} must be the numeric App Store id on iOS", field=field)
    if platform == "android" and (len(value) > 255 or not _ANDROID_PACKAGE.fullmatch(value)):
        raise Invalid(
            f"{field} must be a package name like com.example.game on Android", field=field
        )
    return value


def _app_of(index: Index, app_id: str) -> App:
    app = index.apps.get(app_id)
    if app is None:
        raise Invalid(f"app {app_id!r} does not exist", field="app_id", code="unknown_reference")
    return app


def _name_taken(
    others: Iterable[Campaign | Segment | Tracker], name: str, existing: object
) -> bool:
    """Whether another object of the same scope has this name, case-insensitively."""
    folded = name.lower()
    return any(o.name.lower() == folded and o is not existing for o in others)


def _network_for(app: App, r: Reader) -> str:
    network: str = r.choice("network", NETWORKS)
    if network != NETWORK_OF_PLATFORM[app.platform]:
        raise Invalid(
            f"network {network} does not match the app's platform {app.platform}",
            field="network",
        )
    return network


def check_app(data: Mapping[str, object], index: Index, existing: App | None) -> App:
    r = Reader(data)
    name = r.string("name")
    platform = r.choice("platform", PLATFORMS)
    if existing is None:
        app_id = r.optional_string("id", max_len=100) or ids.new_app_id(name)
        if not ids.APP_ID_PATTERN.fullmatch(app_id):
            raise Invalid(
                "id must be 'ko' followed by lower-case letters, digits and hyphens", field="id"
            )
        if app_id in index.apps:
            raise Conflict(f"app {app_id!r} already exists", field="id", code="duplicate")
    else:
        app_id = existing.id
    bundle_id = r.optional_string("bundle_id", max_len=255)
    if bundle_id is not None:
        check_bundle_id("bundle_id", bundle_id, platform)
    return App(
        id=app_id,
        name=name,
        platform=platform,  # type: ignore[arg-type]
        bundle_id=bundle_id,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_account(data: Mapping[str, object], index: Index, existing: XAccount | None) -> XAccount:
    r = Reader(data)
    account_id = existing.id if existing else r.string("id", max_len=64)
    if existing is None:
        if not _X_ACCOUNT_ID.fullmatch(account_id):
            raise Invalid("id must be an X ads account id (letters, digits, _ or -)", field="id")
        if account_id in index.accounts:
            raise Conflict(f"X account {account_id!r} already exists", field="id")
    token = r.string("access_token", max_len=SECRET_MAX)
    secret = r.string("access_token_secret", max_len=SECRET_MAX)
    credentials_changed = existing is None or (
        token != existing.access_token or secret != existing.access_token_secret
    )
    return XAccount(
        id=account_id,
        name=r.string("name"),
        access_token=token,
        access_token_secret=secret,
        ammp=r.boolean("ammp", False),
        # New credentials are unproven until a signed call to X succeeds with them.
        authenticated=False if credentials_changed else bool(existing and existing.authenticated),
        authenticated_at=None if credentials_changed or not existing else existing.authenticated_at,
        last_auth_error=None if credentials_changed or not existing else existing.last_auth_error,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_campaign(data: Mapping[str, object], index: Index, existing: Campaign | None) -> Campaign:
    r = Reader(data)
    app = _app_of(index, r.string("app_id", max_len=100))
    name = r.string("name")
    if _name_taken((c for c in index.campaigns.values() if c.app_id == app.id), name, existing):
        raise Conflict(f"the app already has a campaign named {name!r}", field="name")
    return Campaign(
        id=existing.id if existing else ids.kochava_id(name, ids.ENTITY_HEX),
        app_id=app.id,
        name=name,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_segment(data: Mapping[str, object], index: Index, existing: Segment | None) -> Segment:
    r = Reader(data)
    campaign_id = r.string("campaign_id", max_len=100)
    if campaign_id not in index.campaigns:
        raise Invalid(
            f"campaign {campaign_id!r} does not exist",
            field="campaign_id",
            code="unknown_reference",
        )
    name = r.string("name")
    siblings = (s for s in index.segments.values() if s.campaign_id == campaign_id)
    if _name_taken(siblings, name, existing):
        raise Conflict(f"the campaign already has a segment named {name!r}", field="name")
    return Segment(
        id=existing.id if existing else ids.kochava_id(name, ids.ENTITY_HEX),
        campaign_id=campaign_id,
        name=name,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_tracker(data: Mapping[str, object], index: Index, existing: Tracker | None) -> Tracker:
    r = Reader(data)
    app = _app_of(index, r.string("app_id", max_len=100))
    segment_id = r.string("segment_id", max_len=100)
    segment = index.segments.get(segment_id)
    if segment is None:
        raise Invalid(
            f"segment {segment_id!r} does not exist", field="segment_id", code="unknown_reference"
        )
    if index.campaigns[segment.campaign_id].app_id != app.id:
        raise Invalid("segment belongs to a campaign of another app", field="segment_id")
    name = r.string("name")
    # Seed: "Enter a unique Tracker Name" (within the app, case-insensitive).
    if _name_taken((t for t in index.trackers.values() if t.app_id == app.id), name, existing):
        raise Conflict(f"the app already has a tracker named {name!r}", field="name")
    account_ids = r.string_list("x_account_ids")
    for i, account_id in enumerate(account_ids):
        account = index.accounts.get(account_id)
        if account is None:
            raise Invalid(
                f"X account {account_id!r} does not exist",
                field=f"x_account_ids[{i}]",
                code="unknown_reference",
            )
        if not account.authenticated:
            # Seed: multiple X accounts may be selected "as long as they have been authenticated".
            raise Invalid(
                f"X account {account_id!r} is not authenticated",
                field=f"x_account_ids[{i}]",
                code="unauthenticated_account",
            )
    # Seed: the bundle id entered on the app is filled into the tracker.
    bundle_id = r.optional_string("bundle_id", max_len=255) or app.bundle_id
    if bundle_id is None:
        raise Invalid(
            "bundle_id is required: neither the tracker nor its app has one", field="bundle_id"
        )
    check_bundle_id("bundle_id", bundle_id, app.platform)
    engagement_days = r.choice(
        "post_engagement_window_days",
        POST_ENGAGEMENT_WINDOWS_DAYS,
        DEFAULT_POST_ENGAGEMENT_WINDOW_DAYS,
    )
    view_days = r.choice(
        "post_view_window_days", POST_VIEW_WINDOWS_DAYS, DEFAULT_POST_VIEW_WINDOW_DAYS
    )
    if view_days > engagement_days:
        raise Invalid(
            f"post_view_window_days ({view_days}) must not be above "
            f"post_engagement_window_days ({engagement_days})",
            field="post_view_window_days",
        )
    return Tracker(
        id=existing.id if existing else ids.new_tracker_id(name),
        app_id=app.id,
        segment_id=segment_id,
        name=name,
        type=r.choice("type", TRACKER_TYPES, "reengagement"),
        network=_network_for(app, r),  # type: ignore[arg-type]
        default=r.boolean("default", False),
        x_account_ids=account_ids,
        bundle_id=bundle_id,
        target_event=r.choice("target_event", CONVERSION_TYPES),
        post_engagement_window_days=engagement_days,
        post_view_window_days=view_days,
        event_matching_event=r.string("event_matching_event", max_len=256),
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def replaced_default(tracker: Tracker, index: Index) -> Tracker | None:
    """The tracker whose default flag this one takes over (one default per app and network)."""
    if not tracker.default:
        return None
    current = index.trackers_of(tracker.app_id, tracker.network).default
    return current if current is not None and current.id != tracker.id else None


def check_postback(data: Mapping[str, object], index: Index, existing: Postback | None) -> Postback:
    r = Reader(data)
    app = _app_of(index, r.string("app_id", max_len=100))
    network = _network_for(app, r)
    event_name = r.string("event_name", max_len=256)
    for other in index.postbacks_of(app.id, event_name):
        if other.network == network and (existing is None or other.id != existing.id):
            raise Conflict(
                f"the app already has a {network} postback for event {event_name!r}",
                field="event_name",
            )
    x_app_id = r.optional_string("x_app_id", max_len=255) or app.bundle_id
    if x_app_id is None:
        raise Invalid("x_app_id is required: the app has no bundle_id to inherit", field="x_app_id")
    check_bundle_id("x_app_id", x_app_id, app.platform)
    account_id = r.optional_string("x_account_id", max_len=64)
    if account_id is not None and account_id not in index.accounts:
        raise Invalid(
            f"X account {account_id!r} does not exist",
            field="x_account_id",
            code="unknown_reference",
        )
    method = data.get("delivery_method")
    if method in UNSUPPORTED_DELIVERY_METHODS:
        raise Invalid(
            "delivery_method network_and_agency needs agencies, which postbackd does not "
            "model yet; use all or network_only",
            field="delivery_method",
            code="unsupported",
        )
    return Postback(
        id=existing.id if existing else ids.kochava_id(f"pb-{event_name}", ids.ENTITY_HEX),
        app_id=app.id,
        network=network,  # type: ignore[arg-type]
        event_name=event_name,
        x_app_id=x_app_id,
        conversion_type=r.choice("conversion_type", CONVERSION_TYPES),
        x_account_id=account_id,
        delivery_delay_s=r.integer("delivery_delay_s", 0, low=0, high=MAX_DELIVERY_DELAY_S),
        retry_attempts=r.integer(
            "retry_attempts", DEFAULT_RETRY_ATTEMPTS, low=0, high=MAX_RETRY_ATTEMPTS
        ),
        delivery_method=r.choice("delivery_method", DELIVERY_METHODS, "all"),
        enabled=r.boolean("enabled", True),
        created_at=existing.created_at if existing else ids.now_iso(),
    )
