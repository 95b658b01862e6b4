from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from oauthlib.oauth1.rfc5849 import signature

from postbackd.x.client import XClient
from postbackd.x.oauth import OAuth1Signer, encode_pairs
from postbackd.x.response import RateLimitInfo, ResponseKind, XResponse, classify

CONSUMER_KEY = "consumer key/1"
CONSUMER_SECRET = "consumer+secret&2"
TOKEN = "1234-account token"
TOKEN_SECRET = "token secret=3"
BASE = "https://ads-api.test"
ACCOUNT_URL = f"{BASE}/12/accounts/18ce54d4x5t"
PARAMS = [
    ("app_id", "333903271"),
    ("os_type", "IOS"),
    ("hashed_device_id", "aGFzaA+/eA=="),
    ("conversion_type", "PURCHASE"),
    ("conversion_time", "2026-11-28T12:00:00.123Z"),
]


class CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` that aiohttp 3.14
    requires (pnuckowski/aioresponses#289); supply a finished writer's byte count."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def reply(mock: aioresponses, method: str, url: str, **kwargs: Any) -> None:
    mock.add(url, method, response_class=CompatResponse, **kwargs)


def oauthlib_verifies(method: str, url: str, authorization: str, token_secret: str) -> bool:
    """Recompute the signature with oauthlib's RFC 5849 functions from what was sent."""
    params = signature.collect_parameters(
        uri_query=urlsplit(url).query,
        headers={"Authorization": authorization},
        exclude_oauth_signature=False,
    )
    oauth = dict(params)
    assert oauth["oauth_consumer_key"] == CONSUMER_KEY
    assert oauth["oauth_token"] == TOKEN
    request = SimpleNamespace(
        uri=url,
        http_method=method,
        params=[p for p in params if p[0] != "oauth_signature"],
        signature=oauth["oauth_signature"],
    )
    return bool(signature.verify_hmac_sha1(request, CONSUMER_SECRET, token_secret))


@pytest.fixture
async def client() -> AsyncIterator[XClient]:
    x = XClient.create(
        base_url=BASE,
        api_version="12",
        signer=OAuth1Signer(CONSUMER_KEY, CONSUMER_SECRET),
        max_connections=4,
        timeout_s=2.0,
    )
    try:
        yield x
    finally:
        await x.close()


def test_no_answer_is_retryable() -> None:
    assert classify(0) is ResponseKind.RETRYABLE


# --- The account check goes through aiohttp: narrow tests of that path with aioresponses.


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), "timeout ("),
        (aiohttp.ServerDisconnectedError(), "connection error: ServerDisconnectedError"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection error: ClientOSE"),
        (aiohttp.ClientPayloadError("truncated"), "connection error: ClientPayloadError"),
    ],
)
async def test_account_check_failures_become_reasons(
    client: XClient, exception: Exception, error: str
) -> None:
    with aioresponses() as mock:
        reply(mock, "GET", ACCOUNT_URL, exception=exception)
        check = await client.check_account("18ce54d4x5t", TOKEN, TOKEN_SECRET)
    assert check.ok is False
    assert check.error is not None and check.error.startswith(error)


async def test_account_check_cancellation_propagates(client: XClient) -> None:
    with aioresponses() as mock:
        reply(mock, "GET", ACCOUNT_URL, exception=asyncio.CancelledError())
        with pytest.raises(asyncio.CancelledError):
            await client.check_account("18ce54d4x5t", TOKEN, TOKEN_SECRET)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-rate-limit-limit": "x", "x-rate-limit-remaining": ""}, None),
        ({"x-rate-limit-remaining": "-1", "x-rate-limit-reset": "1.5"}, None),
        ({"x-rate-limit-remaining": " 7 "}, RateLimitInfo(None, 7, None)),
        (
            {"x-rate-limit-limit": "60000", "x-rate-limit-reset": "soon"},
            RateLimitInfo(60000, None, None),
        ),
    ],
)
def test_rate_limit_headers_tolerate_garbage(
    headers: dict[str, str], expected: RateLimitInfo | None
) -> None:
    assert RateLimitInfo.from_headers(headers) == expected


async def test_check_account_ok(client: XClient) -> None:
    with aioresponses() as mock:
        reply(mock, "GET", ACCOUNT_URL, status=200, body=b'{"data": {}}')
        check = await client.check_account("18ce54d4x5t", TOKEN, TOKEN_SECRET)
    assert check.ok is True
    assert check.error is None


async def test_check_account_refused_names_status_and_code(client: XClient) -> None:
    body = orjson.dumps(
        {"errors": [{"code": "UNAUTHORIZED_ACCESS", "message": "This request is not properly"}]}
    )
    with aioresponses() as mock:
        reply(mock, "GET", ACCOUNT_URL, status=401, body=body)
        check = await client.check_account("18ce54d4x5t", TOKEN, TOKEN_SECRET)
    assert check.ok is False
    assert check.error == "HTTP 401 UNAUTHORIZED_ACCESS: This request is not properly"
    for secret in (CONSUMER_SECRET, TOKEN_SECRET, TOKEN):
        assert secret not in check.error


async def test_check_account_garbage_error_body(client: XClient) -> None:
    with aioresponses() as mock:
        reply(mock, "GET", f"{BASE}/12/accounts/a", status=503, body=b"<html>")
        check = await client.check_account("a", TOKEN, TOKEN_SECRET)
    assert check == check.__class__(ok=False, error="HTTP 503")


async def test_check_account_timeout(client: XClient) -> None:
    with aioresponses() as mock:
        reply(mock, "GET", f"{BASE}/12/accounts/a", exception=TimeoutError())
        check = await client.check_account("a", TOKEN, TOKEN_SECRET)
    assert check.ok is False
    assert check.error == "timeout"


def test_describe_bounds_long_messages() -> None:
    body = orjson.dumps({"errors": [{"code": "INVALID_PARAMETER", "message": "m" * 5000}]})
    reason = XResponse(status=400, body=body, rate_limit=None, duration_s=0.1).describe()
    assert reason.startswith("HTTP 400 INVALID_PARAMETER: mmm")
    assert len(reason) < 300


# --- On the wire: a real loopback server recomputes the signature from what it received.

# Values that a second round of encoding, or a '+' read as a space, would corrupt.
WIRE_PARAMS = [
    ("app_id", "com.example.game"),
    ("os_type", "ANDROID"),
    ("hashed_device_id", "ab+/cd=="),
    ("conversion_type", "PURCHASE"),
    ("conversion_time", "2026-11-28T12:00:00.123Z"),
    ("note", "a b+c/d:e&f=g%20h"),
    ("price_currency", "€ünï☃ \U0001f600"),
    ("empty", ""),
    ("dup", "2"),
    ("dup", "1"),
]


RATE_HEADERS = {
    "x-rate-limit-limit": "60000",
    "X-Rate-Limit-Remaining": "41",
    "x-rate-limit-reset": "1764331200",
}


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.peers: list[object] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        # raw_path is the request target exactly as it arrived, not re-encoded by aiohttp.
        url = f"http://{request.host}{request.raw_path}"
        self.requests.append((request.method, url, request.headers["Authorization"]))
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        if request.query.get("app_id") == "slow":
            await self.release.wait()
        return web.json_response(
            {"data": {}}, status=int(request.query.get("status", "200")), headers=RATE_HEADERS
        )


@pytest.fixture
async def wire() -> AsyncIterator[tuple[Recorder, XClient]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    x = XClient.create(
        base_url=str(server.make_url("")),
        api_version="12",
        signer=OAuth1Signer(CONSUMER_KEY, CONSUMER_SECRET),
        max_connections=2,
        timeout_s=0.3,
    )
    try:
        yield recorder, x
    finally:
        recorder.release.set()
        await x.close()
        await server.close()


async def test_wire_query_equals_the_signed_one(wire: tuple[Recorder, XClient]) -> None:
    recorder, x = wire
    response = await x.send_conversion(WIRE_PARAMS, TOKEN, TOKEN_SECRET)
    assert response.kind is ResponseKind.OK
    [(method, url, authorization)] = recorder.requests
    assert method == "POST"
    assert urlsplit(url).path == "/12/conversion_event"
    # Byte for byte the query we encoded, and it decodes back to the parameters.
    query = urlsplit(url).query
    assert query == "&".join(f"{k}={v}" for k, v in encode_pairs(WIRE_PARAMS))
    assert parse_qsl(query, keep_blank_values=True) == WIRE_PARAMS
    assert oauthlib_verifies("POST", url, authorization, TOKEN_SECRET)
    # The check can fail: a wrong secret or a changed parameter no longer verifies.
    assert not oauthlib_verifies("POST", url, authorization, "another secret")
    assert not oauthlib_verifies("POST", url.replace("ANDROID", "IOS"), authorization, TOKEN_SECRET)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, ResponseKind.OK),
        (201, ResponseKind.OK),
        (400, ResponseKind.PERMANENT),
        (401, ResponseKind.UNAUTHORIZED),
        (403, ResponseKind.PERMANENT),
        (404, ResponseKind.PERMANENT),
        (408, ResponseKind.RETRYABLE),
        (409, ResponseKind.PERMANENT),
        (429, ResponseKind.RATE_LIMITED),
        (500, ResponseKind.RETRYABLE),
        (502, ResponseKind.RETRYABLE),
        (503, ResponseKind.RETRYABLE),
        (504, ResponseKind.RETRYABLE),
        (302, ResponseKind.PERMANENT),  # redirects are not followed: X never sends one
    ],
)
async def test_wire_status_classification(
    wire: tuple[Recorder, XClient], status: int, kind: ResponseKind
) -> None:
    _, x = wire
    response = await x.send_conversion([("status", str(status))], TOKEN, TOKEN_SECRET)
    assert response.status == status
    assert response.kind is kind
    assert response.error is None
    assert response.body == b'{"data": {}}'
    assert response.rate_limit == RateLimitInfo(limit=60000, remaining=41, reset_epoch_s=1764331200)
    assert response.duration_s >= 0


async def test_wire_account_check_signed_path(wire: tuple[Recorder, XClient]) -> None:
    recorder, x = wire
    check = await x.check_account("18ce/54 d4", TOKEN, TOKEN_SECRET)
    assert check.ok is True
    [(method, url, authorization)] = recorder.requests
    assert method == "GET"
    assert urlsplit(url).path == "/12/accounts/18ce%2F54%20d4"
    assert oauthlib_verifies("GET", url, authorization, TOKEN_SECRET)


async def test_wire_keeps_connections_alive(wire: tuple[Recorder, XClient]) -> None:
    recorder, x = wire
    for _ in range(5):
        assert (await x.send_conversion(PARAMS, TOKEN, TOKEN_SECRET)).kind is ResponseKind.OK
    # Sequential requests reuse one pooled connection: the server sees one client port.
    assert len(recorder.peers) == 5
    assert len(set(recorder.peers)) == 1


async def test_wire_timeout(wire: tuple[Recorder, XClient]) -> None:
    recorder, x = wire
    response = await x.send_conversion([("app_id", "slow")], TOKEN, TOKEN_SECRET)
    assert response.status == 0
    assert response.kind is ResponseKind.RETRYABLE
    assert response.error is not None and response.error.startswith("timeout")
    assert 0.25 <= response.duration_s < 10  # above: a hang, not a slow machine
    assert len(recorder.requests) == 1  # X got the request and was too slow to answer


async def test_wire_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now listens on nothing
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    x = XClient.create(
        base_url=f"http://127.0.0.1:{port}",
        api_version="12",
        signer=OAuth1Signer(CONSUMER_KEY, CONSUMER_SECRET),
        max_connections=1,
        timeout_s=1.0,
    )
    try:
        response = await x.send_conversion(PARAMS, TOKEN, TOKEN_SECRET)
    finally:
        await x.close()
    assert response.status == 0
    assert response.kind is ResponseKind.RETRYABLE
    assert response.error is not None and response.error.startswith("connection error:")
    assert TOKEN_SECRET not in response.error
