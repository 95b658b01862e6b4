"""The first steps of the seed: X accounts (added, authenticated, and why one failed), apps,
campaigns and their segments."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final, TypeVar

from aiohttp import web

from postbackd.model import App, Campaign, Entity, Postback, Segment, Tracker, XAccount, public

from .editing import ACCOUNTS, APPS, CAMPAIGNS, CHOICES, SEGMENTS, app_choices, delete, save
from .forms import FormState
from .render import page, see_other
from .services import services, session_of
from .session import Session

E = TypeVar("E", bound=Entity)

ACCOUNT_NEW: Final = ("id", "name", "access_token", "access_token_secret", "ammp")
ACCOUNT_EDIT: Final = ("name", "access_token", "access_token_secret", "ammp")
APP_NEW: Final = ("id", "name", "platform", "bundle_id")
APP_EDIT: Final = ("name", "bundle_id")
CAMPAIGN_NEW: Final = ("app_id", "name")
CAMPAIGN_EDIT: Final = ("name",)
SEGMENT_NEW: Final = ("name",)


def by_creation(entities: Iterable[E]) -> list[E]:
    return sorted(entities, key=lambda e: (e.created_at, e.id))


# X accounts ------------------------------------------------------------------------------


def _account_users(request: web.Request) -> dict[str, list[Tracker]]:
    users: dict[str, list[Tracker]] = {}
    for tracker in by_creation(services(request).catalog.index.trackers.values()):
        for account_id in tracker.x_account_ids:
            users.setdefault(account_id, []).append(tracker)
    return users


def _accounts(request: web.Request, form: FormState, status: int = 200) -> web.Response:
    accounts = by_creation(services(request).catalog.index.accounts.values())
    context = {"accounts": accounts, "form": form, "users": _account_users(request)}
    return page(request, "x_accounts.html", context, status)


def _told(session: Session, account: XAccount, done: str) -> None:
    """PRODUCT.md 1: authenticated only after a signed call to X succeeded; else why not."""
    if account.authenticated:
        session.notify(f"X account {account.name!r} ({account.id}) {done} and authenticated.")
    else:
        session.notify(
            f"X account {account.name!r} ({account.id}) {done}, but X did not authenticate it: "
            f"{account.last_auth_error}. Correct its tokens (Edit) and authenticate it again.",
            "warning",
        )


async def accounts_page(request: web.Request) -> web.Response:
    return _accounts(request, FormState.defaults(ACCOUNTS.form))


async def create_account(request: web.Request) -> web.Response:
    attempt = await save(request, ACCOUNTS, ACCOUNT_NEW)
    if attempt.saved is None:
        return _accounts(request, attempt.form, attempt.status)
    # As the API does: a new account is checked with X at once.
    account = await services(request).authenticate(attempt.saved.entity.id)
    _told(session_of(request), account, "added")
    return see_other("/console/x-accounts")


def _account(
    request: web.Request, form: FormState | None = None, status: int = 200
) -> web.Response:
    account = services(request).catalog.get(ACCOUNTS, request.match_info["id"])
    form = form or FormState.of(public(account))
    context = {"account": account, "form": form, "users": _account_users(request)}
    return page(request, "x_account.html", context, status)


async def account_page(request: web.Request) -> web.Response:
    return _account(request)


async def update_account(request: web.Request) -> web.Response:
    account_id = request.match_info["id"]
    attempt = await save(request, ACCOUNTS, ACCOUNT_EDIT, entity_id=account_id)
    if attempt.saved is None:
        return _account(request, attempt.form, attempt.status)
    account = attempt.saved.entity
    assert isinstance(account, XAccount)
    if not account.authenticated:
        # New tokens are unproven until X accepts them (as PATCH does in the API).
        account = await services(request).authenticate(account.id)
    _told(session_of(request), account, "saved")
    return see_other("/console/x-accounts")


async def authenticate_account(request: web.Request) -> web.Response:
    account_id = request.match_info["id"]
    services(request).catalog.get(ACCOUNTS, account_id)
    account = await services(request).authenticate(account_id)
    _told(session_of(request), account, "checked with X")
    return see_other("/console/x-accounts")


async def delete_account(request: web.Request) -> web.Response:
    return await delete(request, ACCOUNTS, request.match_info["id"], "/console/x-accounts")


# Apps ------------------------------------------------------------------------------------


def _apps(request: web.Request, form: FormState, status: int = 200) -> web.Response:
    index = services(request).catalog.index
    context = {
        "apps": by_creation(index.apps.values()),
        "form": form,
        "choices": CHOICES,
        "trackers": _count_by_app(index.trackers.values()),
        "postbacks": _count_by_app(index.postbacks.values()),
    }
    return page(request, "apps.html", context, status)


def _count_by_app(entities: Iterable[Tracker | Postback]) -> Counter[str]:
    return Counter(e.app_id for e in entities)


async def apps_page(request: web.Request) -> web.Response:
    return _apps(request, FormState.defaults(APPS.form))


async def create_app(request: web.Request) -> web.Response:
    attempt = await save(request, APPS, APP_NEW)
    if attempt.saved is None:
        return _apps(request, attempt.form, attempt.status)
    app = attempt.saved.entity
    session_of(request).notify(
        f"App {app.name!r} created, id {app.id}. Next: its campaign, then a tracker."  # type: ignore[union-attr]
    )
    return see_other("/console/apps")


def _app(request: web.Request, form: FormState | None = None, status: int = 200) -> web.Response:
    app = services(request).catalog.get(APPS, request.match_info["id"])
    form = form or FormState.of(public(app))
    return page(request, "app.html", {"app": app, "form": form, "choices": CHOICES}, status)


async def app_page(request: web.Request) -> web.Response:
    return _app(request)


async def update_app(request: web.Request) -> web.Response:
    app_id = request.match_info["id"]
    attempt = await save(request, APPS, APP_EDIT, entity_id=app_id)
    if attempt.saved is None:
        return _app(request, attempt.form, attempt.status)
    session_of(request).notify(f"App {app_id} saved.")
    return see_other("/console/apps")


async def delete_app(request: web.Request) -> web.Response:
    return await delete(request, APPS, request.match_info["id"], "/console/apps")


# Campaigns and segments -------------------------------------------------------------------


def _campaigns(request: web.Request, form: FormState, status: int = 200) -> web.Response:
    index = services(request).catalog.index
    segments: dict[str, list[Segment]] = {}
    for segment in by_creation(index.segments.values()):
        segments.setdefault(segment.campaign_id, []).append(segment)
    context = {
        "apps": by_creation(index.apps.values()),
        "campaigns": by_creation(index.campaigns.values()),
        "segments": segments,
        "form": form,
        "app_choices": app_choices(index),
    }
    return page(request, "campaigns.html", context, status)


async def campaigns_page(request: web.Request) -> web.Response:
    apps = services(request).catalog.index.apps
    # The app named in the address, or the only one there is.
    app_id = request.query.get("app_id") or (next(iter(apps)) if len(apps) == 1 else None)
    return _campaigns(request, FormState.defaults(CAMPAIGNS.form, app_id=app_id))


async def create_campaign(request: web.Request) -> web.Response:
    attempt = await save(request, CAMPAIGNS, CAMPAIGN_NEW)
    if attempt.saved is None:
        return _campaigns(request, attempt.form, attempt.status)
    campaign = attempt.saved.entity
    assert isinstance(campaign, Campaign)
    session_of(request).notify(f"Campaign {campaign.name!r} created: now give it a segment.")
    return see_other(f"/console/campaigns/{campaign.id}")


def _campaign(
    request: web.Request,
    form: FormState | None = None,
    segment_form: FormState | None = None,
    status: int = 200,
) -> web.Response:
    index = services(request).catalog.index
    campaign = services(request).catalog.get(CAMPAIGNS, request.match_info["id"])
    assert isinstance(campaign, Campaign)
    segments = by_creation(s for s in index.segments.values() if s.campaign_id == campaign.id)
    trackers: dict[str, list[Tracker]] = {}
    for tracker in by_creation(index.trackers.values()):
        trackers.setdefault(tracker.segment_id, []).append(tracker)
    app: App = index.apps[campaign.app_id]
    context = {
        "campaign": campaign,
        "app": app,
        "segments": segments,
        "trackers": trackers,
        "form": form or FormState.of(public(campaign)),
        "segment_form": segment_form or FormState(),
    }
    return page(request, "campaign.html", context, status)


async def campaign_page(request: web.Request) -> web.Response:
    return _campaign(request)


async def update_campaign(request: web.Request) -> web.Response:
    campaign_id = request.match_info["id"]
    attempt = await save(request, CAMPAIGNS, CAMPAIGN_EDIT, entity_id=campaign_id)
    if attempt.saved is None:
        return _campaign(request, form=attempt.form, status=attempt.status)
    session_of(request).notify("Campaign saved.")
    return see_other(f"/console/campaigns/{campaign_id}")


async def delete_campaign(request: web.Request) -> web.Response:
    return await delete(request, CAMPAIGNS, request.match_info["id"], "/console/campaigns")


async def create_segment(request: web.Request) -> web.Response:
    campaign_id = request.match_info["id"]
    services(request).catalog.get(CAMPAIGNS, campaign_id)
    attempt = await save(request, SEGMENTS, SEGMENT_NEW, fixed={"campaign_id": campaign_id})
    if attempt.saved is None:
        return _campaign(request, segment_form=attempt.form, status=attempt.status)
    segment = attempt.saved.entity
    assert isinstance(segment, Segment)
    session_of(request).notify(f"Segment {segment.name!r} created: its trackers come next.")
    return see_other(f"/console/campaigns/{campaign_id}")


async def delete_segment(request: web.Request) -> web.Response:
    campaign_id = request.match_info["id"]
    segment = services(request).catalog.get(SEGMENTS, request.match_info["segment_id"])
    assert isinstance(segment, Segment)
    if segment.campaign_id != campaign_id:
        raise web.HTTPNotFound()
    here = f"/console/campaigns/{campaign_id}"
    return await delete(request, SEGMENTS, segment.id, here, back=here)
