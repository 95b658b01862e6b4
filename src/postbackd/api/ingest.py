"""`POST /track/json`: Kochava server-to-server events, validated item by item and
acknowledged only once committed (PRODUCT.md 3, "Ingest")."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from postbackd.catalog import Catalog
from postbackd.delivery.intake import Intake
from postbackd.errors import BadRequest, Invalid
from postbackd.event import Event, parse_event, split_body
from postbackd.metrics import Metrics
from postbackd.model import App

from .http import json_response, read_body


class IngestRoute:
    def __init__(
        self,
        intake: Intake,
        catalog: Catalog,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        max_items: int,
        on_accepted: Callable[[dict[str, int]], None],
    ) -> None:
        self._intake = intake
        self._catalog = catalog
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self.max_items = max_items
        self._on_accepted = on_accepted
        self._skipped = metrics.deliveries.labels("skipped")
        self._held = metrics.deliveries.labels("held")
        self._result = {r: metrics.events_received.labels(r) for r in ("accepted", "duplicate",
                                                                         "rejected")}  # fmt: skip

    async def handle(self, request: web.Request) -> web.Response:
        body = await read_body(request, self._max_body_bytes)
        items = split_body(body, request.content_type, max_items=self.max_items)
        if not items:
            raise BadRequest("the body holds no events", field="body", code="empty_batch")
        now_ms = int(time.time() * 1000)
        apps = self._catalog.index.apps
        valid: list[tuple[Event, App]] = []
        positions: list[int] = []
        rejected: list[dict[str, object]] = []
        for i, item in enumerate(items):
            try:
                event = parse_event(item, received_at_ms=now_ms)
                app = apps.get(event.app_id)
                if app is None:
                    raise Invalid(
                        f"kochava_app_id {event.app_id!r} is not a known app",
                        field="kochava_app_id",
                    )
            except Invalid as e:
                rejected.append({"index": i, "error": e.message, "field": e.field})
                continue
            valid.append((event, app))
            positions.append(i)
        event_ids: list[str | None] = [None] * len(items)
        accepted = duplicates = 0
        if valid:
            outcome = await self._intake.accept(valid, now_ms)
            for (event, _), position, fresh in zip(valid, positions, outcome.fresh, strict=True):
                event_ids[position] = event.event_id
                if fresh:
                    accepted += 1
                else:
                    duplicates += 1
            if outcome.lanes:
                self._on_accepted(outcome.lanes)
            if outcome.skipped:
                # Skipped at acceptance (no device id, network_only): final at once.
                self._skipped.inc(outcome.skipped)
            if outcome.held:
                # No authenticated account signs them yet (PRODUCT.md 1, "Claim request").
                self._held.inc(outcome.held)
        self._result["accepted"].inc(accepted)
        self._result["duplicate"].inc(duplicates)
        self._result["rejected"].inc(len(rejected))
        answer = {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "event_ids": event_ids,
        }
        if not valid:
            # PRODUCT.md 3: 400 when nothing could be accepted (duplicates are accepted).
            answer["error"] = {
                "code": "nothing_accepted",
                "message": "no event of the body could be accepted",
                "field": "body",
            }
            return json_response(answer, status=400)
        return json_response(answer, status=202)
