"""Signing in with the API token, and out.

The token typed into the form is compared in constant time and never put back into a page
or a log line; a right one opens a session (session.py) whose cookie is all the browser
keeps. A wrong one is answered 401 beside the field, counted per address (throttle.py) and
logged, at most once a minute, with the address but nothing typed.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from postbackd.logs import RateLimitedLog

from .csrf import FIELD, SIGN_IN_PATH
from .forms import FORM_ERROR, FormState
from .render import page, safe_next, see_other
from .services import SESSION_KEY, services
from .session import COOKIE, clear_session_cookie, set_session_cookie

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)


def _form(
    request: web.Request, state: FormState, next_page: str, status: int = 200
) -> web.Response:
    s = services(request)
    nonce, token = s.sign_in.issue()
    context = {"form": state, "next": next_page, "sign_in_token": token}
    response = page(request, "sign_in.html", context, status)
    s.sign_in.set_nonce(request, response, nonce)
    return response


async def sign_in_form(request: web.Request) -> web.Response:
    next_page = safe_next(request.query.get("next"))
    if services(request).sessions.get(request.cookies.get(COOKIE)) is not None:
        return see_other(next_page)
    state = FormState()
    if "signed_out" in request.query:
        state.values["signed_out"] = True
    return _form(request, state, next_page)


async def sign_in(request: web.Request) -> web.Response:
    s = services(request)
    posted = await request.post()
    next_page = safe_next(_text(posted.get("next")))
    state = FormState()
    who = request.remote or "unknown"
    if not s.sign_in.check(request, _text(posted.get(FIELD))):
        state.errors[FORM_ERROR] = (
            "The sign-in form was out of date (or your browser refused its cookie); "
            "type the token again."
        )
        return _form(request, state, next_page, 403)
    if s.throttle.blocked(who):
        state.errors["token"] = "Too many wrong tokens from your address: wait a minute."
        return _form(request, state, next_page, 429)
    given = _text(posted.get("token")) or ""
    if not hmac.compare_digest(given.strip().encode(), s.api_token.encode()):
        s.throttle.failed(who)
        _refusals.warning(
            "console_sign_in", "console: refused a sign-in with a wrong API token", remote=who
        )
        state.errors["token"] = (
            "This is not the daemon's API token (the value of POSTBACKD_API_TOKEN, or the "
            "api-token file in its data directory)."
            if given
            else "Type the daemon's API token."
        )
        return _form(request, state, next_page, 401)
    s.throttle.succeeded(who)
    key, session = s.sessions.create()
    session.notify("Signed in.")
    response = see_other(next_page)
    set_session_cookie(response, request, key, s.sessions.lifetime_s)
    s.sign_in.clear(request, response)
    return response


async def sign_out(request: web.Request) -> web.Response:
    services(request).sessions.end(request[SESSION_KEY])
    response = see_other(SIGN_IN_PATH, signed_out="1")
    clear_session_cookie(response, request)
    return response


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
