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
from postbackd.fields import Count, Flag, Form, Identifier, OneOf, Text, TextList
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
_X_ACCOUNT_ID: Final = r"[A-Za-z0-9_-]{1,64}"
SECRET_MAX: Final = 512
BUNDLE_ID_MAX: Final = 255
REFERENCE_MAX: Final = 100
EVENT_NAME_MAX: Final = 256


def _bundle_id(name: str, doc: str) -> Identifier:
    return Identifier(
        name,
        doc + " iOS: the numeric App Store id; Android: the package name (com.example.game).",
        f"{_IOS_APP_ID.pattern}|{_ANDROID_PACKAGE.pattern}",
        "a numeric App Store id (iOS) or a package name like com.example.game (Android)",
        BUNDLE_ID_MAX,
        required=False,
    )


def _reference(name: str, what: str) -> Text:
    return Text(name, f"The id of an existing {what}.", max_len=REFERENCE_MAX)


_UNSUPPORTED_METHODS: Final = {
    m: "delivery_method network_and_agency needs agencies, which postbackd does not model "
    "yet; use all or network_only"
    for m in UNSUPPORTED_DELIVERY_METHODS
}

# The request fields of each kind (PRODUCT.md section 1), read by the checks below and
# described by the OpenAPI document: one definition for both.
APP: Final = Form(
    "app",
    (
        Identifier(
            "id",
            "Kochava-style app id; generated from the name when not given.",
            ids.APP_ID_PATTERN.pattern,
            "'ko' followed by lower-case letters, digits and hyphens",
            REFERENCE_MAX,
            required=False,
        ),
        Text("name", "The app's name."),
        OneOf("platform", PLATFORMS, doc="The app's platform; cannot change."),
        _bundle_id("bundle_id", "Filled into trackers and postbacks that give none."),
    ),
    immutable=frozenset({"id", "platform"}),
)
X_ACCOUNT: Final = Form(
    "X account",
    (
        Identifier(
            "id",
            "The X Ads account id.",
            _X_ACCOUNT_ID,
            "an X ads account id (letters, digits, _ or -)",
            64,
        ),
        Text("name", "A name for the account."),
        Text("access_token", "OAuth token of the account (write-only).", SECRET_MAX, secret=True),
        Text(
            "access_token_secret",
            "OAuth token secret of the account (write-only).",
            SECRET_MAX,
            secret=True,
        ),
        Flag("ammp", "Joined X's Advanced Mobile Measurement Program.", False),
    ),
    immutable=frozenset({"id"}),
    read_only=frozenset({"created_at", "authenticated", "authenticated_at", "last_auth_error"}),
)
CAMPAIGN: Final = Form(
    "campaign",
    (_reference("app_id", "app; cannot change"), Text("name", "Unique within the app.")),
    immutable=frozenset({"app_id"}),
)
SEGMENT: Final = Form(
    "segment",
    (
        _reference("campaign_id", "campaign; cannot change"),
        Text("name", "Unique within the campaign."),
    ),
    immutable=frozenset({"campaign_id"}),
)
TRACKER: Final = Form(
    "tracker",
    (
        _reference("app_id", "app; cannot change"),
        Text(
            "segment_id",
            "The id of an existing segment of a campaign of the app; or give "
            "campaign_name (and segment_name) to find or create them.",
            REFERENCE_MAX,
        ),
        Text(
            "campaign_name",
            "Create only: the campaign to find or create (with segment_id absent).",
            required=False,
        ),
        Text(
            "segment_name",
            'Create only: the segment of campaign_name to find or create (default "Default").',
            required=False,
        ),
        Text("name", "Unique within the app, case-insensitively."),
        OneOf("type", TRACKER_TYPES, "reengagement", doc="The tracker type."),
        OneOf("network", NETWORKS, doc="Must match the app's platform; cannot change."),
        Flag(
            "default",
            "The app's default tracker for the network; making one default "
            "clears the flag of the previous one, named in replaced_default.",
            False,
        ),
        TextList(
            "x_account_ids",
            "X accounts, each existing and authenticated.",
            Text("x_account_ids[]", "An X account id."),
        ),
        _bundle_id("bundle_id", "The app's when not given."),
        OneOf("target_event", tuple(sorted(CONVERSION_TYPES)), doc="An X conversion type."),
        OneOf(
            "post_engagement_window_days",
            POST_ENGAGEMENT_WINDOWS_DAYS,
            DEFAULT_POST_ENGAGEMENT_WINDOW_DAYS,
            doc="Post-engagement (click) window.",
        ),
        OneOf(
            "post_view_window_days",
            POST_VIEW_WINDOWS_DAYS,
            DEFAULT_POST_VIEW_WINDOW_DAYS,
            doc="Post-view window; not above the post-engagement window.",
        ),
        Text(
            "event_matching_event",
            "The app event that earns the re-engagement attribution.",
            EVENT_NAME_MAX,
        ),
    ),
    immutable=frozenset({"app_id", "network", "campaign_name", "segment_name"}),
    read_only=frozenset({"id", "created_at"}),
)
POSTBACK: Final = Form(
    "postback",
    (
        _reference("app_id", "app; cannot change"),
        OneOf("network", NETWORKS, doc="Must match the app's platform; cannot change."),
        Text(
            "event_name",
            "The app event to send; one postback per app, network and event; cannot change.",
            EVENT_NAME_MAX,
        ),
        _bundle_id("x_app_id", "The app's bundle_id (followed when it changes) when not given."),
        OneOf("conversion_type", tuple(sorted(CONVERSION_TYPES)), doc="An X conversion type."),
        Identifier(
            "x_account_id",
            "An existing X account whose token signs the claims.",
            _X_ACCOUNT_ID,
            "an X ads account id (letters, digits, _ or -)",
            64,
            required=False,
        ),
        Count(
            "delivery_delay_s", "Seconds from acceptance to sending.", 0, 0, MAX_DELIVERY_DELAY_S
        ),
        Count(
            "retry_attempts",
            "Retries after timeouts, connection errors and 5xx.",
            DEFAULT_RETRY_ATTEMPTS,
            0,
            MAX_RETRY_ATTEMPTS,
        ),
        OneOf(
            "delivery_method",
            (*DELIVERY_METHODS,),
            "all",
            _UNSUPPORTED_METHODS,
            doc="all: every matching event; network_only: devices whose latest attribution "
            "is to this network. network_and_agency is refused.",
        ),
        Flag("enabled", "Disabled postbacks send nothing.", True),
    ),
    immutable=frozenset({"app_id", "network", "event_name"}),
)


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


def _network_for(app: App, data: Mapping[str, object], rule: OneOf[str]) -> str:
    network = rule.read(data)
    if network != NETWORK_OF_PLATFORM[app.platform]:
        raise Invalid(
            f"network {network} does not match the app's platform {app.platform}",
            field="network",
        )
    return network


def check_app(data: Mapping[str, object], index: Index, existing: App | None) -> App:
    f = APP
    name = f.text("name").read(data)
    platform = f.one_of("platform").read(data)
    if existing is None:
        app_id = f.identifier("id").read_optional(data) or ids.new_app_id(name)
        if app_id in index.apps:
            raise Conflict(f"app {app_id!r} already exists", field="id", code="duplicate")
    else:
        app_id = existing.id
    bundle_id = f.identifier("bundle_id").read_optional(data)
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
    f = X_ACCOUNT
    account_id = existing.id if existing else f.identifier("id").read(data)
    if existing is None and account_id in index.accounts:
        raise Conflict(f"X account {account_id!r} already exists", field="id")
    token = f.text("access_token").read(data)
    secret = f.text("access_token_secret").read(data)
    credentials_changed = existing is None or (
        token != existing.access_token or secret != existing.access_token_secret
    )
    return XAccount(
        id=account_id,
        name=f.text("name").read(data),
        access_token=token,
        access_token_secret=secret,
        ammp=f.flag("ammp").read(data),
        # New credentials are unproven until a signed call to X succeeds with them.
        authenticated=False if credentials_changed else bool(existing and existing.authenticated),
        authenticated_at=None if credentials_changed or not existing else existing.authenticated_at,
        last_auth_error=None if credentials_changed or not existing else existing.last_auth_error,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_campaign(data: Mapping[str, object], index: Index, existing: Campaign | None) -> Campaign:
    f = CAMPAIGN
    app = _app_of(index, f.text("app_id").read(data))
    name = f.text("name").read(data)
    if _name_taken((c for c in index.campaigns.values() if c.app_id == app.id), name, existing):
        raise Conflict(f"the app already has a campaign named {name!r}", field="name")
    return Campaign(
        id=existing.id if existing else ids.kochava_id(name, ids.ENTITY_HEX),
        app_id=app.id,
        name=name,
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def check_segment(data: Mapping[str, object], index: Index, existing: Segment | None) -> Segment:
    f = SEGMENT
    campaign_id = f.text("campaign_id").read(data)
    if campaign_id not in index.campaigns:
        raise Invalid(
            f"campaign {campaign_id!r} does not exist",
            field="campaign_id",
            code="unknown_reference",
        )
    name = f.text("name").read(data)
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
    f = TRACKER
    app = _app_of(index, f.text("app_id").read(data))
    segment_id = f.text("segment_id").read(data)
    segment = index.segments.get(segment_id)
    if segment is None:
        raise Invalid(
            f"segment {segment_id!r} does not exist", field="segment_id", code="unknown_reference"
        )
    if index.campaigns[segment.campaign_id].app_id != app.id:
        raise Invalid("segment belongs to a campaign of another app", field="segment_id")
    name = f.text("name").read(data)
    # Seed: "Enter a unique Tracker Name" (within the app, case-insensitive).
    if _name_taken((t for t in index.trackers.values() if t.app_id == app.id), name, existing):
        raise Conflict(f"the app already has a tracker named {name!r}", field="name")
    account_ids = f.text_list("x_account_ids").read(data)
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
    bundle_id = f.identifier("bundle_id").read_optional(data) or app.bundle_id
    if bundle_id is None:
        raise Invalid(
            "bundle_id is required: neither the tracker nor its app has one", field="bundle_id"
        )
    check_bundle_id("bundle_id", bundle_id, app.platform)
    engagement_days = f.window("post_engagement_window_days").read(data)
    view_days = f.window("post_view_window_days").read(data)
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
        type=f.one_of("type").read(data),
        network=_network_for(app, data, f.one_of("network")),  # type: ignore[arg-type]
        default=f.flag("default").read(data),
        x_account_ids=account_ids,
        bundle_id=bundle_id,
        target_event=f.one_of("target_event").read(data),
        post_engagement_window_days=engagement_days,
        post_view_window_days=view_days,
        event_matching_event=f.text("event_matching_event").read(data),
        created_at=existing.created_at if existing else ids.now_iso(),
    )


def replaced_default(tracker: Tracker, index: Index) -> Tracker | None:
    """The tracker whose default flag this one takes over (one default per app and network)."""
    if not tracker.default:
        return None
    current = index.trackers_of(tracker.app_id, tracker.network).default
    return current if current is not None and current.id != tracker.id else None


def check_postback(data: Mapping[str, object], index: Index, existing: Postback | None) -> Postback:
    f = POSTBACK
    app = _app_of(index, f.text("app_id").read(data))
    network = _network_for(app, data, f.one_of("network"))
    event_name = f.text("event_name").read(data)
    for other in index.postbacks_of(app.id, event_name):
        if other.network == network and (existing is None or other.id != existing.id):
            raise Conflict(
                f"the app already has a {network} postback for event {event_name!r}",
                field="event_name",
            )
    x_app_id = f.identifier("x_app_id").read_optional(data) or app.bundle_id
    if x_app_id is None:
        raise Invalid("x_app_id is required: the app has no bundle_id to inherit", field="x_app_id")
    check_bundle_id("x_app_id", x_app_id, app.platform)
    account_id = f.identifier("x_account_id").read_optional(data)
    if account_id is not None and account_id not in index.accounts:
        raise Invalid(
            f"X account {account_id!r} does not exist",
            field="x_account_id",
            code="unknown_reference",
        )
    return Postback(
        id=existing.id if existing else ids.kochava_id(f"pb-{event_name}", ids.ENTITY_HEX),
        app_id=app.id,
        network=network,  # type: ignore[arg-type]
        event_name=event_name,
        x_app_id=x_app_id,
        conversion_type=f.one_of("conversion_type").read(data),
        x_account_id=account_id,
        delivery_delay_s=f.count("delivery_delay_s").read(data),
        retry_attempts=f.count("retry_attempts").read(data),
        delivery_method=f.one_of("delivery_method").read(data),  # type: ignore[arg-type]
        enabled=f.flag("enabled").read(data),
        created_at=existing.created_at if existing else ids.now_iso(),
    )
