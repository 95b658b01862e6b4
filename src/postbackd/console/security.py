"""The console's middlewares, outermost first:

headers      security headers on every answer of the console, pages, redirects, errors
             and static files alike
error_pages  any failure becomes an HTML page (the API's JSON errors are for the API)
guard        no page without a live session (GET: to the sign-in form; POST: 403), and
             no POST without its session's CSRF token (403, nothing done)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from postbackd.errors import ApiError, StoreUnavailable

from .csrf import FIELD, SIGN_IN_PATH, session_form_ok
from .render import page, see_other
from .services import SESSION, SESSION_KEY, services
from .session import COOKIE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_PREFIX: Final = "/console/static/"

# No inline script or style anywhere: scripts and styles come from the console's own static
# files only, so an injected tag could run nothing even if escaping ever failed. Charts are
# SVG elements in the page, coloured by the stylesheet's classes.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(HEADERS)
        raise
    response.headers.update(HEADERS)
    # Pages hold configuration and results: not kept by the browser or a proxy. Static
    # files may be kept, revalidated each time (they change with a new version).
    cache = "no-cache" if request.path.startswith(STATIC_PREFIX) else "no-store"
    response.headers["Cache-Control"] = cache
    return response


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return page(request, "error.html", {"status": status, "message": message}, status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 404:
            return error_page(request, 404, "There is no such page in the console.")
        return error_page(request, e.status, e.reason)
    except StoreUnavailable as e:
        log.warning("console %s %s: %s", request.method, request.path, e.message)
        return error_page(request, 503, "The store cannot be read right now; try again soon.")
    except ApiError as e:
        # An object named in the address that does not exist (404), mostly.
        return error_page(request, e.status, e.message)
    except Exception:
        log.exception("internal error on console %s %s", request.method, request.path)
        return error_page(request, 500, "Internal error; the daemon's log says more.")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The sign-in form checks its own token (it has no session yet).
    if request.path.startswith(STATIC_PREFIX) or request.path == SIGN_IN_PATH:
        return await handler(request)
    key = request.cookies.get(COOKIE)
    session = services(request).sessions.get(key)
    if session is None or key is None:
        if request.method in ("GET", "HEAD"):
            return see_other(SIGN_IN_PATH, next=request.path_qs)
        return error_page(
            request, 403, "You are not signed in (or your session ended): sign in again."
        )
    request[SESSION] = session
    request[SESSION_KEY] = key
    if request.method not in ("GET", "HEAD"):
        posted = await request.post()
        given = posted.get(FIELD)
        if not session_form_ok(session, given if isinstance(given, str) else None):
            log.warning(
                "console: refused a %s to %s without its form's CSRF token (403)",
                request.method,
                request.path,
            )
            return error_page(
                request,
                403,
                "This form did not come from this console page, or the page is out of date "
                "(its security token is missing or wrong). Nothing was changed: reload the "
                "page and try again.",
            )
    return await handler(request)
