"""The demo's sample traffic: events, the engagements X is scripted to have seen, and the
outcome each event must get under the rules of PRODUCT.md section 1.

Every event belongs to one scenario, and one scenario names one outcome, so the expected
figures are a tally of the generated events. One device sends one event, which keeps the
scripted answer of X about that device unambiguous.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import orjson

Node = Literal["twitter", "tpn"]
# Which tracker a candidate resolves to (PRODUCT.md 1, attribution step 3): the default
# tracker (campaign name null or without a tracker id), or the tracker whose id the campaign
# name carries.
Role = Literal["default", "named"]
DeviceKind = Literal["idfa", "none", "zero"]

PURCHASE: Final = "purchase"
LEVEL_COMPLETE: Final = "level_complete"
# Campaign names of the default tracker: null, or a name that carries no tracker id.
DEFAULT_CAMPAIGN_NAMES: Final = (None, "Winter promo")
# The campaign of the tracker that X campaign names lead to, by carrying its id.
NAMED_CAMPAIGN: Final = "Spring promo"
# X's conversion types of the demo's two postbacks.
CONVERSION_TYPES: Final = {PURCHASE: "PURCHASE", LEVEL_COMPLETE: "LEVEL_ACHIEVED"}
# Conversions happened up to an hour before the demo streams them.
MAX_EVENT_AGE_S: Final = 3600

_MINUTE_S: Final = 60
_HOUR_S: Final = 3600
_DAY_S: Final = 86_400


@dataclass(frozen=True, slots=True)
class Touch:
    """An engagement X saw: `before_s` is how long before the conversion (negative: after),
    drawn from this range; the ranges stay clear of the demo trackers' window ends."""

    node: Node
    engagement_type: Literal["CLICK", "VIEW"]
    before_s: tuple[int, int]
    campaign: Role = "default"
    sharing: bool = True


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    weight: int
    touches: tuple[Touch, ...]
    # None: the event is never sent (no usable device id), so it has no outcome.
    outcome: str | None
    tracker: Role | None
    event_names: tuple[str, ...] = (PURCHASE,)
    device: tuple[DeviceKind, ...] = ("idfa",)
    # Set when the winning candidate comes from this node although another one was sent.
    winner: Node | None = None

    @property
    def engagement_type(self) -> str | None:
        """The engagement type of the attribution this scenario records."""
        if self.outcome != "attributed":
            return None
        node = self.winner or self.touches[0].node
        return next(t.engagement_type for t in self.touches if t.node == node)


# Rules of PRODUCT.md 1, "Attribution of a claim answer". The demo's trackers: "Winter
# reengagement" (default, windows 14/1 days) and "Spring reengagement" (found by its id in
# campaign names, windows 7/0 days), both with the event-matching event "purchase".
SCENARIOS: Final = (
    # Rule 3: a campaign name null or without a tracker id leads to the default tracker;
    # rule 4: inside its 14-day post-engagement window.
    Scenario(
        "click", 20, (Touch("twitter", "CLICK", (_HOUR_S, 13 * _DAY_S)),), "attributed", "default"
    ),
    # Rule 4: inside the default tracker's 1-day post-view window.
    Scenario(
        "view", 8, (Touch("twitter", "VIEW", (_MINUTE_S, 20 * _HOUR_S)),), "attributed", "default"
    ),
    # Rule 2 (seed, CAUTION): twitter's candidate is refused, the next best (tpn) wins.
    Scenario(
        "tpn_after_refusal",
        6,
        (
            Touch("twitter", "CLICK", (_HOUR_S, 5 * _DAY_S), sharing=False),
            Touch("tpn", "CLICK", (_HOUR_S, 10 * _DAY_S)),
        ),
        "attributed",
        "default",
        winner="tpn",
    ),
    # Rule 3: the campaign name carries the other tracker's id, in either case.
    Scenario(
        "campaign_id",
        10,
        (Touch("twitter", "CLICK", (_HOUR_S, 6 * _DAY_S), campaign="named"),),
        "attributed",
        "named",
    ),
    # Rule 6: not the tracker's event-matching event, so X's conversion only.
    Scenario(
        "other_event",
        12,
        (Touch("twitter", "CLICK", (_HOUR_S, 10 * _DAY_S)),),
        "claimed",
        "default",
        event_names=(LEVEL_COMPLETE,),
    ),
    # Rule 2, with no other candidate: the first candidate's reason is the outcome.
    Scenario(
        "data_sharing",
        5,
        (Touch("twitter", "CLICK", (_HOUR_S, 5 * _DAY_S), sharing=False),),
        "rejected_data_sharing",
        "default",
    ),
    # Rule 4: older than the 14-day post-engagement window.
    Scenario(
        "old_click",
        5,
        (Touch("twitter", "CLICK", (15 * _DAY_S, 29 * _DAY_S)),),
        "rejected_outside_window",
        "default",
    ),
    # The named tracker's post-view window is 0 days: its views never count.
    Scenario(
        "view_named",
        4,
        (Touch("twitter", "VIEW", (_MINUTE_S, 6 * _DAY_S), campaign="named"),),
        "rejected_outside_window",
        "named",
    ),
    # Rule 4: an engagement after the conversion.
    Scenario(
        "engaged_after",
        4,
        (Touch("twitter", "CLICK", (-12 * _HOUR_S, -_MINUTE_S)),),
        "rejected_invalid_time",
        "default",
    ),
    # Rule 1: X sends no candidate for a device it never saw.
    Scenario("unknown_device", 18, (), "not_claimed", None, event_names=(PURCHASE, LEVEL_COMPLETE)),
    # No IDFA, or the all-zero one of limited ad tracking: not sent to X.
    Scenario("no_idfa", 8, (), None, None, device=("none", "zero")),
)


@dataclass(frozen=True, slots=True)
class SampleEvent:
    scenario: Scenario
    event_id: str
    body: dict[str, object]


@dataclass(frozen=True, slots=True)
class Plan:
    events: tuple[SampleEvent, ...]
    # The simulated X's engagement script, one JSON object per entry.
    script: tuple[dict[str, object], ...]

    def ndjson_script(self) -> bytes:
        return b"".join(orjson.dumps(entry) + b"\n" for entry in self.script)


def make_plan(
    count: int, seed: int, *, app_id: str, named_tracker_id: str, now_s: int, run_id: str
) -> Plan:
    """`count` events (at least one per scenario), the same for the same seed; `run_id`
    only makes the event ids of this run unique."""
    if count < len(SCENARIOS):
        raise ValueError(f"the demo needs at least {len(SCENARIOS)} events, one per scenario")
    rng = random.Random(seed)
    chosen = list(SCENARIOS)
    chosen += rng.choices(SCENARIOS, weights=[s.weight for s in SCENARIOS], k=count - len(chosen))
    rng.shuffle(chosen)
    named = f"{NAMED_CAMPAIGN} | {named_tracker_id}"
    campaigns = {
        # Marketers type names freely; the id is found whatever its case.
        "named": (named, named.upper()),
        "default": DEFAULT_CAMPAIGN_NAMES,
    }
    events: list[SampleEvent] = []
    script: list[dict[str, object]] = []
    for i, scenario in enumerate(chosen):
        idfa = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
        conversion_s = now_s - rng.randrange(MAX_EVENT_AGE_S)
        event_id = f"demo-{run_id}-{i:06d}"
        event_name = rng.choice(scenario.event_names)
        device = rng.choice(scenario.device)
        events.append(
            SampleEvent(
                scenario,
                event_id,
                _event(event_id, app_id, event_name, _device_ids(device, idfa), conversion_s, rng),
            )
        )
        for touch in scenario.touches:
            low_s, high_s = touch.before_s
            before_ms = rng.randint(low_s * 1000, high_s * 1000)
            engaged = datetime.fromtimestamp(conversion_s, UTC) - timedelta(milliseconds=before_ms)
            script.append(
                {
                    "device_id": idfa,
                    "os_type": "IOS",
                    "node": touch.node,
                    "engagement_type": touch.engagement_type,
                    "engagement_time": engaged.isoformat(timespec="milliseconds"),
                    "campaign_name": rng.choice(campaigns[touch.campaign]),
                    "is_granular_data_sharing_allowed": touch.sharing,
                }
            )
    return Plan(tuple(events), tuple(script))


def _device_ids(kind: DeviceKind, idfa: str) -> dict[str, str]:
    if kind == "idfa":
        return {"idfa": idfa, "idfv": idfa[::-1]}
    if kind == "zero":
        return {"idfa": "00000000-0000-0000-0000-000000000000", "idfv": idfa[::-1]}
    return {"idfv": idfa[::-1]}


def _event(
    event_id: str,
    app_id: str,
    event_name: str,
    device_ids: dict[str, str],
    conversion_s: int,
    rng: random.Random,
) -> dict[str, object]:
    """A Kochava server-to-server event (PRODUCT.md 3, "Ingest")."""
    if event_name == PURCHASE:
        data: dict[str, object] = {"sum": rng.choice((0.99, 4.99, 9.99, 19.99)), "currency": "USD"}
    else:
        data = {"level": rng.randint(2, 40)}
    return {
        "action": "event",
        "event_id": event_id,
        "kochava_app_id": app_id,
        "kochava_device_id": "KD" + device_ids["idfv"].replace("-", "")[:24],
        "device_ids": device_ids,
        "origination_ip": f"203.0.113.{rng.randint(1, 254)}",
        "device_ver": "iPhone15,2-iOS-17.5",
        "app_version": "3.2.0",
        "usertime": conversion_s,
        "data": {"event_name": event_name, "event_data": data},
    }
