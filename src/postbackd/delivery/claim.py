"""One claim, both ways: the request X receives for a delivery, and the records its 200
answer leaves after the attribution rules judged it."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import orjson

from postbackd.attribution import ClaimDecision, evaluate_claim
from postbackd.event import Event
from postbackd.index import Index
from postbackd.model import OS_TYPE_OF_NETWORK
from postbackd.x.answer import parse_answer
from postbackd.x.conversion import claim_params, format_conversion_time, price_to_micros
from postbackd.x.device import DeviceHasher, usable_device_id

from .model import Attribution, Claim, Delivery

_PLATFORM_OF_NETWORK: Final = {"x_ios": "ios", "x_android": "android"}
# The rejections of most claims (X claimed nothing, or the only candidate won).
_NONE_REJECTED: Final = orjson.dumps([])


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _currency(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 3 and value.isalpha():
        return value.upper()
    return None


def _price_micro(data: dict[str, object]) -> int | None:
    value = data.get("sum", data.get("price"))
    if value is None:
        return None
    try:
        return price_to_micros(value)
    except ValueError:
        # Metadata never changes attribution (reference): a bad price is left out, and the
        # claim still goes.
        return None


def device_key(network: str, event: Event) -> str | None:
    """The device id X can match (IDFA / ADID, normalised), or None."""
    return usable_device_id(_PLATFORM_OF_NETWORK[network], event.device_ids)


def request_params(
    delivery: Delivery, event: Event, index: Index, hasher: DeviceHasher
) -> list[tuple[str, str]] | None:
    """The query parameters of the claim request; None when the event has no usable id."""
    raw_id = device_key(delivery.network, event)
    if raw_id is None:
        return None
    data = event.event_data
    return claim_params(
        x_app_id=delivery.x_app_id,
        os_type=OS_TYPE_OF_NETWORK[delivery.network],
        hashed_device_id=hasher.hash(raw_id),
        conversion_type=delivery.conversion_type,
        conversion_time=event.conversion_time_ms,
        windows=index.claim_windows(delivery.app_id, delivery.network, event.event_name),
        device_ip=event.origination_ip,
        price_micro=_price_micro(data),
        price_currency=_currency(data.get("currency")),
        number_items=_integer(data.get("quantity")),
        level=_integer(data.get("level")),
    )


def judge_answer(
    delivery: Delivery, event: Event, body: bytes, index: Index
) -> tuple[ClaimDecision, Claim, Attribution | None]:
    """PRODUCT.md 1, "Attribution of a claim answer", applied to X's 200 answer."""
    decision = evaluate_claim(
        parse_answer(body),
        conversion_time=event.conversion_time_ms,
        event_name=event.event_name,
        trackers=index.trackers_of(delivery.app_id, delivery.network),
    )
    winner = decision.winner
    tracker_id = decision.tracker.id if decision.tracker is not None else None
    if tracker_id is None and decision.rejected:
        tracker_id = decision.rejected[0].tracker_id
    claim = Claim(
        event_id=event.event_id,
        app_id=delivery.app_id,
        network=delivery.network,
        tracker_id=tracker_id,
        outcome=decision.outcome,
        source=winner.source if winner else None,
        engagement_type=winner.engagement_type if winner else None,
        engagement_time=_iso(winner.engagement_time) if winner else None,
        campaign_name=winner.campaign_name if winner else None,
        rejected=_NONE_REJECTED
        if not decision.rejected
        else orjson.dumps(
            [
                {
                    "source": r.source,
                    "reason": r.reason,
                    "tracker_id": r.tracker_id,
                    "detail": r.detail,
                    "engagement_type": r.candidate.engagement_type,
                    "engagement_time": _iso(r.candidate.engagement_time),
                    "campaign_name": r.candidate.campaign_name,
                }
                for r in decision.rejected
            ]
        ),
    )
    attribution = None
    if decision.attributed and winner is not None and decision.tracker is not None:
        key = device_key(delivery.network, event)
        if key is not None:
            attribution = Attribution(
                app_id=delivery.app_id,
                device_key=key,
                network=delivery.network,
                tracker_id=decision.tracker.id,
                engagement_type=winner.engagement_type or "",
                engagement_time=_iso(winner.engagement_time) or "",
                event_id=event.event_id,
            )
    return decision, claim, attribution


def _iso(moment: datetime | None) -> str | None:
    return format_conversion_time(moment) if moment is not None else None
