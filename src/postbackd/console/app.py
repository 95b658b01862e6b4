"""The console as an aiohttp sub-application mounted at /console: its templates, its static
files, its middlewares and its routes, in the order of the seed's workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from postbackd.api.admin import Authenticate
from postbackd.api.results import ResultRoutes
from postbackd.catalog import Catalog

from . import config_pages as config
from . import result_pages, signin
from . import tracker_pages as trackers
from .render import ROOT, page, see_other
from .security import error_pages, guard, headers
from .services import SERVICES, Services, services

HERE: Final = Path(__file__).parent


async def home(request: web.Request) -> web.Response:
    """The seed's steps, each with how far this daemon's configuration has come."""
    index = services(request).catalog.index
    accounts = index.accounts.values()
    context = {
        "accounts": len(accounts),
        "authenticated": sum(1 for a in accounts if a.authenticated),
        "apps": len(index.apps),
        "campaigns": len(index.campaigns),
        "segments": len(index.segments),
        "trackers": len(index.trackers),
        "postbacks": len(index.postbacks),
        "enabled": sum(1 for p in index.postbacks.values() if p.enabled),
    }
    return page(request, "home.html", context)


async def to_home(_: web.Request) -> web.Response:
    return see_other(ROOT + "/")


def make_console(
    *, catalog: Catalog, authenticate: Authenticate, results: ResultRoutes, api_token: str
) -> web.Application:
    """The console, to mount with `app.add_subapp("/console", ...)`."""
    app = web.Application(middlewares=[headers, error_pages, guard])
    app[SERVICES] = Services(
        catalog=catalog, authenticate=authenticate, results=results, api_token=api_token
    )
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Every value is escaped: a tracker named <script> shows as text.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    add = app.router
    add.add_get("", to_home)
    add.add_get("/", home)
    add.add_get("/sign-in", signin.sign_in_form)
    add.add_post("/sign-in", signin.sign_in)
    add.add_post("/sign-out", signin.sign_out)

    add.add_get("/x-accounts", config.accounts_page)
    add.add_post("/x-accounts", config.create_account)
    add.add_get("/x-accounts/{id}", config.account_page)
    add.add_post("/x-accounts/{id}", config.update_account)
    add.add_post("/x-accounts/{id}/authenticate", config.authenticate_account)
    add.add_post("/x-accounts/{id}/delete", config.delete_account)

    add.add_get("/apps", config.apps_page)
    add.add_post("/apps", config.create_app)
    add.add_get("/apps/{id}", config.app_page)
    add.add_post("/apps/{id}", config.update_app)
    add.add_post("/apps/{id}/delete", config.delete_app)

    add.add_get("/campaigns", config.campaigns_page)
    add.add_post("/campaigns", config.create_campaign)
    add.add_get("/campaigns/{id}", config.campaign_page)
    add.add_post("/campaigns/{id}", config.update_campaign)
    add.add_post("/campaigns/{id}/delete", config.delete_campaign)
    add.add_post("/campaigns/{id}/segments", config.create_segment)
    add.add_post("/campaigns/{id}/segments/{segment_id}/delete", config.delete_segment)

    add.add_get("/trackers", trackers.trackers_page)
    add.add_get("/trackers/new", trackers.new_tracker_page)
    add.add_post("/trackers", trackers.create_tracker)
    add.add_get("/trackers/{id}", trackers.tracker_page)
    add.add_post("/trackers/{id}", trackers.update_tracker)
    add.add_post("/trackers/{id}/delete", trackers.delete_tracker)

    add.add_get("/postbacks", trackers.postbacks_page)
    add.add_get("/postbacks/new", trackers.new_postback_page)
    add.add_post("/postbacks", trackers.create_postback)
    add.add_get("/postbacks/{id}", trackers.postback_page)
    add.add_post("/postbacks/{id}", trackers.update_postback)
    add.add_post("/postbacks/{id}/delete", trackers.delete_postback)
    add.add_post("/postbacks/{id}/cancel", trackers.cancel_postback_deliveries)

    add.add_get("/deliveries", result_pages.deliveries_page)
    add.add_post("/deliveries/replay", result_pages.replay)
    add.add_post("/deliveries/cancel", result_pages.cancel)
    add.add_get("/events", result_pages.event_page)
    add.add_get("/report", result_pages.report_page)

    add.add_static("/static", HERE / "static", append_version=False)
    return app
