"""The simulated X Ads API: `GET /{version}/accounts/{id}` and `POST /{version}/conversion_event`,
in the wire format of the reference (x-ads-conversion-api.md), plus `/_mock/` controls.

A claim request goes through X's checks in this order: query syntax, outage switch, OAuth
signature and token, rate budget, injected faults, parameters, app allow-list, attribution.
Rate budget and faults are those of the signing token's account (`account_faults.py`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import orjson
from aiohttp import web

from postbackd.mockx import control
from postbackd.mockx.config import MockConfig
from postbackd.mockx.faults import draw, reset_connection
from postbackd.mockx.oauth import OAuthRejected, TokenGrant, base_string_prefix
from postbackd.mockx.params import XError, parse_conversion
from postbackd.mockx.query import Query, parse_query
from postbackd.mockx.records import Fault
from postbackd.mockx.state import STATE, MockState

_ERROR_CODES: Final = {500: "INTERNAL_ERROR", 503: "SERVICE_UNAVAILABLE"}


class _Call:
    """One X call being answered: what the answer echoes, carries and records."""

    __slots__ = (
        "account",
        "endpoint",
        "fault",
        "headers",
        "params",
        "profile",
        "query",
        "request",
        "state",
        "token",
    )

    def __init__(self, request: web.Request, endpoint: str) -> None:
        self.request = request
        self.state = request.app[STATE]
        self.endpoint = endpoint
        self.query = request.rel_url.raw_query_string
        self.params: dict[str, str] = {}
        self.token: str | None = None
        self.headers: dict[str, str] = {}
        self.fault: Fault | None = None
        # The signing token's first account, once authenticated, and its faults and budget.
        self.account: str | None = None
        self.profile = self.state.profile

    def answer(self, status: int, body: object) -> web.Response:
        self.record(status)
        return web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type="application/json",
            headers=self.headers,
        )

    def error(self, status: int, *errors: XError) -> web.Response:
        # Reference, "Errors": {"errors": [{"code", "message", "parameter"}], "request": {...}}.
        body = {"errors": [e.to_json() for e in errors], "request": {"params": self.params}}
        return self.answer(status, body)

    def record(self, status: int | None) -> None:
        request = self.request
        self.state.recorder.record(
            self.endpoint,
            time.time(),
            request.method,
            request.path,
            self.query,
            self.token,
            status,
            self.fault,
            # `by_account` counts claim requests only.
            self.account if self.endpoint == "conversion_event" else None,
        )

    def parse_query(self) -> Query | web.Response:
        """The query's name/value pairs (OAuth parameter collection, RFC 5849 3.4.1.3.1)."""
        try:
            query = parse_query(self.query)
        except ValueError:
            return self.error(400, XError("INVALID_PARAMETER", "the query string is malformed"))
        self.params = dict(query.pairs)
        return query

    def authenticate(self, query: Query) -> TokenGrant | web.Response:
        """The grant of the known, unrevoked token that signed the call, else X's 401."""
        request = self.request
        url = f"{request.scheme}://{request.host}{request.rel_url.raw_path}"
        try:
            token = self.state.verifier.verify(
                base_string_prefix(request.method, url),
                query.encoded,
                request.headers.get("Authorization"),
            )
        except OAuthRejected as exc:
            return self.error(401, XError("UNAUTHORIZED_ACCESS", str(exc)))
        self.token = token
        grant = self.state.verifier.grants[token]
        # Random claims name the same account (`conversion_event`).
        self.account = account = grant.account_ids[0]
        self.profile = self.state.profile_of(account)
        if token in self.state.revoked:
            self.headers = self.budget_headers()
            return self.error(401, XError("UNAUTHORIZED_ACCESS", "this token was revoked"))
        return grant

    def spend_budget(self) -> web.Response | None:
        """None when the token's rate budget allows the call; else X's 429."""
        profile = self.profile
        state = self.state.limiter.take(
            (self.endpoint, self.token), profile.rate_limit, profile.rate_window_s
        )
        self.headers = state.headers()
        if state.allowed:
            return None
        return self.error(429, XError("TOO_MANY_REQUESTS", "rate limit exceeded"))

    def budget_headers(self) -> dict[str, str]:
        """The token's rate budget as it stands, for answers that do not spend it."""
        profile = self.profile
        key = (self.endpoint, self.token)
        return self.state.limiter.peek(key, profile.rate_limit, profile.rate_window_s).headers()


async def conversion_event(request: web.Request) -> web.StreamResponse:
    # When the request reached X, for the receipt log: before X's own work and delays.
    received_s = time.monotonic()
    call = _Call(request, "conversion_event")
    config = call.state.config
    if request.match_info["version"] != config.api_version:
        return _not_found(call)
    query = call.parse_query()
    if isinstance(query, web.Response):
        return query
    if config.outage:
        call.fault = "outage"
        return call.error(503, XError("SERVICE_UNAVAILABLE", "X is unavailable (outage)"))
    grant = call.authenticate(query)
    if isinstance(grant, web.Response):
        return grant
    refused = call.spend_budget()
    if refused is not None:
        return refused

    plan = draw(call.profile, call.state.fault_rng)
    if plan.kind == "reset":
        call.fault = "reset"
        call.record(None)
        reset_connection(request.transport)
        # Nothing reaches the client: aiohttp drops this answer on the closed transport.
        return web.Response()
    if plan.delay_s:
        await asyncio.sleep(plan.delay_s)
    if plan.kind == "timeout":
        # Held far longer than a client waits; X still records the conversion afterwards.
        call.fault = "timeout"
        call.state.recorder.record_hold()
        await asyncio.sleep(config.timeout_hold_s)
    elif plan.kind == "error":
        call.fault = "error"
        status = plan.error_status
        return call.error(status, XError(_ERROR_CODES[status], "injected server error"))

    conversion = parse_conversion(query.pairs)
    if isinstance(conversion, list):
        return call.error(400, *conversion)
    if config.apps is not None and conversion.app_id not in config.apps:
        return call.error(
            404, XError("MACT_APP_NOT_FOUND", "no such app for this partner", "app_id")
        )
    # Random claims (and script entries without one) name the token's first account.
    twitter, tpn = call.state.claims.answer(conversion, config, grant.account_ids[0])
    call.state.recorder.record_conversion(
        (conversion.hashed_device_id, conversion.conversion_type, call.params["conversion_time"]),
        tuple(node for node, answer in (("twitter", twitter), ("tpn", tpn)) if answer),
        received_s,
    )
    data = {
        "app_id": conversion.app_id,
        "os_type": conversion.os_type,
        "hashed_device_id": conversion.hashed_device_id,
        "conversion_type": conversion.conversion_type,
        "conversion_time": call.params["conversion_time"],
        "click_window": conversion.click_window,
        "view_through_window": conversion.view_through_window,
        "twitter_attribution": twitter,
        "tpn_attribution": tpn,
    }
    return call.answer(200, {"request": {"params": call.params}, "data": data})


async def account(request: web.Request) -> web.StreamResponse:
    call = _Call(request, "accounts")
    if request.match_info["version"] != call.state.config.api_version:
        return _not_found(call)
    account_id = request.match_info["account_id"]
    query = call.parse_query()
    if isinstance(query, web.Response):
        return query
    call.params = {"account_id": account_id, **call.params}
    grant = call.authenticate(query)
    if isinstance(grant, web.Response):
        return grant
    # Reference, "The call": a signed read answers 200 only for a token with access.
    if account_id not in grant.account_ids:
        call.headers = call.budget_headers()
        return call.error(401, XError("UNAUTHORIZED_ACCESS", "no access to this account"))
    # The account's rate limit applies, its latency and faults do not: authenticating an
    # account stays quick whatever its claim requests are made to suffer.
    refused = call.spend_budget()
    if refused is not None:
        return refused
    name = next(a.name for a in call.state.config.accounts if a.id == account_id)
    data = {"id": account_id, "name": name, "approval_status": "ACCEPTED", "deleted": False}
    return call.answer(200, {"request": {"params": call.params}, "data": data})


async def unknown_path(request: web.Request) -> web.StreamResponse:
    return _not_found(_Call(request, "not_found"))


def _not_found(call: _Call) -> web.Response:
    call.endpoint = "not_found"
    return call.error(404, XError("NOT_FOUND", "no such resource in this API version"))


def make_app(config: MockConfig) -> web.Application:
    app = web.Application()
    app[STATE] = MockState(config)
    control.add_routes(app)
    app.router.add_get("/{version}/accounts/{account_id}", account)
    app.router.add_post("/{version}/conversion_event", conversion_event)
    app.router.add_route("*", "/{tail:.*}", unknown_path)
    return app


async def start_mock(
    config: MockConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the mock in this event loop; the caller ends it with `await runner.cleanup()`.
    Port 0 picks a free port; the base URL names the real one."""
    # Held (timeout fault) requests are cut after a second at shutdown, not a minute.
    runner = web.AppRunner(make_app(config), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    netloc = f"[{host}]" if ":" in host else host
    return runner, f"http://{netloc}:{bound_port}"
