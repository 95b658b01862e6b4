"""`/_mock/` endpoints: inspect and steer the simulated X (no OAuth; loopback use only).

Routes::

    GET   /_mock/stats                     counters, also per account (`by_account`)
    GET   /_mock/requests?limit=&offset=   the request log, oldest first
    GET   /_mock/receipts?limit=&offset=   claims answered 200: device, time received
                                           (`receipt_log` on; monotonic clock)
    POST  /_mock/reset                     clear the log, the counters and the rate windows
    GET   /_mock/config                    the settings, without credentials
    PATCH /_mock/config                    change faults, rate limit, claims; revoke/restore;
                                           `account_faults` replaces every account's own
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from postbackd.mockx.state import STATE

_DEFAULT_PAGE: Final = 100


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_mock/stats", stats)
    app.router.add_get("/_mock/requests", requests)
    app.router.add_get("/_mock/receipts", receipts)
    app.router.add_post("/_mock/reset", reset)
    app.router.add_get("/_mock/config", get_config)
    app.router.add_patch("/_mock/config", patch_config)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refuse(message: str) -> web.Response:
    return _json({"error": {"code": "invalid", "message": message}}, status=400)


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].recorder.stats())


def _page(request: web.Request) -> tuple[int, int] | web.Response:
    """The (limit, offset) of a paged read, or the answer refusing them."""
    try:
        limit = int(request.query.get("limit", _DEFAULT_PAGE))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        return _refuse("limit and offset must be integers")
    if limit < 0 or offset < 0:
        return _refuse("limit and offset must not be negative")
    return limit, offset


async def requests(request: web.Request) -> web.Response:
    page = _page(request)
    if isinstance(page, web.Response):
        return page
    return _json(request.app[STATE].recorder.requests(*page))


async def receipts(request: web.Request) -> web.Response:
    page = _page(request)
    if isinstance(page, web.Response):
        return page
    return _json(request.app[STATE].recorder.receipts_page(*page))


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.recorder.clear()
    state.limiter.clear()
    return _json({"reset": True})


async def get_config(request: web.Request) -> web.Response:
    return _json(request.app[STATE].view())


async def patch_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _refuse("the body must be a JSON object")
    if not isinstance(changes, dict):
        return _refuse("the body must be a JSON object")
    try:
        state.reconfigure(changes)
    except ValueError as exc:
        return _refuse(str(exc))
    return _json(state.view())
