"""Admitting events: the items of one batch, from any source, checked one by one and the
valid ones accepted in one commit (PRODUCT.md 3, "Ingest"; section 5, "Event streams").

`POST /track/json` and the Redis Stream reader hand their items here, so an event is judged
the same way wherever it comes from: the Kochava shape (`parse_event`), an app the catalog
knows, one durable commit with its deliveries (`Intake.accept`), the engine told of the lanes
that got work, and the same counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postbackd.catalog import Catalog
from postbackd.delivery.intake import Accepted, Intake
from postbackd.errors import Invalid
from postbackd.event import Event, parse_event
from postbackd.metrics import Metrics
from postbackd.model import App

# The code of a rejection for an event of an app the catalog does not know.
UNKNOWN_APP = "unknown_app"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item that could not be accepted: its position in the batch, why, and the field."""

    index: int
    error: str
    field: str | None
    code: str


@dataclass(frozen=True, slots=True)
class Admitted:
    """What became of a batch; `event_ids` has one entry per item, None when rejected."""

    event_ids: list[str | None]
    accepted: int
    duplicates: int
    rejected: list[Rejection]


class Admission:
    def __init__(
        self,
        intake: Intake,
        catalog: Catalog,
        metrics: Metrics,
        *,
        on_accepted: Callable[[Accepted], None],
    ) -> None:
        self._intake = intake
        self._catalog = catalog
        self._on_accepted = on_accepted
        self._skipped = metrics.deliveries.labels("skipped")
        self._held = metrics.deliveries.labels("held")
        self._result = {r: metrics.events_received.labels(r) for r in ("accepted", "duplicate",
                                                                         "rejected")}  # fmt: skip

    async def admit(self, items: Sequence[object]) -> Admitted:
        """Check each item and commit the valid ones with their deliveries; the answer comes
        once they are durable. Raises `StoreUnavailable` when the store refuses the commit:
        then nothing of the batch was accepted."""
        now_ms = int(time.time() * 1000)
        apps = self._catalog.index.apps
        valid: list[tuple[Event, App]] = []
        positions: list[int] = []
        rejected: list[Rejection] = []
        for i, item in enumerate(items):
            try:
                event = parse_event(item, received_at_ms=now_ms)
                app = apps.get(event.app_id)
                if app is None:
                    raise Invalid(
                        f"kochava_app_id {event.app_id!r} is not a known app",
                        field="kochava_app_id",
                        code=UNKNOWN_APP,
                    )
            except Invalid as e:
                rejected.append(Rejection(i, e.message, e.field, e.code))
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
                self._on_accepted(outcome)
            if outcome.skipped:
                # Skipped at acceptance (no device id, network_only): final at once.
                self._skipped.inc(outcome.skipped)
            if outcome.held:
                # No authenticated account signs them yet (PRODUCT.md 1, "Claim request").
                self._held.inc(outcome.held)
        self._result["accepted"].inc(accepted)
        self._result["duplicate"].inc(duplicates)
        self._result["rejected"].inc(len(rejected))
        return Admitted(event_ids, accepted, duplicates, rejected)
