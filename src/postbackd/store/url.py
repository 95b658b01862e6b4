"""`database_url`: which store holds the state (PRODUCT.md 5).

    unset, or sqlite:                        the embedded store, in the data dir
    postgresql://user:pass@host:5432/db      a shared store (postgres:// is the same)

Pure (no driver), so the settings can check it at start. A URL may hold a password: errors
never quote the URL, and logs show `shown`, the URL with its password replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

EMBEDDED: Final = "sqlite:"
SHARED_SCHEMES: Final = ("postgresql", "postgres")
HIDDEN: Final = "***"

Kind = Literal["sqlite", "postgresql"]


def redact_url(url: str) -> str:
    """`url` with its password (in the user info or a `password=` parameter) replaced by
    ***; a URL that cannot be read is hidden whole."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return HIDDEN
    netloc = parts.netloc
    if password is not None:
        user_info, _, host = netloc.rpartition("@")
        user = user_info.partition(":")[0]
        netloc = f"{user}:{HIDDEN}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == "password" for k, _ in pairs):
            query = urlencode([(k, HIDDEN if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    kind: Kind
    # As given, for the driver: it may hold a password, so never logged; `shown` is.
    url: str = field(repr=False)
    shown: str
    # Kept out of every log line (logs.register_secret).
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, value: str | None) -> DatabaseUrl:
        """Parse `database_url` (None or "" is the embedded store); `ValueError` says what
        is wrong without quoting the URL (it may hold a password)."""
        if not value or value == EMBEDDED:
            return cls("sqlite", EMBEDDED, EMBEDDED)
        scheme, colon, rest = value.partition(":")
        if not colon:
            raise ValueError("expected sqlite: or postgresql://user:password@host:5432/database")
        if scheme == "sqlite":
            raise ValueError(
                "the embedded store lives in data_dir: give sqlite: alone (or leave it unset)"
            )
        if scheme not in SHARED_SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme[:20]!r}: expected sqlite: or postgresql://"
                "user:password@host:5432/database"
            )
        if not rest.startswith("//"):
            raise ValueError("expected postgresql://user:password@host:5432/database")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (reading it is what checks the port)
            password = parts.password
        except ValueError:
            raise ValueError(
                "the host or port cannot be read: expected postgresql://user:password@"
                "host:5432/database (a password with : @ / # ? in it is percent-encoded)"
            ) from None
        if parts.fragment:
            raise ValueError("a database URL has no #fragment")
        database = parts.path.lstrip("/")
        if "/" in database:
            raise ValueError("the path is the database name: one segment, such as /postbackd")
        for key, given in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password":
                password = given
        return cls("postgresql", value, redact_url(value), password)
