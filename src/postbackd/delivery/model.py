"""What the delivery engine moves around: deliveries, their new state, and claim records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from postbackd.event import Event

State = Literal[
    "scheduled", "ready", "in_flight", "delivered", "skipped", "held", "dead", "cancelled"
]
STATES: Final = (
    "scheduled", "ready", "in_flight", "delivered", "skipped", "held", "dead", "cancelled"
)  # fmt: skip
# Rows the engine loads; `in_flight` lives only in memory (a crash resends those requests).
PENDING: Final = ("scheduled", "ready")
# What an operator may cancel: everything that has not gone out (PRODUCT.md 2).
CANCELLABLE: Final = ("scheduled", "ready", "held")
FINAL: Final = ("delivered", "skipped", "dead", "cancelled")


@dataclass(slots=True)
class Delivery:
    """One pending (event, postback) claim request, loaded into memory to be sent.

    The postback's fields are copied at acceptance: a postback disabled or deleted later
    still lets its accepted deliveries go out (PRODUCT.md 1). `lane` is the X account it was
    loaded for (its row's lane); the account that signs it is decided again when it is sent.
    """

    id: int
    event_id: str
    postback_id: str
    app_id: str
    network: str
    event_name: str
    x_app_id: str
    conversion_type: str
    x_account_id: str | None
    retry_attempts: int
    attempts: int
    first_due_ms: int
    due_ms: int
    lane: str
    event_body: bytes
    # The event itself when the delivery was handed to the engine at acceptance (its body
    # then is not read back from the store, nor parsed again).
    event: Event | None = None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    postback_id: str
    network: str
    x_app_id: str
    conversion_type: str
    x_account_id: str | None
    retry_attempts: int
    state: State
    reason: str | None
    due_ms: int
    lane: str


# Not frozen, for the reason Event is not (postbackd/event.py): made per claim.
@dataclass(slots=True)
class Claim:
    """X's claim answer as the attribution rules judged it, kept line by line."""

    event_id: str
    app_id: str
    network: str
    tracker_id: str | None
    outcome: str
    source: str | None
    engagement_type: str | None
    engagement_time: str | None
    campaign_name: str | None
    rejected: bytes  # JSON list of {source, reason, tracker_id, detail}


@dataclass(slots=True)
class Attribution:
    """A re-engagement attribution: the device's latest attribution becomes this one, unless
    the device already has one of a later engagement."""

    app_id: str
    device_key: str
    network: str
    tracker_id: str
    engagement_type: str
    engagement_time: str
    event_id: str


@dataclass(slots=True)
class Result:
    """A delivery's new state, written by the store's writer in a group commit."""

    delivery_id: int
    state: State
    reason: str | None
    attempts: int
    due_ms: int
    account_id: str | None
    last_status: int | None
    last_error: str | None
    claim: Claim | None = None
    attribution: Attribution | None = None
