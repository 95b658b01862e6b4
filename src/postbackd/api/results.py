"""Results under /api/v1: deliveries, their replay and cancelling, events, attributions,
reports, read from the store (the embedded store reads on connections of their own, so a
long report does not hold up an ingest commit)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, TypeGuard, cast

from aiohttp import web

from postbackd.catalog import Catalog
from postbackd.delivery.engine import Engine
from postbackd.delivery.model import STATES
from postbackd.errors import BadRequest, Invalid, NotFound
from postbackd.store.base import MAX_ID, Key, Row, Store, delivery_key_size

from .http import json_response, read_object
from .paging import PAGING_PARAMETERS, Paging, single_values


def _key(row: Row) -> Key:
    return row[0]


def _item(row: Row) -> dict[str, Any]:
    return row[1]


def _after(paging: Paging) -> Key | None:
    """The cursor's key, integers only: the shape the results lists decode cursors with."""
    return cast("Key | None", paging.after)


MAX_REPLAY_IDS: Final = 100_000
DELIVERY_FILTERS: Final = ("state",)
ATTRIBUTION_FILTERS: Final = ("app_id", "tracker_id")
REPORT_FILTERS: Final = ("app_id",)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _query(
    request: web.Request, filters: tuple[str, ...], *, paged: bool = True
) -> tuple[dict[str, str], dict[str, str]]:
    """The query's parameters and, of them, the filters; any other parameter is refused."""
    query = single_values(request.query)
    known = (*filters, *(sorted(PAGING_PARAMETERS) if paged else ()))
    for name in query:
        if name not in known:
            raise BadRequest(
                f"unknown query parameter {name!r} (known: {', '.join(known)})",
                field=name,
                code="invalid_parameter",
            )
    return query, {k: v for k, v in query.items() if k in filters}


def _delivery_ids(ids: object) -> TypeGuard[list[int]]:
    """A list of delivery ids (64-bit integers), not too long."""
    return (
        isinstance(ids, list)
        and len(ids) <= MAX_REPLAY_IDS
        and all(type(i) is int and 0 <= i <= MAX_ID for i in ids)
    )


def _check_ids(ids: object) -> list[int]:
    """`ids` as a list of delivery ids, or refused (null included: it is not "every
    delivery" when a body gives it)."""
    if not _delivery_ids(ids):
        raise Invalid(f"ids must be a list of at most {MAX_REPLAY_IDS} delivery ids",
                      field="ids")  # fmt: skip
    return ids


class ResultRoutes:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        catalog: Catalog,
        max_body_bytes: int,
    ) -> None:
        self._store = store
        self._engine = engine
        self._catalog = catalog
        self._max_body_bytes = max_body_bytes

    async def pending_deliveries(self, postback_id: str) -> int:
        """Deliveries of a postback that have not gone out yet (scheduled, ready, held)."""
        return await self._store.pending_of_postback(postback_id)

    def add_to(self, app: web.Application, prefix: str = "/api/v1") -> None:
        app.router.add_get(f"{prefix}/deliveries", self.deliveries)
        app.router.add_post(f"{prefix}/deliveries/replay", self.replay)
        app.router.add_post(f"{prefix}/deliveries/cancel", self.cancel)
        app.router.add_get(f"{prefix}/events/{{event_id}}", self.event)
        app.router.add_get(f"{prefix}/attributions", self.attributions)
        app.router.add_get(f"{prefix}/reports/trackers", self.report)

    async def deliveries(self, request: web.Request) -> web.Response:
        query, filters = _query(request, DELIVERY_FILTERS)
        return json_response(await self.delivery_page(query, filters.get("state")))

    async def delivery_page(self, query: Mapping[str, str], state: str | None) -> dict[str, object]:
        """One page of deliveries (the answer of `GET deliveries`); the console reads the
        same. `query` holds the paging parameters, `state` the filter."""
        if state is not None and state not in STATES:
            raise BadRequest(
                f"state must be one of {', '.join(STATES)}", field="state", code="invalid_parameter"
            )
        filters = {} if state is None else {"state": state}
        shape = (int,) * delivery_key_size(state)
        paging = Paging.of("deliveries", query, filters, shape)
        in_flight = frozenset(self._engine.in_flight_ids())
        rows = await self._store.list_deliveries(
            state, _after(paging), paging.limit + 1, _now_ms(), in_flight
        )
        return paging.answer(rows, _key, _item)

    async def replay(self, request: web.Request) -> web.Response:
        data = await read_object(request, self._max_body_bytes)
        unknown = set(data) - {"ids", "state"}
        if unknown:
            raise Invalid("unknown field for a replay", field=sorted(unknown)[0])
        if ("ids" in data) == ("state" in data):
            raise Invalid('give either "ids" or "state": "dead"', field="ids")
        if "state" in data and data["state"] != "dead":
            raise Invalid('only dead deliveries are replayed: "state": "dead"', field="state")
        ids = _check_ids(data["ids"]) if "ids" in data else None
        return json_response({"replayed": await self.replay_dead(ids)})

    async def replay_dead(self, ids: object) -> int:
        """Dead deliveries go out again: those of `ids`, or every one when None; the count."""
        chosen = None if ids is None else _check_ids(ids)
        now = _now_ms()
        lanes = await self._store.replay_dead(chosen, now)
        self._engine.rewind_lanes(dict.fromkeys(lanes, now))
        return sum(lanes.values())

    async def cancel(self, request: web.Request) -> web.Response:
        data = await read_object(request, self._max_body_bytes)
        unknown = set(data) - {"ids", "postback_id"}
        if unknown:
            raise Invalid("unknown field for a cancel", field=sorted(unknown)[0])
        if ("ids" in data) == ("postback_id" in data):
            raise Invalid('give either "ids" or "postback_id"', field="ids")
        ids = _check_ids(data["ids"]) if "ids" in data else None
        count = await self.cancel_pending(ids, data.get("postback_id"))
        return json_response({"cancelled": count})

    async def cancel_pending(self, ids: object, postback_id: object) -> int:
        """PRODUCT.md 2, "Delivery states": deliveries that have not gone out become
        `cancelled`, by ids or all of a postback; requests already at X finish. The count."""
        chosen = None if ids is None else _check_ids(ids)
        if postback_id is not None and not isinstance(postback_id, str):
            raise Invalid("postback_id must be a postback id (a string)", field="postback_id")
        return await self._engine.cancel(chosen, postback_id)

    async def event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        found = await self.event_details(event_id)
        if found is None:
            raise NotFound(f"event {event_id!r} does not exist", field="event_id")
        return json_response(found)

    async def event_details(self, event_id: str) -> dict[str, Any] | None:
        """The event, its deliveries and its claims with every rejected candidate."""
        in_flight = frozenset(self._engine.in_flight_ids())
        return await self._store.event_details(event_id, _now_ms(), in_flight)

    async def attributions(self, request: web.Request) -> web.Response:
        query, filters = _query(request, ATTRIBUTION_FILTERS)
        paging = Paging.of("attributions", query, filters, (int,))
        rows = await self._store.list_attributions(
            filters.get("app_id"),
            filters.get("tracker_id"),
            _after(paging),
            paging.limit + 1,
        )
        return json_response(paging.answer(rows, _key, _item))

    async def report(self, request: web.Request) -> web.Response:
        _, filters = _query(request, REPORT_FILTERS, paged=False)
        rows = await self.tracker_report(filters.get("app_id"))
        return json_response({"items": rows, "count": len(rows)})

    async def tracker_report(self, app_id: str | None) -> list[dict[str, Any]]:
        """Per tracker: claims by outcome, attributions by engagement type, X-claimed versus
        accepted and the gap by reason."""
        if app_id is not None and app_id not in self._catalog.index.apps:
            raise NotFound(f"app {app_id!r} does not exist", field="app_id")
        by_tracker = await self._store.tracker_report(app_id)
        trackers = self._catalog.index.trackers
        rows = []
        for tracker_id, figures in sorted(by_tracker.items()):
            tracker = trackers.get(tracker_id)
            rows.append({
                "tracker_id": tracker_id or None,
                "tracker_name": tracker.name if tracker else None,
                **figures,
            })  # fmt: skip
        return rows
