"""The seed's workflow, step by step, through the daemon's admin API only: authenticate an
X account, create an app, a campaign and segment, reengagement trackers and postbacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from postbackd.errors import PostbackdError

from .scenarios import CONVERSION_TYPES, LEVEL_COMPLETE, NAMED_CAMPAIGN, PURCHASE, Role

Say = Callable[[str], None]

ACCOUNT_ID: Final = "18ce54d4x5t"
APP_NAME: Final = "Demo Game"
# The App Store id of an iOS app (PRODUCT.md 1: the bundle id of an iOS app is numeric).
APP_STORE_ID: Final = "333903271"
CAMPAIGN: Final = "Winter promo"
SEGMENT: Final = "All"
# Items per page when the demo reads a whole list (the API's largest page).
PAGE_SIZE: Final = 10_000


class DemoError(PostbackdError):
    """A step of the demo failed; the message names the step and the daemon's answer."""


class Api:
    """A client of one daemon's HTTP API, with its bearer token (never shown)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        expect: int = 200,
        ndjson: bytes | None = None,
    ) -> Any:
        """The JSON answer; any other status than `expect` is a DemoError."""
        headers = dict(self._headers)
        data: bytes | None = None
        if ndjson is not None:
            headers["Content-Type"] = "application/x-ndjson"
            data = ndjson
        elif body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        url = self.base_url + path
        async with self.session.request(method, url, data=data, headers=headers) as response:
            raw = await response.read()
            if response.status != expect:
                raise DemoError(f"{method} {path} answered {response.status}: {_why(raw)}")
            return orjson.loads(raw) if raw else None

    async def every(self, path: str) -> list[Any]:
        """Every item of a list, page after page (the list's `next` cursor)."""
        items: list[Any] = []
        separator = "&" if "?" in path else "?"
        url = f"{path}{separator}limit={PAGE_SIZE}"
        while True:
            page = await self.call("GET", url)
            items += page["items"]
            if "next" not in page:
                return items
            # A cursor is base64url: safe in a query string as it is.
            url = f"{path}{separator}limit={PAGE_SIZE}&cursor={page['next']}"


def _why(raw: bytes) -> str:
    try:
        error = orjson.loads(raw)["error"]
        return f"{error['message']} (field {error.get('field')})"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw[:200].decode(errors="replace")


@dataclass(frozen=True, slots=True)
class TrackerInfo:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Setup:
    app_id: str
    trackers: dict[Role, TrackerInfo]


async def configure(api: Api, account_token: str, account_secret: str, say: Say) -> Setup:
    """Steps 1 to 5, one line each."""
    account = await api.call(
        "POST",
        "/api/v1/x-accounts",
        {
            "id": ACCOUNT_ID,
            "name": "Demo ads",
            "access_token": account_token,
            "access_token_secret": account_secret,
        },
        expect=201,
    )
    # PRODUCT.md 1: authenticated only once a signed call to X succeeded with the token.
    if not account["authenticated"]:
        raise DemoError(
            f"X account {ACCOUNT_ID} did not authenticate: {account['last_auth_error']}"
        )
    say(
        f"1. X account {ACCOUNT_ID} authenticated "
        f"(signed GET /12/accounts/{ACCOUNT_ID} answered 200)"
    )

    app = await api.call(
        "POST",
        "/api/v1/apps",
        {"name": APP_NAME, "platform": "ios", "bundle_id": APP_STORE_ID},
        expect=201,
    )
    say(f"2. app {APP_NAME} (ios, App Store id {APP_STORE_ID}): {app['id']}")

    campaign = await api.call(
        "POST", "/api/v1/campaigns", {"app_id": app["id"], "name": CAMPAIGN}, expect=201
    )
    segment = await api.call(
        "POST", f"/api/v1/campaigns/{campaign['id']}/segments", {"name": SEGMENT}, expect=201
    )
    say(f"3. campaign '{CAMPAIGN}' / segment '{SEGMENT}'")

    base = {
        "app_id": app["id"],
        "network": "x_ios",
        "x_account_ids": [ACCOUNT_ID],
        "target_event": "PURCHASE",
        "event_matching_event": PURCHASE,
    }
    default = await api.call(
        "POST",
        "/api/v1/trackers",
        {
            **base,
            "segment_id": segment["id"],
            "name": "Winter reengagement",
            "default": True,
            "post_engagement_window_days": 14,
            "post_view_window_days": 1,
        },
        expect=201,
    )
    say(f"4. reengagement tracker {_tracker_line(default)}")
    # Not default: only a campaign name carrying its id leads to it (PRODUCT.md 1, step 3).
    named = await api.call(
        "POST",
        "/api/v1/trackers",
        {
            **base,
            "campaign_name": NAMED_CAMPAIGN,
            "segment_name": SEGMENT,
            "name": "Spring reengagement",
            "post_engagement_window_days": 7,
        },
        expect=201,
    )
    say(f"   reengagement tracker {_tracker_line(named)}")
    say(
        f"      (campaign '{NAMED_CAMPAIGN}' / segment '{SEGMENT}' made on the fly; "
        "X campaign names that carry its id lead to it)"
    )

    for step, event_name in (("5.", PURCHASE), ("  ", LEVEL_COMPLETE)):
        postback = await api.call(
            "POST",
            "/api/v1/postbacks",
            {
                "app_id": app["id"],
                "network": "x_ios",
                "event_name": event_name,
                "conversion_type": CONVERSION_TYPES[event_name],
            },
            expect=201,
        )
        delay_s = postback["delivery_delay_s"]
        say(
            f"{step} postback {event_name} -> "
            f"{postback['conversion_type']} ({f'{delay_s} s delay' if delay_s else 'realtime'}, "
            f"{postback['retry_attempts']} retries, delivery method "
            f"{postback['delivery_method']})"
        )

    return Setup(
        app["id"],
        {
            "default": TrackerInfo(default["id"], default["name"]),
            "named": TrackerInfo(named["id"], named["name"]),
        },
    )


def _tracker_line(tracker: dict[str, Any]) -> str:
    flag = " (default)" if tracker["default"] else ""
    return (
        f"'{tracker['name']}'{flag}, id {tracker['id']}, windows "
        f"{tracker['post_engagement_window_days']}/{tracker['post_view_window_days']} days, "
        f"event-matching event '{tracker['event_matching_event']}'"
    )
