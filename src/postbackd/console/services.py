"""What the console's pages work with: the daemon's own catalog, authentication and results
(the objects the API uses, so no rule is checked twice), and the console's sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from postbackd.api.admin import Authenticate
from postbackd.api.results import ResultRoutes
from postbackd.catalog import Catalog

from .csrf import SignInTokens
from .session import Session, Sessions
from .throttle import Throttle


@dataclass(frozen=True, slots=True)
class Services:
    catalog: Catalog
    authenticate: Authenticate
    results: ResultRoutes
    # The API token signs in; it is compared, never shown nor logged.
    api_token: str = field(repr=False)
    sessions: Sessions = field(default_factory=Sessions)
    sign_in: SignInTokens = field(default_factory=SignInTokens)
    throttle: Throttle = field(default_factory=Throttle)


SERVICES: Final = web.AppKey("console_services", Services)
# Set on each request by the guard (security.py) once its session is known.
SESSION: Final = web.RequestKey("console_session", Session)
SESSION_KEY: Final = web.RequestKey("console_session_key", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def session_of(request: web.Request) -> Session:
    assert SESSION in request, "a guarded page runs with a session"
    return request[SESSION]
