"""X's attribution answer: the `twitter_attribution` and `tpn_attribution` nodes.

A device named in the script is answered from its scripted engagements only. Any other
device is claimed at `claim_rate`, drawn from a generator seeded with the seed and the
request's identity, so the same request always gets the same answer (a retry included),
whatever the order and concurrency of the calls.
"""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import datetime, timedelta
from typing import Final

from postbackd.mockx.config import MockConfig
from postbackd.mockx.params import ConversionQuery
from postbackd.mockx.script import Engagement, ScriptBook

Node = dict[str, object]

# Shares of random claims: most of X's attributions come from X itself, not its
# Audience Platform, and most from clicks.
_TPN_SHARE: Final = 0.2
_VIEW_SHARE: Final = 0.3


def format_time(moment: datetime) -> str:
    """X's timestamp form: UTC with milliseconds and a `Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ClaimMaker:
    def __init__(self, book: ScriptBook) -> None:
        self._book = book

    def answer(
        self, query: ConversionQuery, config: MockConfig, account_id: str
    ) -> tuple[Node | None, Node | None]:
        """(twitter_attribution, tpn_attribution); `account_id` is the signing account."""
        engagements = self._book.get((query.os_type, query.hashed_device_id))
        if engagements is not None:
            return (
                _scripted(engagements, "twitter", query, account_id),
                _scripted(engagements, "tpn", query, account_id),
            )
        if config.claim_rate <= 0:
            return None, None
        return _random(query, config, account_id)


def _scripted(
    engagements: list[Engagement], node: str, query: ConversionQuery, account_id: str
) -> Node | None:
    matching = [
        e
        for e in engagements
        if e.node == node and e.conversion_type in (None, query.conversion_type)
    ]
    if not matching:
        return None
    # Last touch before the conversion, clicks before views; an engagement after the
    # conversion is answered only when the script gives nothing else (tests need it).
    best = max(
        matching,
        key=lambda e: (
            e.engagement_time <= query.conversion_time,
            e.engagement_type == "CLICK",
            e.engagement_time,
        ),
    )
    return _node(
        best.engagement_type,
        best.engagement_time,
        best.campaign_name,
        best.account_id or account_id,
        best.granular_data_sharing_allowed,
    )


def _random(
    query: ConversionQuery, config: MockConfig, account_id: str
) -> tuple[Node | None, Node | None]:
    rng = random.Random(
        f"{config.seed}|{query.os_type}|{query.hashed_device_id}|{query.conversion_type}"
        f"|{query.conversion_time.isoformat()}"
    )
    if rng.random() >= config.claim_rate:
        return None, None
    on_tpn = rng.random() < _TPN_SHARE
    engagement_type = "VIEW" if rng.random() < _VIEW_SHARE else "CLICK"
    age = timedelta(days=rng.uniform(0, config.claim_max_age_days))
    engagement_time = query.conversion_time - age
    node = _node(
        engagement_type,
        engagement_time.replace(microsecond=engagement_time.microsecond // 1000 * 1000),
        rng.choice(config.campaign_names),
        account_id,
        True,
    )
    return (None, node) if on_tpn else (node, None)


def _node(
    engagement_type: str,
    engagement_time: datetime,
    campaign_name: str | None,
    account_id: str,
    granular: bool,
) -> Node:
    campaign_id, line_item_id, tweet_id = _ids(account_id, campaign_name)
    return {
        "engagement_type": engagement_type,
        "engagement_time": format_time(engagement_time),
        "attribution_type": "PROMOTED",
        "country_code": "US",
        "tweet_id": tweet_id,
        # Reference (our choice): the data-sharing flag sits inside the node.
        "is_granular_data_sharing_allowed": granular,
        "promoted_properties": {
            "account_id": account_id,
            "campaign_id": campaign_id,
            "line_item_id": line_item_id,
            "campaign_name": campaign_name,
            "line_item_objective": "APP_ENGAGEMENTS",
            "publisher_app_id": None,
        },
    }


@functools.lru_cache(maxsize=4096)
def _ids(account_id: str, campaign_name: str | None) -> tuple[str, str, str]:
    """Stable ids for a campaign: short campaign and line item ids, a 19-digit tweet id."""
    digest = hashlib.blake2b(f"{account_id}|{campaign_name}".encode(), digest_size=16).digest()
    tweet_id = 10**18 + int.from_bytes(digest[8:], "big") % (9 * 10**18)
    return digest[:3].hex(), digest[3:6].hex(), str(tweet_id)
