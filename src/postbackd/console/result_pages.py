"""The results: deliveries by state (the API's cursor paging), replay of dead ones and
cancelling of pending ones, one event's claims with every rejected candidate and why, and
the report per tracker drawn as charts. Each read and each action is a call of the API's
`ResultRoutes` (the daemon's reader, writer and engine), so the console shows and does
exactly what the API would."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

import orjson
from aiohttp import web

from postbackd.delivery.model import STATES
from postbackd.errors import ApiError, BadRequest

from .charts import bar_chart
from .editing import NETWORK_LABELS
from .render import page, see_other
from .services import services, session_of

PAGE_SIZE: Final = 50
REPLAYABLE: Final = frozenset({"dead"})
CANCELLABLE: Final = frozenset({"scheduled", "ready", "held"})

STATE_HELP: Final = {
    "scheduled": "waiting for the postback's delivery delay",
    "ready": "due, waiting for its X account's turn",
    "in_flight": "the request is at X",
    "delivered": "X answered",
    "skipped": "not sent (for example no usable device id)",
    "held": "waiting for an authenticated X account to sign it",
    "dead": "retries used up, or refused by X for good: can be replayed",
    "cancelled": "cancelled by an operator",
}
OUTCOME_LABELS: Final = {
    "attributed": "Attributed: a re-engagement attribution",
    "claimed": "Claimed by X (no new attribution for this event)",
    "not_claimed": "Not claimed: X sent no candidate",
    "no_tracker": "No tracker for the app and network",
    "rejected_data_sharing": "Rejected: the user does not allow data sharing",
    "rejected_outside_window": "Rejected: outside the tracker's window",
    "rejected_invalid_time": "Rejected: engagement after the conversion",
    "rejected_malformed": "Rejected: X's candidate cannot be judged",
    "outranked": "Outranked by a better candidate",
}
# The same reasons, short enough for a chart's label.
GAP_LABELS: Final = {
    "no_tracker": "No tracker",
    "rejected_data_sharing": "No data sharing",
    "rejected_outside_window": "Outside the window",
    "rejected_invalid_time": "Engaged after converting",
    "rejected_malformed": "Cannot be judged",
}


def _ids(values: list[str]) -> list[int] | list[str]:
    """Delivery ids from checkboxes; anything else goes on as typed, for the API's check."""
    if all(v.isascii() and v.isdecimal() for v in values):
        return [int(v) for v in values]
    return values


async def deliveries_page(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    # The API's own paging: its limit (checked by it) and its cursors.
    limit = request.query.get("limit")
    query = {"limit": limit or str(PAGE_SIZE)}
    if cursor := request.query.get("cursor"):
        query["cursor"] = cursor
    try:
        answer = await services(request).results.delivery_page(query, state)
    except BadRequest as e:
        return page(request, "error.html", {"status": 400, "message": e.message}, 400)
    following = answer.get("next")
    next_url = None
    if isinstance(following, str):
        shown = {"state": state, "limit": limit, "cursor": following}
        next_url = "/console/deliveries?" + urlencode({k: v for k, v in shown.items() if v})
    context = {
        "state": state,
        "next_url": next_url,
        "states": STATES,
        "state_help": STATE_HELP,
        "answer": answer,
        "postbacks": services(request).catalog.index.postbacks,
        "first_page": cursor is None,
        "replayable": REPLAYABLE,
        "cancellable": CANCELLABLE,
    }
    return page(request, "deliveries.html", context)


async def replay(request: web.Request) -> web.Response:
    posted = await request.post()
    every = posted.get("all") == "dead"
    chosen = [v for v in posted.getall("ids", []) if isinstance(v, str)]
    session = session_of(request)
    if not every and not chosen:
        session.notify("Tick the dead deliveries to replay first.", "warning")
        return see_other("/console/deliveries", state="dead")
    try:
        count = await services(request).results.replay_dead(None if every else _ids(chosen))
    except ApiError as e:
        session.notify(f"Nothing replayed: {e.message}", "warning")
    else:
        session.notify(f"{count} dead deliveries replayed: they go out again now.")
    return see_other("/console/deliveries", state="dead")


async def cancel(request: web.Request) -> web.Response:
    posted = await request.post()
    chosen = [v for v in posted.getall("ids", []) if isinstance(v, str)]
    back = posted.get("state")
    back_state = back if isinstance(back, str) and back in STATES else None
    session = session_of(request)
    if not chosen:
        session.notify("Tick the deliveries to cancel first.", "warning")
        return see_other("/console/deliveries", state=back_state)
    try:
        count = await services(request).results.cancel_pending(_ids(chosen), None)
    except ApiError as e:
        session.notify(f"Nothing cancelled: {e.message}", "warning")
    else:
        session.notify(f"{count} deliveries cancelled (requests already at X finish).")
    return see_other("/console/deliveries", state=back_state)


async def event_page(request: web.Request) -> web.Response:
    event_id = request.query.get("event_id", "").strip()
    context: dict[str, Any] = {
        "event_id": event_id,
        "found": None,
        "missing": False,
        "labels": OUTCOME_LABELS,
    }
    if not event_id:
        return page(request, "event.html", context)
    found = await services(request).results.event_details(event_id)
    if found is None:
        context["missing"] = True
        return page(request, "event.html", context, 404)
    index = services(request).catalog.index
    event = found["event"]
    context.update(
        found=found,
        event=event,
        event_data=orjson.dumps(event.get("event_data") or {}, option=orjson.OPT_INDENT_2).decode(),
        trackers=index.trackers,
        postbacks=index.postbacks,
        app=index.apps.get(event.get("app_id", "")),
        state_help=STATE_HELP,
    )
    return page(request, "event.html", context)


def _charts(row: dict[str, Any]) -> dict[str, Any]:
    x_claimed: int = row["x_claimed"]
    accepted: int = row["accepted"]
    gap = x_claimed - accepted
    attributions: dict[str, int] = row["attributions"]
    return {
        "claimed": bar_chart(
            "X claimed and accepted",
            [
                ("X claimed", x_claimed, "claimed"),
                ("Accepted", accepted, "accepted"),
                ("Not accepted (the gap)", gap, "gap"),
            ],
        ),
        "gap": bar_chart(
            "The gap by reason",
            [(GAP_LABELS.get(r, r), n, "gap") for r, n in row["not_accepted"].items()],
            scale=x_claimed,
        ),
        "attributions": bar_chart(
            "Re-engagement attributions by engagement type",
            [(kind, attributions.get(kind, 0), kind.lower()) for kind in ("CLICK", "VIEW")],
        ),
    }


async def report_page(request: web.Request) -> web.Response:
    app_id = request.query.get("app_id") or None
    index = services(request).catalog.index
    try:
        rows = await services(request).results.tracker_report(app_id)
    except ApiError as e:
        return page(request, "error.html", {"status": e.status, "message": e.message}, e.status)
    # Trackers first; the claims that reached no tracker (and what X did not claim) last.
    rows.sort(key=lambda row: row["tracker_id"] is None)
    context = {
        "app_id": app_id,
        "apps": sorted(index.apps.values(), key=lambda a: (a.created_at, a.id)),
        "rows": [{**row, "charts": _charts(row)} for row in rows],
        "trackers": index.trackers,
        "labels": OUTCOME_LABELS,
        "network_labels": NETWORK_LABELS,
    }
    return page(request, "report.html", context)
