"""CSRF protection of every console form (OWASP's synchronizer token pattern).

A signed-in form carries its session's token in a hidden field, which another site cannot
read; a POST whose field is missing or differs is refused (403) before anything is done.
The sign-in form has no session yet: it carries an HMAC of a random nonce kept in a
short-lived cookie of its own (a signed double-submit token), so that another site cannot
sign a browser in either. SameSite=Strict cookies are a second wall, not the only one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from aiohttp import web

from .session import Session, is_https

FIELD: Final = "csrf_token"
SIGN_IN_COOKIE: Final = "postbackd_console_sign_in"
SIGN_IN_PATH: Final = "/console/sign-in"
SIGN_IN_MAX_AGE_S: Final = 3600


def session_form_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf_token.encode())


class SignInTokens:
    """Tokens of the sign-in form, bound to a nonce cookie by a key of this process."""

    def __init__(self) -> None:
        # Made per process and never shown: a restart only means reloading the sign-in page.
        self._key = secrets.token_bytes(32)

    def _token(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str]:
        """A fresh nonce (for `set_nonce`) and the token of the form's hidden field."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._token(nonce)

    @staticmethod
    def set_nonce(request: web.Request, response: web.StreamResponse, nonce: str) -> None:
        response.set_cookie(
            SIGN_IN_COOKIE,
            nonce,
            max_age=SIGN_IN_MAX_AGE_S,
            path=SIGN_IN_PATH,
            httponly=True,
            samesite="Strict",
            secure=is_https(request),
        )

    def check(self, request: web.Request, given: str | None) -> bool:
        nonce = request.cookies.get(SIGN_IN_COOKIE)
        if not nonce or given is None:
            return False
        return hmac.compare_digest(given.encode(), self._token(nonce).encode())

    @staticmethod
    def clear(request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            SIGN_IN_COOKIE,
            "",
            max_age=0,
            path=SIGN_IN_PATH,
            httponly=True,
            samesite="Strict",
            secure=is_https(request),
        )
