"""Scripted engagements: which device X saw engage with which campaign, on which node.

File: a JSON array or NDJSON, one engagement per entry:

    {"device_id": "<IDFA or ADID, raw>", "node": "twitter" | "tpn",
     "engagement_type": "CLICK" | "VIEW", "engagement_time": "<ISO-8601>",
     "campaign_name": "..." | null, "account_id": "...",
     "is_granular_data_sharing_allowed": true | false,
     "os_type": "IOS" | "ANDROID", "conversion_type": "PURCHASE"}

`os_type`, `account_id` (default: the signing token's account), `conversion_type` (a filter:
the entry only answers that conversion type), `campaign_name` and
`is_granular_data_sharing_allowed` (default true) are optional. The mock hashes `device_id`
the way the reference says a partner must, so it answers only a correctly hashed id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from postbackd.mockx.params import CONVERSION_TYPES, ENGAGEMENT_TYPES, OS_TYPES

NODES: Final = ("twitter", "tpn")


def hash_device_id(hmac_key: bytes, raw_device_id: str, os_type: str) -> str:
    """Reference, `hashed_device_id` (our choice): IDFA upper-cased, ADID lower-cased, then
    base64(HMAC-SHA256(partner key, id))."""
    raw = raw_device_id.upper() if os_type == "IOS" else raw_device_id.lower()
    digest = hmac.new(hmac_key, raw.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class Engagement:
    node: str
    engagement_type: str
    engagement_time: datetime
    campaign_name: str | None
    account_id: str | None
    granular_data_sharing_allowed: bool
    conversion_type: str | None


# (os_type, hashed_device_id) -> the device's engagements, in file order.
ScriptBook = dict[tuple[str, str], list[Engagement]]


def load_script(path: str | Path, hmac_key: bytes) -> ScriptBook:
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON array of engagements")
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    book: ScriptBook = {}
    for index, item in enumerate(items):
        try:
            raw_id, os_types, engagement = _entry(item)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: engagement {index}: {exc}") from None
        for os_type in os_types:
            key = (os_type, hash_device_id(hmac_key, raw_id, os_type))
            book.setdefault(key, []).append(engagement)
    return book


def _entry(item: object) -> tuple[str, tuple[str, ...], Engagement]:
    if not isinstance(item, Mapping):
        raise ValueError("an engagement is a JSON object")
    raw_id = item["device_id"]
    if not isinstance(raw_id, str) or not raw_id:
        raise ValueError("device_id must be a non-empty string")
    # Without os_type the id may be either kind: index both casings, each under its OS only.
    os_type = item.get("os_type")
    os_types = (
        tuple(sorted(OS_TYPES)) if os_type is None else (_one_of("os_type", os_type, OS_TYPES),)
    )
    conversion_type = item.get("conversion_type")
    granular = item.get("is_granular_data_sharing_allowed", True)
    if not isinstance(granular, bool):
        raise ValueError("is_granular_data_sharing_allowed must be true or false")
    engagement = Engagement(
        node=_one_of("node", item["node"], NODES),
        engagement_type=_one_of("engagement_type", item["engagement_type"], ENGAGEMENT_TYPES),
        engagement_time=_time(item["engagement_time"]),
        campaign_name=_optional_text("campaign_name", item.get("campaign_name")),
        account_id=_optional_text("account_id", item.get("account_id")),
        granular_data_sharing_allowed=granular,
        conversion_type=None
        if conversion_type is None
        else _one_of("conversion_type", conversion_type, CONVERSION_TYPES),
    )
    return raw_id, os_types, engagement


def _one_of(name: str, value: object, allowed: frozenset[str] | tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _optional_text(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("engagement_time must be an ISO-8601 string")
    parsed = datetime.fromisoformat(value)
    # A time without an offset is read as UTC, the zone of every X timestamp.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
