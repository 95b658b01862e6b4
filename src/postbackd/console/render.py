"""Pages out: a template with what every page shows (the session's notices, the CSRF token
of its forms), and redirects after a form was saved (POST, then 303, then GET)."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
from aiohttp import web

from .services import SESSION

ROOT: Final = "/console"


def page(
    request: web.Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    common = {
        "signed_in": session is not None,
        "csrf_token": session.csrf_token if session else "",
        "notices": session.take_notices() if session else [],
        "path": request.path,
    }
    return aiohttp_jinja2.render_template(
        template, request, {**common, **(context or {})}, status=status
    )


def see_other(path: str, **query: str | None) -> web.Response:
    """303: the browser GETs `path` (a page of the console) after a form was posted."""
    shown = {k: v for k, v in query.items() if v}
    location = path + ("?" + urlencode(shown) if shown else "")
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of this console, never another site."""
    if not target:
        return ROOT + "/"
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or "\\" in target
        or not (parts.path == ROOT or parts.path.startswith(ROOT + "/"))
        or target.startswith("//")
    ):
        return ROOT + "/"
    return target
