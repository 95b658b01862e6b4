"""`event_stream_url`: where the stream is and how this daemon reads it, from one URL.

    redis://[:password@]host[:port][/db]?stream=NAME[&group=NAME][&consumer=NAME]
        [&dead_letter=NAME][&dead_letter_maxlen=ENTRIES][&claim_idle_s=SECONDS]

`rediss://` is the same over TLS. The query parameters are postbackd's own; the rest of the
URL goes to redis-py as it is. Pure (no Redis client), so the settings can check it at start.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SCHEMES: Final = ("redis", "rediss")
DEFAULT_GROUP: Final = "postbackd"
# A member silent this long is taken for dead and its pending entries are taken over. Long
# enough that a slow commit (a store busy for seconds) is never mistaken for a dead member.
DEFAULT_CLAIM_IDLE_S: Final = 60.0
# The dead-letter stream keeps the newest this many entries: a producer that sends nothing
# but bad entries for months must not fill Redis's memory. Plenty to see what went wrong;
# `postbackd_stream_dead_lettered_total` counts every one.
DEFAULT_DEAD_LETTER_MAXLEN: Final = 100_000
PARAMETERS: Final = (
    "stream", "group", "consumer", "dead_letter", "dead_letter_maxlen", "claim_idle_s"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StreamConfig:
    # What redis-py connects to: the URL without postbackd's parameters. It may hold a
    # password: never logged, `shown` is.
    redis_url: str = field(repr=False)
    stream: str
    group: str
    consumer: str
    dead_letter: str
    dead_letter_maxlen: int
    claim_idle_s: float
    # The URL for logs and errors: no password, no parameters.
    shown: str
    # Kept out of every log line (logs.register_secret).
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> StreamConfig:
        """Parse `event_stream_url`; `ValueError` says what is wrong without the URL itself
        (it may hold a password)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("expected redis://host:port/db?stream=NAME") from None
        if parts.scheme not in SCHEMES:
            given = f", not {parts.scheme}://" if parts.scheme and "://" in url else ""
            raise ValueError(f"expected a redis:// or rediss:// URL{given}")
        if not parts.hostname:
            raise ValueError("expected a host: redis://host:port/db?stream=NAME")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"the path must be a database number, such as /0, not /{db}")
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in PARAMETERS:
                raise ValueError(f"unknown parameter {key!r} (known: {', '.join(PARAMETERS)})")
            if key in params:
                raise ValueError(f"parameter {key!r} given twice")
            if not value.strip():
                raise ValueError(f"parameter {key!r} is empty")
            params[key] = value
        stream = params.get("stream")
        if stream is None:
            raise ValueError("the stream parameter is required: ?stream=NAME")
        dead_letter = params.get("dead_letter", f"{stream}:dead")
        if dead_letter == stream:
            raise ValueError("dead_letter must name another stream than stream")
        dead_letter_maxlen = _entries(params.get("dead_letter_maxlen"))
        claim_idle_s = _seconds(params.get("claim_idle_s"))
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if port is None else f"{host}:{port}"
        return cls(
            redis_url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            stream=stream,
            group=params.get("group", DEFAULT_GROUP),
            # Unique per process: a restarted daemon is a new member, and the old one's
            # pending entries are taken over after `claim_idle_s`.
            consumer=params.get("consumer", f"{socket.gethostname()}-{os.getpid()}"),
            dead_letter=dead_letter,
            dead_letter_maxlen=dead_letter_maxlen,
            claim_idle_s=claim_idle_s,
            shown=urlunsplit((parts.scheme, netloc, parts.path, "", "")),
            password=parts.password,
        )


def _entries(value: str | None) -> int:
    if value is None:
        return DEFAULT_DEAD_LETTER_MAXLEN
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise ValueError(
            f"dead_letter_maxlen must be a whole number of entries above 0, not {value!r}"
        )
    return int(value)


def _seconds(value: str | None) -> float:
    if value is None:
        return DEFAULT_CLAIM_IDLE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"claim_idle_s must be a number of seconds above 0, not {value!r}")
    return seconds
