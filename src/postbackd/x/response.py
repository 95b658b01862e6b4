"""One answer of X (or its absence), classified the way the delivery engine acts on it.

Reference, "Errors" and "Rate limits".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from postbackd.x.answer import parse_errors

# Longest X error message kept in a human reason: enough to read, bounded for storage.
_MAX_MESSAGE_CHARS = 200


class NoAnswer(StrEnum):
    """Why a request got no HTTP answer (the `status_class` of the request metric)."""

    TIMEOUT = "timeout"  # X took longer than the timeout (connecting or answering)
    CONNECTION = "connection_error"  # refused, reset, closed, or an answer that is not HTTP
    # Never sent: no pooled connection came free in time. Not X's failure.
    POOL_TIMEOUT = "pool_timeout"


class ResponseKind(StrEnum):
    OK = "ok"  # 2xx
    RATE_LIMITED = "rate_limited"  # 429: wait for the window to reset, no retry used
    UNAUTHORIZED = "unauthorized"  # 401: the account's token no longer works
    RETRYABLE = "retryable"  # 5xx, 408, timeout, connection error: retry with backoff
    PERMANENT = "permanent"  # any other status (400, 403, 404, ...): dead letter


def classify(status: int) -> ResponseKind:
    """Reference, "Errors"; status 0 means no HTTP answer (timeout or connection error)."""
    if status == 200:  # nearly every answer: one comparison
        return ResponseKind.OK
    if 200 <= status < 300:
        return ResponseKind.OK
    if status == 429:
        return ResponseKind.RATE_LIMITED
    if status == 401:
        return ResponseKind.UNAUTHORIZED
    if status in (0, 408) or status >= 500:
        return ResponseKind.RETRYABLE
    return ResponseKind.PERMANENT


# Not frozen, for the reason Event is not (postbackd/event.py): made per answer of X.
@dataclass(slots=True)
class RateLimitInfo:
    """X's `x-rate-limit-*` headers; a field is None when missing or not a number."""

    limit: int | None
    remaining: int | None
    reset_epoch_s: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """None when the answer carries none of the three headers in a readable form."""
        limit = _count(headers.get("x-rate-limit-limit"))
        remaining = _count(headers.get("x-rate-limit-remaining"))
        reset_epoch_s = _count(headers.get("x-rate-limit-reset"))
        if limit is None and remaining is None and reset_epoch_s is None:
            return None
        return cls(limit, remaining, reset_epoch_s)


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


_STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}


@dataclass(slots=True)
class XResponse:
    """What one request to X came back with.

    `status` is 0, `failure` says what kind of failure and `error` says why in words when
    no HTTP answer arrived.
    """

    status: int
    body: bytes
    rate_limit: RateLimitInfo | None
    duration_s: float
    error: str | None = None
    failure: NoAnswer | None = None  # set when status is 0

    @property
    def kind(self) -> ResponseKind:
        return classify(self.status)

    @property
    def sent(self) -> bool:
        """False when the request never left (X saw nothing, so nothing is used up)."""
        return self.failure is not NoAnswer.POOL_TIMEOUT

    @property
    def status_class(self) -> str:
        """`2xx` ... `5xx`, or why there was no answer (`timeout`, `connection_error`)."""
        if self.status == 0:
            return (self.failure or NoAnswer.CONNECTION).value
        return _STATUS_CLASSES.get(self.status // 100) or f"{self.status // 100}xx"

    def describe(self) -> str:
        """A human reason, e.g. `HTTP 400 INVALID_PARAMETER: ...` or `timeout`."""
        if self.status == 0:
            return self.error or "no answer"
        code, message = parse_errors(self.body)
        reason = f"HTTP {self.status}"
        if code:
            reason += f" {code}"
        if message:
            reason += f": {message[:_MAX_MESSAGE_CHARS]}"
        return reason
