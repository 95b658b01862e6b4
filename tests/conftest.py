"""Shared fixtures: the simulated X and the real daemon on loopback ports, each test with
its own data directory and SQLite file."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from postbackd.daemon import Daemon
from postbackd.mockx.app import start_mock
from postbackd.mockx.config import MockAccount, MockConfig
from postbackd.settings import Settings
from postbackd.store.embedded import EmbeddedStore

CONSUMER_KEY = "test-consumer-key"
CONSUMER_SECRET = "test-consumer-secret-0001"
HMAC_KEY = b"test-hmac-key-0123456789abcdef!!"
ACCOUNT_ID = "18ce54d4x5t"
ACCOUNT_TOKEN = "1234-account-token-abcdef"
ACCOUNT_SECRET = "account-token-secret-xyz789"
API_TOKEN = "test-api-token-5f1c2a3b4d5e6f70"


@dataclass
class MockX:
    url: str
    config: MockConfig

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path, **kw) as r:
            return await r.json()


def mock_config(**kw: Any) -> MockConfig:
    return MockConfig(
        consumer_key=CONSUMER_KEY,
        consumer_secret=CONSUMER_SECRET,
        hmac_key=HMAC_KEY,
        accounts=(MockAccount(id=ACCOUNT_ID, token=ACCOUNT_TOKEN, secret=ACCOUNT_SECRET),),
        **kw,
    )


@pytest.fixture
async def mock_x() -> AsyncIterator[MockX]:
    config = mock_config()
    runner, url = await start_mock(config)
    try:
        yield MockX(url, config)
    finally:
        await runner.cleanup()


def daemon_settings(data_dir: Path, x_url: str, **kw: Any) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        x_api_url=x_url,
        x_consumer_key=CONSUMER_KEY,
        x_consumer_secret=CONSUMER_SECRET,
        x_hmac_key=base64.b64encode(HMAC_KEY).decode(),
        api_token=API_TOKEN,
    )
    return replace(base, **kw)


class Api:
    """A client of the admin API of one running daemon."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.auth = {"Authorization": f"Bearer {API_TOKEN}"}

    async def request(
        self, method: str, path: str, *, auth: bool = True, **kw: Any
    ) -> tuple[int, Any]:
        headers = {**(self.auth if auth else {}), **kw.pop("headers", {})}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            body = await r.read()
            if not body:
                return r.status, None
            assert r.content_type == "application/json", (r.status, body[:200])
            return r.status, await r.json()

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        got, body = await self.request(method, path, **kw)
        assert got == status, (got, body)
        return body


@pytest.fixture
async def embedded_store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    """The embedded store, opened on a real SQLite file of the test's own."""
    store = EmbeddedStore(tmp_path)
    await store.open()
    yield store
    await store.close()


@dataclass
class Running:
    daemon: Daemon
    api: Api
    data_dir: Path


@pytest.fixture
async def running(tmp_path: Path, mock_x: MockX) -> AsyncIterator[Running]:
    data_dir = tmp_path / "data"
    daemon = Daemon(daemon_settings(data_dir, mock_x.url))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, Api(session, f"http://127.0.0.1:{daemon.port}"), data_dir)
    finally:
        await daemon.stop()


async def seed_config(api: Api, *, platform: str = "ios") -> dict[str, Any]:
    """An authenticated X account, an app, a campaign+segment, a tracker and a postback."""
    account = await api.ok(
        "POST",
        "/api/v1/x-accounts",
        201,
        json={
            "id": ACCOUNT_ID,
            "name": "Ads",
            "access_token": ACCOUNT_TOKEN,
            "access_token_secret": ACCOUNT_SECRET,
        },
    )
    assert account["authenticated"] is True, account
    bundle = "333903271" if platform == "ios" else "com.example.game"
    app = await api.ok(
        "POST",
        "/api/v1/apps",
        201,
        json={"name": "Demo Game", "platform": platform, "bundle_id": bundle},
    )
    network = "x_ios" if platform == "ios" else "x_android"
    tracker = await api.ok(
        "POST",
        "/api/v1/trackers",
        201,
        json={
            "app_id": app["id"],
            "campaign_name": "Winter",
            "segment_name": "All",
            "name": "Winter reengagement",
            "network": network,
            "x_account_ids": [ACCOUNT_ID],
            "target_event": "PURCHASE",
            "event_matching_event": "purchase",
        },
    )
    postback = await api.ok(
        "POST",
        "/api/v1/postbacks",
        201,
        json={
            "app_id": app["id"],
            "network": network,
            "event_name": "purchase",
            "conversion_type": "PURCHASE",
        },
    )
    return {"account": account, "app": app, "tracker": tracker, "postback": postback}


async def seed_second_account(
    api: Api, account: tuple[str, str, str], **postback: object
) -> dict[str, Any]:
    """A second X account (ID, token, secret) and an app whose postback that account signs
    (its own x_account_id): the app's claims go through the account's own lane."""
    account_id, token, secret = account
    await api.ok("POST", "/api/v1/x-accounts", 201, json={
        "id": account_id, "name": "Second", "access_token": token, "access_token_secret": secret,
    })  # fmt: skip
    app = await api.ok("POST", "/api/v1/apps", 201,
                       json={"name": "Other", "platform": "ios", "bundle_id": "444"})  # fmt: skip
    await api.ok("POST", "/api/v1/postbacks", 201, json={
        "app_id": app["id"], "network": "x_ios", "event_name": "purchase",
        "conversion_type": "PURCHASE", "x_account_id": account_id, **postback,
    })  # fmt: skip
    return app  # type: ignore[no-any-return]
