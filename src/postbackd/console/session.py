"""Console sessions: made at sign-in with the API token, held by the daemon, named by a cookie.

The cookie carries a random session key and nothing else; the daemon keeps each session
under the SHA-256 of its key, with its CSRF token, its expiry and the notices waiting to be
shown. Sessions live in memory: a restart signs everyone out, and signing out ends the
session at once (a stolen cookie is worth nothing after it). The key is a secret: it is
never logged, and the API does not take it (the API wants `Authorization: Bearer <token>`,
which a session key is not).

    cookie                       HttpOnly, SameSite=Strict, Path=/console, Max-Age, and
                                 Secure when the console is reached over HTTPS
    lifetime                     LIFETIME_S from sign-in, whatever the activity
    idle                         IDLE_S without a request ends it sooner
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import web

COOKIE: Final = "postbackd_console"
COOKIE_PATH: Final = "/console"
LIFETIME_S: Final = 8 * 3600
IDLE_S: Final = 3600
# Sessions are made only with the right token, but a bound keeps memory flat whatever
# happens: past it, the least recently used session ends.
MAX_SESSIONS: Final = 1000
KEY_BYTES: Final = 32

Level = Literal["info", "warning"]


@dataclass(frozen=True, slots=True)
class Notice:
    """A line shown once on the next page (after a form was saved, for example)."""

    text: str
    level: Level = "info"


@dataclass(slots=True)
class Session:
    csrf_token: str
    expires_at: float
    last_seen: float
    notices: list[Notice] = field(default_factory=list)

    def notify(self, text: str, level: Level = "info") -> None:
        self.notices.append(Notice(text, level))

    def take_notices(self) -> list[Notice]:
        taken, self.notices = self.notices, []
        return taken


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Sessions:
    """The signed-in sessions of this process."""

    def __init__(
        self,
        *,
        lifetime_s: float = LIFETIME_S,
        idle_s: float = IDLE_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime_s = lifetime_s
        self._idle_s = idle_s
        self._max = max_sessions
        self._clock = clock
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self) -> tuple[str, Session]:
        """A new session and its key (for the cookie; the only time the key is seen)."""
        now = self._clock()
        key = secrets.token_urlsafe(KEY_BYTES)
        session = Session(secrets.token_urlsafe(KEY_BYTES), now + self.lifetime_s, now)
        self._by_digest[_digest(key)] = session
        while len(self._by_digest) > self._max:
            self._by_digest.popitem(last=False)
        return key, session

    def get(self, key: str | None) -> Session | None:
        """The live session of `key`; an expired or idle one is ended and None returned."""
        if not key:
            return None
        digest = _digest(key)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at or now - session.last_seen >= self._idle_s:
            del self._by_digest[digest]
            return None
        session.last_seen = now
        self._by_digest.move_to_end(digest)
        return session

    def end(self, key: str | None) -> None:
        if key:
            self._by_digest.pop(_digest(key), None)


def is_https(request: web.Request) -> bool:
    """Whether the browser reached the console over HTTPS, directly or through a proxy that
    ended TLS. Trusting the proxy's header can only add `Secure`, which at worst makes a
    forger's own cookie useless on plain HTTP."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, key: str, max_age_s: float
) -> None:
    response.set_cookie(
        COOKIE,
        key,
        max_age=int(max_age_s),
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.set_cookie(
        COOKIE,
        "",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
