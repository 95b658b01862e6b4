"""End-to-end helpers: the simulated X with a scripted engagement file and the real daemon,
driven through HTTP only (admin API, `POST /track/json`, results API, `/_mock/*`).

The script is fixed when the simulated X starts, and tracker ids are only known once the
daemon made them: `World.restart(script=...)` starts a new simulated X with the script and
the daemon again on the same data directory, so a script can name trackers that exist.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from conftest import (
    ACCOUNT_ID,
    ACCOUNT_SECRET,
    ACCOUNT_TOKEN,
    HMAC_KEY,
    Api,
    daemon_settings,
    mock_config,
)
from postbackd.daemon import Daemon
from postbackd.mockx.app import start_mock
from postbackd.mockx.config import MockAccount

# Three X accounts the simulated X knows; A is conftest's account.
ACCOUNT_A: Final = MockAccount(ACCOUNT_ID, ACCOUNT_TOKEN, ACCOUNT_SECRET, "Ads A")
ACCOUNT_B: Final = MockAccount("acct-b-22", "2222-token-b", "secret-b-2222", "Ads B")
ACCOUNT_C: Final = MockAccount("acct-c-33", "3333-token-c", "secret-c-3333", "Ads C")
ACCOUNTS: Final = (ACCOUNT_A, ACCOUNT_B, ACCOUNT_C)

IOS_BUNDLE: Final = "333903271"
ANDROID_PACKAGE: Final = "com.example.game"
NETWORK: Final = {"ios": "x_ios", "android": "x_android"}

# Delivery states after which nothing changes without an operator.
FINAL: Final = frozenset({"delivered", "skipped", "dead"})
WAIT_S: Final = 5.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MS: Final = timedelta(milliseconds=1)
HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
# The conversion time most tests use: noon two days ago plus 250 ms, so that windows are
# checked at millisecond precision and `usertime` stays within what ingest accepts.
T0: Final = (datetime.now(UTC) - timedelta(days=2)).replace(
    hour=12, minute=0, second=0, microsecond=250_000
)


def idfa(n: int) -> str:
    """A distinct, usable IDFA for device number `n` (>= 1)."""
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def usertime(moment: datetime) -> float:
    """Kochava's `usertime`: epoch seconds, with the milliseconds as a fraction."""
    return ((moment - _EPOCH) // MS) / 1000


def x_time(moment: datetime) -> str:
    """X's timestamp form: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hashed_device_id(raw: str) -> str:
    """Reference, `hashed_device_id`: base64(HMAC-SHA256(partner key, raw id))."""
    return base64.b64encode(hmac.new(HMAC_KEY, raw.encode(), hashlib.sha256).digest()).decode()


def engagement(
    device_id: str,
    at: datetime,
    *,
    node: str = "twitter",
    kind: str = "CLICK",
    campaign: str | None = "Spring promo",
    granular: bool = True,
) -> dict[str, object]:
    """One line of the simulated X's engagement script."""
    return {
        "device_id": device_id,
        "node": node,
        "engagement_type": kind,
        "engagement_time": x_time(at),
        "campaign_name": campaign,
        "is_granular_data_sharing_allowed": granular,
    }


def event(
    app: Mapping[str, Any],
    *,
    idfa: str | None = None,
    adid: str | None = None,
    device_ids: Mapping[str, str] | None = None,
    name: str = "purchase",
    at: datetime = T0,
    event_data: Mapping[str, object] | None = None,
    **extra: object,
) -> dict[str, object]:
    """A Kochava server-to-server event of `app` with a fresh `event_id`."""
    ids = dict(device_ids or {})
    if idfa is not None:
        ids["idfa"] = idfa
    if adid is not None:
        ids["adid"] = adid
    return {
        "action": "event",
        "event_id": f"ev-{uuid.uuid4().hex}",
        "kochava_app_id": app["id"],
        "kochava_device_id": "KD" + uuid.uuid4().hex,
        "device_ids": ids,
        "usertime": usertime(at),
        "data": {"event_name": name, "event_data": dict(event_data or {})},
        **extra,
    }


class World:
    """The simulated X and one daemon at a time on a data directory that outlives it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.session = aiohttp.ClientSession()
        self.x_url = ""
        self.daemon: Daemon | None = None
        self._mock: web.AppRunner | None = None
        self._scripts = 0
        self._api: Api | None = None
        # Settings of every daemon this world starts, beside the usual ones.
        self.settings: dict[str, Any] = {}

    @property
    def api(self) -> Api:
        assert self._api is not None, "start the world first"
        return self._api

    async def start(self, script: Sequence[Mapping[str, object]] = ()) -> Api:
        await self._start_mock(script)
        await self._start_daemon()
        return self.api

    async def restart(self, script: Sequence[Mapping[str, object]] | None = None) -> Api:
        """Stop the daemon and start a new one on the same data directory; with `script`,
        on a new simulated X that answers from it."""
        await self._stop_daemon()
        if script is not None:
            await self._stop_mock()
            await self._start_mock(script)
        await self._start_daemon()
        return self.api

    async def close(self) -> None:
        try:
            await self._stop_daemon()
            await self._stop_mock()
        finally:
            await self.session.close()

    async def _start_mock(self, script: Sequence[Mapping[str, object]]) -> None:
        path = None
        if script:
            self._scripts += 1
            path = self.tmp_path / f"engagements-{self._scripts}.json"
            path.write_text(json.dumps(list(script)), encoding="utf-8")
        config = replace(mock_config(script=str(path) if path else None), accounts=ACCOUNTS)
        self._mock, self.x_url = await start_mock(config)

    async def _stop_mock(self) -> None:
        if self._mock is not None:
            await self._mock.cleanup()
            self._mock = None

    async def _start_daemon(self) -> None:
        daemon = Daemon(daemon_settings(self.data_dir, self.x_url, **self.settings))
        await daemon.start()
        self.daemon = daemon
        self._api = Api(self.session, f"http://127.0.0.1:{daemon.port}")

    async def _stop_daemon(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon = None

    # --- the simulated X -----------------------------------------------------------------

    async def mock(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(method, self.x_url + path, **kw) as r:
            assert r.status == 200, (r.status, await r.text())
            return await r.json()

    async def claim_requests(self) -> list[dict[str, Any]]:
        """Every `conversion_event` call X received, oldest first."""
        log = await self.mock("GET", "/_mock/requests", params={"limit": "100000"})
        return [r for r in log["requests"] if r["path"].endswith("/conversion_event")]

    async def revoke(self, account: MockAccount) -> None:
        await self.mock("PATCH", "/_mock/config", json={"revoke_tokens": [account.id]})

    async def restore(self, account: MockAccount) -> None:
        await self.mock("PATCH", "/_mock/config", json={"restore_tokens": [account.id]})

    # --- events and results --------------------------------------------------------------

    async def send(self, *events: Mapping[str, object]) -> list[str]:
        """Post the events; every one must be accepted. Their event ids, in order."""
        answer = await self.api.ok("POST", "/track/json", 202, json=list(events))
        assert answer["accepted"] == len(events), answer
        return [str(i) for i in answer["event_ids"]]

    async def details(self, event_id: str) -> dict[str, Any]:
        return await self.api.ok("GET", f"/api/v1/events/{event_id}")  # type: ignore[no-any-return]

    async def wait(self, event_id: str, states: Collection[str] = FINAL) -> dict[str, Any]:
        """The event's details once each of its deliveries is in one of `states`."""
        deadline = time.monotonic() + WAIT_S
        while True:
            found = await self.details(event_id)
            if found["deliveries"] and all(d["state"] in states for d in found["deliveries"]):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"event {event_id} not in {sorted(states)}: {found}")
            await asyncio.sleep(0.01)

    async def claim(self, event_id: str) -> dict[str, Any]:
        """The only claim of a delivered event."""
        found = await self.wait(event_id)
        assert [d["state"] for d in found["deliveries"]] == ["delivered"], found
        assert len(found["claims"]) == 1, found
        return found["claims"][0]  # type: ignore[no-any-return]

    async def attributions(self, **query: str) -> list[dict[str, Any]]:
        found = await self.api.ok("GET", "/api/v1/attributions", params=query)
        return found["items"]  # type: ignore[no-any-return]


# --- configuration through the admin API ------------------------------------------------


async def add_account(api: Api, account: MockAccount) -> dict[str, Any]:
    return await api.ok(  # type: ignore[no-any-return]
        "POST",
        "/api/v1/x-accounts",
        201,
        json={
            "id": account.id,
            "name": account.name,
            "access_token": account.token,
            "access_token_secret": account.secret,
        },
    )


async def add_app(api: Api, platform: str = "ios", name: str = "Demo Game") -> dict[str, Any]:
    bundle = IOS_BUNDLE if platform == "ios" else ANDROID_PACKAGE
    return await api.ok(  # type: ignore[no-any-return]
        "POST",
        "/api/v1/apps",
        201,
        json={"name": name, "platform": platform, "bundle_id": bundle},
    )


async def add_tracker(
    api: Api, app: Mapping[str, Any], name: str, **fields: object
) -> dict[str, Any]:
    """A reengagement tracker of `app` (account A, event `purchase`, unless told)."""
    body: dict[str, object] = {
        "app_id": app["id"],
        "campaign_name": "Winter",
        "segment_name": "All",
        "name": name,
        "network": NETWORK[app["platform"]],
        "x_account_ids": [ACCOUNT_A.id],
        "target_event": "PURCHASE",
        "event_matching_event": "purchase",
        **fields,
    }
    return await api.ok("POST", "/api/v1/trackers", 201, json=body)  # type: ignore[no-any-return]


async def add_postback(
    api: Api, app: Mapping[str, Any], event_name: str = "purchase", **fields: object
) -> dict[str, Any]:
    """A postback of `app` for `event_name` (PURCHASE, no retries, unless told)."""
    body: dict[str, object] = {
        "app_id": app["id"],
        "network": NETWORK[app["platform"]],
        "event_name": event_name,
        "conversion_type": "PURCHASE",
        "retry_attempts": 0,
        **fields,
    }
    return await api.ok("POST", "/api/v1/postbacks", 201, json=body)  # type: ignore[no-any-return]
