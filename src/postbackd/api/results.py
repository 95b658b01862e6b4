"""Results under /api/v1: deliveries, their replay and cancelling, events, attributions,
reports. Reads go to a `Reader` (their own connections), never through the writer's thread,
so a long report does not hold up an ingest commit."""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web

from postbackd.catalog import Catalog
from postbackd.delivery.engine import Engine
from postbackd.delivery.model import STATES
from postbackd.errors import Invalid, NotFound
from postbackd.store import deliveries as sql
from postbackd.store import results
from postbackd.store.reader import Reader
from postbackd.store.writer import Writer

from .http import json_response, read_object

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
MAX_REPLAY_IDS: Final = 100_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(text)


class ResultRoutes:
    def __init__(
        self,
        reader: Reader,
        writer: Writer,
        engine: Engine,
        catalog: Catalog,
        max_body_bytes: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._engine = engine
        self._catalog = catalog
        self._max_body_bytes = max_body_bytes

    def add_to(self, app: web.Application, prefix: str = "/api/v1") -> None:
        app.router.add_get(f"{prefix}/deliveries", self.deliveries)
        app.router.add_post(f"{prefix}/deliveries/replay", self.replay)
        app.router.add_post(f"{prefix}/deliveries/cancel", self.cancel)
        app.router.add_get(f"{prefix}/events/{{event_id}}", self.event)
        app.router.add_get(f"{prefix}/attributions", self.attributions)
        app.router.add_get(f"{prefix}/reports/trackers", self.report)

    async def deliveries(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state not in STATES:
            raise Invalid(f"state must be one of {', '.join(STATES)}", field="state")
        in_flight = frozenset(self._engine.in_flight_ids())
        items = await self._reader.call(
            results.list_deliveries, state, _limit(request), _now_ms(), in_flight
        )
        return json_response({"items": items, "count": len(items)})

    async def replay(self, request: web.Request) -> web.Response:
        data = await read_object(request, self._max_body_bytes)
        unknown = set(data) - {"ids", "state"}
        if unknown:
            raise Invalid("unknown field for a replay", field=sorted(unknown)[0])
        ids = data.get("ids")
        if ("ids" in data) == ("state" in data):
            raise Invalid('give either "ids" or "state": "dead"', field="ids")
        if "state" in data and data["state"] != "dead":
            raise Invalid('only dead deliveries are replayed: "state": "dead"', field="state")
        if ids is not None and (
            not isinstance(ids, list)
            or len(ids) > MAX_REPLAY_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise Invalid(f"ids must be a list of at most {MAX_REPLAY_IDS} delivery ids",
                          field="ids")  # fmt: skip
        now = _now_ms()
        chosen = None if ids is None else list(ids)
        lanes = await self._writer.submit(lambda conn: sql.replay_dead(conn, chosen, now))
        self._engine.rewind_lanes(dict.fromkeys(lanes, now))
        return json_response({"replayed": sum(lanes.values())})

    async def cancel(self, request: web.Request) -> web.Response:
        """PRODUCT.md 2, "Delivery states": deliveries that have not gone out become
        `cancelled`, by ids or all of a postback; requests already at X finish."""
        data = await read_object(request, self._max_body_bytes)
        unknown = set(data) - {"ids", "postback_id"}
        if unknown:
            raise Invalid("unknown field for a cancel", field=sorted(unknown)[0])
        if ("ids" in data) == ("postback_id" in data):
            raise Invalid('give either "ids" or "postback_id"', field="ids")
        ids = data.get("ids")
        postback_id = data.get("postback_id")
        if ids is not None and (
            not isinstance(ids, list)
            or len(ids) > MAX_REPLAY_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise Invalid(f"ids must be a list of at most {MAX_REPLAY_IDS} delivery ids",
                          field="ids")  # fmt: skip
        if postback_id is not None and not isinstance(postback_id, str):
            raise Invalid("postback_id must be a postback id (a string)", field="postback_id")
        count = await self._engine.cancel(ids, postback_id)
        return json_response({"cancelled": count})

    async def event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        in_flight = frozenset(self._engine.in_flight_ids())
        found = await self._reader.call(results.event_details, event_id, _now_ms(), in_flight)
        if found is None:
            raise NotFound(f"event {event_id!r} does not exist", field="event_id")
        return json_response(found)

    async def attributions(self, request: web.Request) -> web.Response:
        q = request.query
        items = await self._reader.call(
            results.list_attributions, q.get("app_id"), q.get("tracker_id"), _limit(request)
        )
        return json_response({"items": items, "count": len(items)})

    async def report(self, request: web.Request) -> web.Response:
        app_id = request.query.get("app_id")
        if app_id is not None and app_id not in self._catalog.index.apps:
            raise NotFound(f"app {app_id!r} does not exist", field="app_id")
        by_tracker = await self._reader.call(results.tracker_report, app_id)
        trackers = self._catalog.index.trackers
        rows = []
        for tracker_id, figures in sorted(by_tracker.items()):
            tracker = trackers.get(tracker_id)
            rows.append({
                "tracker_id": tracker_id or None,
                "tracker_name": tracker.name if tracker else None,
                **figures,
            })  # fmt: skip
        return json_response({"items": rows, "count": len(rows)})
