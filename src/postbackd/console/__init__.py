"""The web console at /console (PRODUCT.md section 6): the seed's workflow for a marketer
who never uses curl, as server-rendered HTML forms that work without JavaScript.

    app.py            the sub-application: templates, static files, middlewares, routes
    security.py       security headers, HTML error pages, the session and CSRF guard
    session.py        sessions opened by signing in with the API token; the cookie
    csrf.py           the CSRF tokens of the forms (the sign-in form's too)
    signin.py         signing in and out; throttle.py brakes token guessing
    config_pages.py   X accounts, apps, campaigns and segments
    tracker_pages.py  reengagement trackers and postbacks (the seed's two forms)
    result_pages.py   deliveries (replay, cancel), one event's claims, the tracker report
    editing.py        saving through the API's Catalog; the forms' choices from rules.py
    forms.py          HTML form <-> the API's JSON fields, refusals beside their fields
    charts.py         server-side SVG bar charts
    templates/, static/

Nothing here checks a rule of its own: configuration goes through the same `Catalog`
calls as the admin API and results through the same `ResultRoutes` reads and actions.
"""

from __future__ import annotations

from .app import make_console

__all__ = ["make_console"]
