"""JSON in and out, errors as `{"error": {...}}`, and the bearer-token guard."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web

from postbackd.errors import (
    ApiError,
    BadRequest,
    NotFound,
    StoreUnavailable,
    TooLarge,
    Unauthorized,
)
from postbackd.logs import RateLimitedLog
from postbackd.metrics import UNAUTHORIZED_REASONS, Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON: Final = "application/json"
# A failing store fails every request alike: the reason once a minute is enough.
_STORE_FAILURES = RateLimitedLog(log)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    if error.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return web.Response(
        body=orjson.dumps(error.to_json()),
        status=error.status,
        content_type=JSON,
        headers=headers,
    )


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"the body is over the {max_bytes} byte limit", field="body")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the body is over the {max_bytes} byte limit", field="body") from None


def parse_json(body: bytes) -> object:
    if not body.strip():
        raise BadRequest("the body is empty: send a JSON object", field="body", code="empty_body")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"the body is not UTF-8 (invalid byte at offset {e.start})",
            field="body",
            code="invalid_encoding",
        ) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(
            f"the body is not valid JSON: {e}", field="body", code="invalid_json"
        ) from None


async def read_object(request: web.Request, max_bytes: int) -> dict[str, object]:
    data = parse_json(await read_body(request, max_bytes))
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", field="body", code="not_an_object")
    return data


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound("no such path", field="path")
    if exc.status == 413:
        return TooLarge("the body is over the size limit", field="body")
    error = ApiError(exc.reason or "request refused", code=exc.reason.lower().replace(" ", "_"))
    error.status = exc.status
    return error


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreUnavailable as e:
        # Answered (503, nothing changed), never left hanging (PRODUCT.md 2, "Store failures").
        _STORE_FAILURES.warning("store", f"{request.method} {request.path}: {e.message}")
        return error_response(e)
    except ApiError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # A 405 says which methods the path takes (RFC 9110, 15.5.6).
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return error_response(_from_http(e), allow)
    except Exception:
        # A bug, not bad input: say so without echoing anything of the request.
        log.exception("internal error on %s %s", request.method, request.path)
        error = ApiError("internal error; see the daemon's log", code="internal")
        return error_response(error)


# Everything but health and metrics (which Prometheus scrapes without a token) needs the
# bearer token: the admin API, the results, and ingest, which would otherwise let anyone
# who reaches the port make claims at X. `open_paths` are exceptions under those prefixes
# (the OpenAPI description: no data, and tools read it before they have a token).
GUARDED: Final = ("/api/", "/track/")


def auth_middleware(
    token: str,
    metrics: Metrics,
    refusals: RateLimitedLog | None = None,
    open_paths: frozenset[str] | set[str] = frozenset(),
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse guarded paths (but `open_paths`) without the bearer token; count and log each
    refusal.

    The log says where the request came from and what it asked for, never what it sent as
    a token (a wrong token is often a real one of another daemon, or a typo of this one's).
    One line a minute at most, with the count of the others: a scanner must not flood it.
    """
    expected = f"Bearer {token}".encode()
    refusals = refusals or RateLimitedLog(log)
    counters = {reason: metrics.api_unauthorized.labels(reason) for reason in UNAUTHORIZED_REASONS}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(GUARDED) and request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                reason = "wrong" if given else "missing"
                counters[reason].inc()
                refusals.warning(
                    "unauthorized",
                    "refused a request with a missing or wrong bearer token (401)",
                    reason=reason,
                    method=request.method,
                    path=request.path,
                    remote=request.remote,
                )
                raise Unauthorized(
                    "missing or wrong bearer token (Authorization: Bearer <token>)",
                    field="Authorization",
                )
        return await handler(request)

    return middleware
