"""Accepting events: fan-out to deliveries, and one durable commit before the answer.

PRODUCT.md 1 and 2: whether a postback applies is judged when the event is accepted, and
an event is acknowledged only once it and its deliveries are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postbackd.event import Event
from postbackd.index import Index
from postbackd.model import App, Postback
from postbackd.store.base import Store, Stored

from .claim import device_key
from .devices import DeviceNetworks
from .model import Delivery, NewDelivery


def fan_out(
    app: App,
    event_name: str,
    index: Index,
    accepted_ms: int,
    *,
    has_device: bool,
    latest_network: str | None,
) -> tuple[NewDelivery, ...]:
    """One delivery per enabled postback for (app, network of its platform, event name),
    in the lane of the X account that is to sign it (PRODUCT.md 1, "Claim request"), for
    an event of that name accepted at `accepted_ms`, with a usable device id or not, whose
    device was last attributed to `latest_network`.

    The deliveries depend on nothing else of the event: a batch works them out once per
    kind of event (`Intake.accept`), not once per event."""
    out: list[NewDelivery] = []
    for p in index.postbacks_of(app.id, event_name):
        if not p.enabled or p.network != app.network:
            continue
        account, hold_reason = index.signing_account(p)
        state, reason = "ready", None
        if not has_device:
            # PRODUCT.md 1: no IDFA on iOS, no ADID on Android, or an all-zero id.
            state, reason = "skipped", "no_device_id"
        elif p.delivery_method == "network_only" and latest_network != p.network:
            state, reason = "skipped", "not_attributed_to_network"
        elif account is None:
            # No authenticated account to sign it: held until the rule yields one.
            state, reason = "held", hold_reason
        elif p.delivery_delay_s:
            state = "scheduled"
        lane = account.id if account is not None else ""
        out.append(_new(p, state, reason, accepted_ms + p.delivery_delay_s * 1000, lane))
    return tuple(out)


def _new(p: Postback, state: str, reason: str | None, due_ms: int, lane: str) -> NewDelivery:
    return NewDelivery(
        postback_id=p.id,
        network=p.network,
        x_app_id=p.x_app_id,
        conversion_type=p.conversion_type,
        x_account_id=p.x_account_id,
        retry_attempts=p.retry_attempts,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        due_ms=due_ms,
        lane=lane,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """Per event of the batch: True when stored now, False when it was a duplicate."""

    fresh: list[bool]
    deliveries: int
    skipped: int
    held: int
    # The lanes that got pending deliveries, each with the earliest due time among them.
    lanes: dict[str, int]
    # Those of them that are this daemon's to send at once (`Store.accept`).
    owned: list[Delivery]
    # The lanes that got pending deliveries other than `owned` (delayed ones, say), each
    # with the earliest due time among those: read from the store even when `owned` is
    # handed over.
    rest: dict[str, int]


class Intake:
    def __init__(
        self,
        store: Store,
        index: Callable[[], Index],
        devices: DeviceNetworks,
    ) -> None:
        self._store = store
        self._index = index
        self._devices = devices

    async def accept(self, events: Sequence[tuple[Event, App]], now_ms: int) -> Accepted:
        index = self._index()
        latest = await self._latest_networks(events, index)
        # A batch's events are mostly of a few kinds (app, name, device id or not): the
        # deliveries of each kind are worked out once, and shared (they are immutable).
        plans: dict[tuple[str, str, bool, str | None], tuple[NewDelivery, ...]] = {}
        planned: list[tuple[Event, tuple[NewDelivery, ...]]] = []
        for event, app in events:
            has_device = device_key(app.network, event) is not None
            network = latest.get((app.id, event.event_id)) if latest else None
            kind = (app.id, event.event_name, has_device, network)
            deliveries = plans.get(kind)
            if deliveries is None:
                deliveries = plans[kind] = fan_out(
                    app, event.event_name, index, now_ms,
                    has_device=has_device, latest_network=network,
                )  # fmt: skip
            planned.append((event, deliveries))
        stored = await self._store.accept(planned, now_ms)
        return _accepted(planned, stored)

    async def _latest_networks(
        self, events: Sequence[tuple[Event, App]], index: Index
    ) -> dict[tuple[str, str], str | None]:
        """The latest attributed network of each device that a network_only postback needs."""
        wanted: dict[str, dict[str, str]] = {}
        needed: dict[tuple[str, str], bool] = {}  # by (app, event name)
        for event, app in events:
            need = needed.get((app.id, event.event_name))
            if need is None:
                postbacks = index.postbacks_of(app.id, event.event_name)
                need = any(p.delivery_method == "network_only" for p in postbacks)
                needed[(app.id, event.event_name)] = need
            if need:
                key = device_key(app.network, event)
                if key is not None:
                    wanted.setdefault(app.id, {})[event.event_id] = key
        out: dict[tuple[str, str], str | None] = {}
        for app_id, keys in wanted.items():
            networks = await self._devices.lookup(app_id, list(set(keys.values())))
            for event_id, key in keys.items():
                out[(app_id, event_id)] = networks.get(key)
        return out


def _accepted(planned: Sequence[tuple[Event, Sequence[NewDelivery]]], stored: Stored) -> Accepted:
    """What the intake tells of a committed batch: counts, and the lanes to read."""
    count = skipped = held = 0
    lanes: dict[str, int] = {}
    rest: dict[str, int] = {}
    owned = {(d.event_id, d.postback_id) for d in stored.owned}
    for (event, deliveries), is_new in zip(planned, stored.fresh, strict=True):
        if not is_new:
            continue
        count += len(deliveries)
        for d in deliveries:
            if d.state == "skipped":
                skipped += 1
            elif d.state == "held":
                held += 1
            else:
                if d.due_ms < lanes.get(d.lane, d.due_ms + 1):
                    lanes[d.lane] = d.due_ms
                if (event.event_id, d.postback_id) not in owned and d.due_ms < rest.get(
                    d.lane, d.due_ms + 1
                ):
                    rest[d.lane] = d.due_ms
    return Accepted(stored.fresh, count, skipped, held, lanes, stored.owned, rest)
