"""The attribution rules of a claim answer (PRODUCT.md section 1, "Attribution of a claim answer").

Pure functions: X's parsed 200 answer, the conversion, and the trackers of the app and
network go in; a `ClaimDecision` comes out. Every candidate X sent that does not win is
listed with its reason, so a claim record explains the discrepancy with X's dashboard line
by line.

Outcomes of a claim:

    not_claimed                X sent no candidate
    attributed                 a winner, and the event is its tracker's event-matching event
    claimed                    a winner, for another event (X's conversion only)
    <rejection reason>         every candidate was rejected: the first candidate's reason

Why a candidate did not win (`Rejection.reason`), checked in this order:

    rejected_data_sharing      is_granular_data_sharing_allowed is false (seed, CAUTION)
    no_tracker                 the app has no reengagement tracker for the network
    rejected_malformed         engagement_type is neither CLICK nor VIEW, or engagement_time
                               is missing: the window cannot be judged (our addition)
    rejected_invalid_time      the engagement is after the conversion
    rejected_outside_window    older than the tracker's window for its engagement type
    outranked                  valid, but another valid candidate ranks first (never an
                               outcome, since a winner then exists)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

from postbackd.index import AppNetworkTrackers
from postbackd.model import Tracker
from postbackd.x.answer import Candidate, ClaimAnswer, Source

RejectionReason = Literal[
    "rejected_data_sharing",
    "no_tracker",
    "rejected_malformed",
    "rejected_invalid_time",
    "rejected_outside_window",
]
# Why a candidate did not win: rejected, or outranked by the winner.
LossReason = Literal[RejectionReason, "outranked"]
Outcome = Literal["not_claimed", "attributed", "claimed", RejectionReason]
# Every value, e.g. to pre-create metric label children so they read 0.
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
LOSS_REASONS: Final[tuple[LossReason, ...]] = get_args(LossReason)

CLICK: Final = "CLICK"
VIEW: Final = "VIEW"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_DAY_MS: Final = 86_400_000


# Not frozen, for the reason Event is not (postbackd/event.py): made per answer of X.
@dataclass(slots=True)
class Rejection:
    """A candidate that did not win, and why."""

    candidate: Candidate
    reason: LossReason
    # The tracker the candidate resolved to; None when the app has none for the network.
    tracker_id: str | None
    # For people: e.g. "VIEW 2 days before conversion, post-view window 0 days".
    detail: str

    @property
    def source(self) -> Source:
        return self.candidate.source


@dataclass(slots=True)
class ClaimDecision:
    outcome: Outcome
    winner: Candidate | None
    # The winner's tracker: set exactly when there is a winner (`attributed` or `claimed`).
    tracker: Tracker | None
    # Every candidate but the winner, twitter before tpn.
    rejected: tuple[Rejection, ...]

    @property
    def attributed(self) -> bool:
        return self.outcome == "attributed"


_NOT_CLAIMED: Final = ClaimDecision("not_claimed", None, None, ())

# What `_judge` says of a candidate: its engagement time in epoch milliseconds when it
# counts, else the rejection reason and the detail.
_Verdict = int | tuple[RejectionReason, str]


def evaluate_claim(
    answer: ClaimAnswer,
    *,
    conversion_time: datetime | int,
    event_name: str,
    trackers: AppNetworkTrackers,
) -> ClaimDecision:
    """Decide the attribution of one X answer.

    `conversion_time` is timezone-aware, or epoch milliseconds (an event's own form, so no
    datetime is made for the many answers with no candidate). `trackers` are the
    reengagement trackers of the event's app for the answer's network.
    """
    candidates = answer.candidates
    # Rule 1: X claims the conversion only through a non-null attribution node.
    if not candidates:
        return _NOT_CLAIMED
    conversion_ms = (
        conversion_time if isinstance(conversion_time, int) else _epoch_ms(conversion_time)
    )

    judged: list[tuple[Candidate, Tracker | None, _Verdict]] = []
    best: tuple[Candidate, Tracker, int] | None = None
    for candidate in candidates:
        tracker = trackers.resolve(candidate.campaign_name)
        verdict = _judge(candidate, tracker, conversion_ms)
        judged.append((candidate, tracker, verdict))
        # Rule 5: CLICK before VIEW, then the latest engagement. Strictly better only,
        # so on a tie the earlier candidate (twitter) keeps the lead.
        if (
            isinstance(verdict, int)
            and tracker is not None
            and (best is None or _rank(candidate, verdict) > _rank(best[0], best[2]))
        ):
            best = (candidate, tracker, verdict)

    if best is None:
        rejected = tuple(_rejection(c, t, v) for c, t, v in judged)
        # Rule 6: with every candidate rejected, the first one's reason (twitter before tpn).
        first = judged[0][2]
        assert not isinstance(first, int)
        return ClaimDecision(first[0], None, None, rejected)

    winner, tracker, winner_ms = best
    rejected = tuple(
        _rejection(c, t, v, winner=winner, winner_ms=winner_ms)
        for c, t, v in judged
        if c is not winner
    )
    # Rule 6: only the tracker's event-matching event earns the re-engagement attribution
    # (seed, "Event Matching" NOTE); any other event is X's conversion alone.
    outcome: Outcome = "attributed" if event_name == tracker.event_matching_event else "claimed"
    return ClaimDecision(outcome, winner, tracker, rejected)


def _judge(candidate: Candidate, tracker: Tracker | None, conversion_ms: int) -> _Verdict:
    # Rule 2 (seed, CAUTION): the user refused data sharing; the next best candidate is tried.
    if not candidate.granular_data_sharing_allowed:
        return "rejected_data_sharing", "is_granular_data_sharing_allowed is false"
    # Rule 3: campaign-name id, else default, else newest tracker (seed, NOTE under
    # Default Tracker); `resolve` gives None only when the app has no tracker at all.
    if tracker is None:
        return "no_tracker", "no reengagement tracker for this app and network"
    kind = candidate.engagement_type
    if kind != CLICK and kind != VIEW:
        return "rejected_malformed", f"engagement_type {kind!r:.40} is neither CLICK nor VIEW"
    if candidate.engagement_time is None:
        return "rejected_malformed", "engagement_time missing"

    # Rule 4, at millisecond precision: X sends milliseconds, so a conversion time with
    # microseconds must not push an engagement exactly at the window end outside it.
    engagement_ms = _epoch_ms(candidate.engagement_time)
    delta_ms = conversion_ms - engagement_ms
    if delta_ms < 0:
        return "rejected_invalid_time", f"{kind} {_duration(-delta_ms)} after conversion"
    if kind == CLICK:
        window_days = tracker.post_engagement_window_days
        window_name = "post-engagement"
    else:
        window_days = tracker.post_view_window_days
        window_name = "post-view"
    # Both ends included; a 0-day post-view window means views never count, not even a
    # view in the same millisecond as the conversion (PRODUCT.md 1, rule 4).
    if window_days > 0 and delta_ms <= window_days * _DAY_MS:
        return engagement_ms
    return (
        "rejected_outside_window",
        f"{kind} {_duration(delta_ms)} before conversion, {window_name} window {window_days} days",
    )


def _rejection(
    candidate: Candidate,
    tracker: Tracker | None,
    verdict: _Verdict,
    *,
    winner: Candidate | None = None,
    winner_ms: int = 0,
) -> Rejection:
    tracker_id = tracker.id if tracker is not None else None
    if not isinstance(verdict, int):
        return Rejection(candidate, verdict[0], tracker_id, verdict[1])
    # A valid candidate that lost the ranking to the winner.
    assert winner is not None
    if candidate.engagement_type != winner.engagement_type:
        why = "CLICK before VIEW"
    elif winner_ms == verdict:
        why = "same time, twitter first"
    else:
        why = f"{_duration(winner_ms - verdict)} later"
    detail = f"{candidate.engagement_type} outranked by {winner.source} {winner.engagement_type}"
    return Rejection(candidate, "outranked", tracker_id, f"{detail} ({why})")


def _rank(candidate: Candidate, engagement_ms: int) -> tuple[bool, int]:
    return (candidate.engagement_type == CLICK, engagement_ms)


def _epoch_ms(moment: datetime) -> int:
    # Exact integer arithmetic on timedelta; `timestamp()` is a float and would round.
    return (moment - _EPOCH) // _ONE_MS


def _duration(ms: int) -> str:
    """E.g. "2 days", "1 day", "14 days 00:00:00.001"."""
    days, rest = divmod(ms, _DAY_MS)
    text = f"{days} day" if days == 1 else f"{days} days"
    if rest:
        seconds, millis = divmod(rest, 1000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        text += f" {hours:02}:{minutes:02}:{seconds:02}.{millis:03}"
    return text
