"""X's answer to a claim request, as the attribution rules read it.

Reference: x-ads-conversion-api.md, "Response (200)". X claims a conversion when
`twitter_attribution` or `tpn_attribution` is not null; each node is one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

Source = Literal["twitter", "tpn"]

GRANULAR_KEY: Final = "is_granular_data_sharing_allowed"
# Besides the JSON literal false, only these strings withhold consent (a sender that quotes
# its booleans); 0, null or anything else does not.
_FALSE_STRINGS: Final = ("false", "False")


# Not frozen, for the reason Event is not (postbackd/event.py): made per answer of X.
@dataclass(slots=True)
class Candidate:
    """One non-null attribution node of X's answer."""

    source: Source
    # "CLICK" or "VIEW" when X sent one of them; anything else is kept as sent (or None).
    engagement_type: str | None
    # Timezone-aware UTC; None when X left it out or sent something unparseable.
    engagement_time: datetime | None
    campaign_name: str | None
    account_id: str | None
    # X's `is_granular_data_sharing_allowed`: read inside the node, else at `data` level,
    # and true when absent (reference, "our choice").
    granular_data_sharing_allowed: bool


@dataclass(slots=True)
class ClaimAnswer:
    """The candidates of one 200 answer; both None means X did not claim the conversion."""

    twitter: Candidate | None
    tpn: Candidate | None

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        # Twitter before tpn: the order the rules break ties and report rejections in.
        return tuple(c for c in (self.twitter, self.tpn) if c is not None)


NO_CLAIM: Final = ClaimAnswer(twitter=None, tpn=None)


def parse_answer(body: bytes) -> ClaimAnswer:
    """Read X's 200 body; anything unreadable counts as no candidate (PRODUCT.md section 4)."""
    data = _json_object(body).get("data")
    if not isinstance(data, dict):
        return NO_CLAIM
    twitter = _candidate("twitter", data.get("twitter_attribution"), data)
    tpn = _candidate("tpn", data.get("tpn_attribution"), data)
    if twitter is None and tpn is None:
        return NO_CLAIM  # X's most common answer: one object for all of them
    return ClaimAnswer(twitter, tpn)


def parse_errors(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of the first error of X's `{"errors": [...]}` body (reference, Errors)."""
    errors = _json_object(body).get("errors")
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, dict):
                return _str(error.get("code")), _str(error.get("message"))
    return None, None


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _candidate(source: Source, node: object, data: dict[str, object]) -> Candidate | None:
    # Reference: a node that is null (or, tolerated, not an object) is no candidate.
    if not isinstance(node, dict):
        return None
    promoted = node.get("promoted_properties")
    if not isinstance(promoted, dict):
        promoted = {}
    # Reference, "our choice": inside the node, else at `data` level, else true.
    granular = node.get(GRANULAR_KEY)
    if granular is None:
        granular = data.get(GRANULAR_KEY)
    return Candidate(
        source=source,
        engagement_type=_str(node.get("engagement_type")),
        engagement_time=_utc_time(node.get("engagement_time")),
        campaign_name=_str(promoted.get("campaign_name")),
        account_id=_str(promoted.get("account_id")),
        granular_data_sharing_allowed=not (granular is False or granular in _FALSE_STRINGS),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _utc_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        # X writes UTC with `Z`; a time without an offset is read as UTC too.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # unparseable, or shifted out of datetime's range
        return None
