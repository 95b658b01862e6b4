"""The seed's two forms: "Create an X Reengagement Tracker" and "Create an X Event Postback".

The tracker form has every field of PRODUCT.md section 1 with the allowed window values as
choices; once saved, the tracker's page shows its id with a copy button, to append to the
X campaign name. Like the seed's form, it ends with three buttons: Submit, Save and Add
Another Tracker, Save & Create Postback (which opens the postback form filled in for the
tracker's event).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from postbackd.catalog import Saved
from postbackd.index import Index
from postbackd.model import Postback, Tracker, public

from .config_pages import by_creation
from .editing import (
    CHOICES,
    NETWORK_LABELS,
    POSTBACKS,
    REFUSED_CHOICES,
    TRACKERS,
    app_choices,
    delay_choices,
    delete,
    save,
)
from .forms import FormState
from .render import page, see_other
from .services import services, session_of
from .session import Session

TRACKER_NEW: Final = (
    "app_id", "segment_id", "campaign_name", "segment_name", "name", "type", "network",
    "default", "x_account_ids", "bundle_id", "target_event", "post_engagement_window_days",
    "post_view_window_days", "event_matching_event",
)  # fmt: skip
# The app, the network and the campaign named at creation cannot change (rules.TRACKER).
TRACKER_EDIT: Final = tuple(n for n in TRACKER_NEW if n not in TRACKERS.form.immutable)
POSTBACK_NEW: Final = (
    "app_id", "network", "event_name", "x_app_id", "conversion_type", "x_account_id",
    "delivery_delay_s", "retry_attempts", "delivery_method", "enabled",
)  # fmt: skip
POSTBACK_EDIT: Final = tuple(n for n in POSTBACK_NEW if n not in POSTBACKS.form.immutable)


def _segment_choice(data: dict[str, object]) -> dict[str, object]:
    """The form offers an existing segment, or a campaign and segment to find or create by
    name (the API's `campaign_name` / `segment_name`, used only without `segment_id`)."""
    if data.get("segment_id") is not None:
        data.pop("campaign_name", None)
        data.pop("segment_name", None)
    else:
        data.pop("segment_id", None)
        if data.get("segment_name") is None:
            data.pop("segment_name", None)
    return data


def _account_options(index: Index) -> list[tuple[str, str, str]]:
    """Every account, the unauthenticated ones marked: choosing one is refused by the rule,
    with its message beside the field."""
    return [
        (a.id, f"{a.name} ({a.id})", "" if a.authenticated else "not authenticated")
        for a in by_creation(index.accounts.values())
    ]


def _tracker_context(
    request: web.Request, form: FormState, app_id: str | None = None
) -> dict[str, Any]:
    """What the tracker form shows; `app_id`: an existing tracker's app (the edit form)."""
    index = services(request).catalog.index
    segment_choices = []
    for segment in by_creation(index.segments.values()):
        campaign = index.campaigns[segment.campaign_id]
        if app_id is None or campaign.app_id == app_id:
            app = index.apps[campaign.app_id]
            segment_choices.append((segment.id, f"{app.name} › {campaign.name} › {segment.name}"))
    defaults = [
        (t, index.apps[t.app_id]) for t in by_creation(index.trackers.values()) if t.default
    ]
    return {
        "form": form,
        "editing": app_id is not None,
        "app_choices": app_choices(index),
        "segment_choices": segment_choices,
        "accounts": by_creation(index.accounts.values()),
        "account_options": _account_options(index),
        "defaults": defaults,
        "choices": CHOICES,
        "network_labels": NETWORK_LABELS,
    }


def _told(session: Session, saved: Saved, done: str) -> None:
    tracker = saved.entity
    assert isinstance(tracker, Tracker)
    session.notify(f"Tracker {tracker.name!r} {done}, id {tracker.id}.")
    old = saved.replaced_default
    if old is not None:
        # PRODUCT.md 1: making one default clears the flag on the previous one, named here.
        session.notify(
            f"{tracker.name!r} is now the default {NETWORK_LABELS[tracker.network]} tracker "
            f"of its app, in place of {old.name!r} ({old.id}), which is no longer default.",
            "warning",
        )


# Trackers -------------------------------------------------------------------------------


async def trackers_page(request: web.Request) -> web.Response:
    index = services(request).catalog.index
    context = {
        "apps": by_creation(index.apps.values()),
        "trackers": by_creation(index.trackers.values()),
        "index": index,
        "network_labels": NETWORK_LABELS,
    }
    return page(request, "trackers.html", context)


def _new_tracker(request: web.Request, form: FormState, status: int = 200) -> web.Response:
    return page(request, "tracker_new.html", _tracker_context(request, form), status)


async def new_tracker_page(request: web.Request) -> web.Response:
    query = request.query
    index = services(request).catalog.index
    app = index.apps.get(query.get("app_id", ""))
    if app is None and len(index.apps) == 1:
        app = next(iter(index.apps.values()))
    form = FormState.defaults(
        TRACKERS.form,
        app_id=app.id if app else None,
        network=app.network if app else None,
        segment_id=query.get("segment_id"),
    )
    return _new_tracker(request, form)


async def create_tracker(request: web.Request) -> web.Response:
    attempt = await save(request, TRACKERS, TRACKER_NEW, shape=_segment_choice)
    if attempt.saved is None:
        return _new_tracker(request, attempt.form, attempt.status)
    tracker = attempt.saved.entity
    assert isinstance(tracker, Tracker)
    _told(session_of(request), attempt.saved, "created")
    then = (await request.post()).get("then")
    if then == "another":
        return see_other(
            "/console/trackers/new", app_id=tracker.app_id, segment_id=tracker.segment_id
        )
    if then == "postback":
        return see_other(
            "/console/postbacks/new",
            app_id=tracker.app_id,
            network=tracker.network,
            event_name=tracker.event_matching_event,
            conversion_type=tracker.target_event,
        )
    return see_other(f"/console/trackers/{tracker.id}")


def _tracker(
    request: web.Request, form: FormState | None = None, status: int = 200
) -> web.Response:
    index = services(request).catalog.index
    tracker = services(request).catalog.get(TRACKERS, request.match_info["id"])
    assert isinstance(tracker, Tracker)
    segment = index.segments[tracker.segment_id]
    context = _tracker_context(request, form or FormState.of(public(tracker)), tracker.app_id)
    context.update(
        tracker=tracker,
        app=index.apps[tracker.app_id],
        segment=segment,
        campaign=index.campaigns[segment.campaign_id],
        postbacks=[
            p for p in by_creation(index.postbacks.values())
            if p.app_id == tracker.app_id and p.network == tracker.network
        ],
    )  # fmt: skip
    return page(request, "tracker.html", context, status)


async def tracker_page(request: web.Request) -> web.Response:
    return _tracker(request)


async def update_tracker(request: web.Request) -> web.Response:
    tracker_id = request.match_info["id"]
    attempt = await save(request, TRACKERS, TRACKER_EDIT, entity_id=tracker_id)
    if attempt.saved is None:
        return _tracker(request, attempt.form, attempt.status)
    _told(session_of(request), attempt.saved, "saved")
    return see_other(f"/console/trackers/{tracker_id}")


async def delete_tracker(request: web.Request) -> web.Response:
    return await delete(request, TRACKERS, request.match_info["id"], "/console/trackers")


# Postbacks ------------------------------------------------------------------------------


def _postback_context(request: web.Request, form: FormState, editing: bool) -> dict[str, Any]:
    index = services(request).catalog.index
    return {
        "form": form,
        "editing": editing,
        "app_choices": app_choices(index),
        "account_choices": [
            (a.id, f"{a.name} ({a.id})" + ("" if a.authenticated else ", not authenticated"))
            for a in by_creation(index.accounts.values())
        ],
        "choices": {**CHOICES, "delivery_delay_s": delay_choices(form.value("delivery_delay_s"))},
        "refused_choices": REFUSED_CHOICES,
        "network_labels": NETWORK_LABELS,
    }


async def postbacks_page(request: web.Request) -> web.Response:
    index = services(request).catalog.index
    context = {
        "apps": by_creation(index.apps.values()),
        "postbacks": by_creation(index.postbacks.values()),
        "network_labels": NETWORK_LABELS,
        "delays": dict(delay_choices()),
    }
    return page(request, "postbacks.html", context)


def _new_postback(request: web.Request, form: FormState, status: int = 200) -> web.Response:
    return page(request, "postback_new.html", _postback_context(request, form, False), status)


async def new_postback_page(request: web.Request) -> web.Response:
    query = request.query
    index = services(request).catalog.index
    app = index.apps.get(query.get("app_id", ""))
    if app is None and len(index.apps) == 1:
        app = next(iter(index.apps.values()))
    form = FormState.defaults(
        POSTBACKS.form,
        app_id=app.id if app else None,
        network=query.get("network") or (app.network if app else None),
        event_name=query.get("event_name"),
        conversion_type=query.get("conversion_type"),
    )
    return _new_postback(request, form)


async def create_postback(request: web.Request) -> web.Response:
    attempt = await save(request, POSTBACKS, POSTBACK_NEW)
    if attempt.saved is None:
        return _new_postback(request, attempt.form, attempt.status)
    postback = attempt.saved.entity
    assert isinstance(postback, Postback)
    app = services(request).catalog.index.apps[postback.app_id]
    session_of(request).notify(
        f"Postback saved: from now on, every {postback.event_name!r} event of {app.name!r} "
        f"is sent to X as {postback.conversion_type}"
        + ("." if postback.enabled else " once it is enabled.")
    )
    return see_other("/console/postbacks")


def _postback(
    request: web.Request, form: FormState | None = None, status: int = 200
) -> web.Response:
    postback = services(request).catalog.get(POSTBACKS, request.match_info["id"])
    assert isinstance(postback, Postback)
    context = _postback_context(request, form or FormState.of(public(postback)), True)
    context.update(postback=postback, app=services(request).catalog.index.apps[postback.app_id])
    return page(request, "postback.html", context, status)


async def postback_page(request: web.Request) -> web.Response:
    return _postback(request)


async def update_postback(request: web.Request) -> web.Response:
    postback_id = request.match_info["id"]
    attempt = await save(request, POSTBACKS, POSTBACK_EDIT, entity_id=postback_id)
    if attempt.saved is None:
        return _postback(request, attempt.form, attempt.status)
    session_of(request).notify("Postback saved; it applies from the next event.")
    return see_other("/console/postbacks")


async def delete_postback(request: web.Request) -> web.Response:
    return await delete(request, POSTBACKS, request.match_info["id"], "/console/postbacks")


async def cancel_postback_deliveries(request: web.Request) -> web.Response:
    """PRODUCT.md 2: the postback's deliveries that have not gone out become cancelled."""
    postback_id = request.match_info["id"]
    services(request).catalog.get(POSTBACKS, postback_id)
    count = await services(request).results.cancel_pending(None, postback_id)
    session_of(request).notify(
        f"{count} deliveries of this postback cancelled (requests already at X finish)."
    )
    return see_other(f"/console/postbacks/{postback_id}")
