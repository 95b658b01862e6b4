"""The simulated X, over real loopback HTTP, with requests signed by oauthlib's client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from oauthlib.oauth1 import Client

from postbackd.mockx.account_faults import AccountFaults
from postbackd.mockx.app import start_mock
from postbackd.mockx.config import MockAccount, MockConfig
from postbackd.mockx.latency import Latency
from postbackd.mockx.script import hash_device_id

HMAC_KEY = bytes(range(32))
ACCOUNTS = (
    MockAccount("18ce54d4x5t", "token-a", "secret-a", "Alpha"),
    MockAccount("18ce54d4x5u", "token-b", "secret-b", "Beta"),
)
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
ADID = "38400000-8CF0-11BD-B23E-10B96E40000D"
CONVERSION_TIME = "2026-11-28T12:00:00.123Z"
# The second account's token: its requests belong to that account.
AS_B = {"token": "token-b", "secret": "secret-b"}
A_ID, B_ID = ACCOUNTS[0].id, ACCOUNTS[1].id

Start = Callable[..., Awaitable[str]]


def base_config(**overrides: Any) -> MockConfig:
    settings: dict[str, Any] = {
        "consumer_key": "consumer",
        "consumer_secret": "consumer-secret",
        "hmac_key": HMAC_KEY,
        "accounts": ACCOUNTS,
    }
    return MockConfig(**(settings | overrides))


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    runners = []

    async def start(**overrides: Any) -> str:
        runner, base_url = await start_mock(base_config(**overrides))
        runners.append(runner)
        return base_url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def claim_params(**overrides: str | None) -> dict[str, str]:
    params = {
        "app_id": "333903271",
        "os_type": "IOS",
        "hashed_device_id": hash_device_id(HMAC_KEY, IDFA, "IOS"),
        "conversion_type": "PURCHASE",
        "conversion_time": CONVERSION_TIME,
    }
    params.update(overrides)  # type: ignore[arg-type]
    return {k: v for k, v in params.items() if v is not None}


def sign(
    method: str,
    url: str,
    *,
    token: str = "token-a",
    secret: str = "secret-a",
    consumer: tuple[str, str] = ("consumer", "consumer-secret"),
    timestamp: str | None = None,
) -> tuple[str, dict[str, str]]:
    client = Client(
        consumer[0],
        client_secret=consumer[1],
        resource_owner_key=token,
        resource_owner_secret=secret,
        timestamp=timestamp,
    )
    uri, headers, _ = client.sign(url, method)
    return uri, headers


async def claim(
    session: aiohttp.ClientSession, base_url: str, params: dict[str, str], **signing: Any
) -> tuple[int, dict[str, Any], Any]:
    uri, headers = sign("POST", f"{base_url}/12/conversion_event?{urlencode(params)}", **signing)
    async with session.post(uri, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


def write_script(tmp_path: Path, entries: list[dict[str, Any]]) -> str:
    path = tmp_path / "engagements.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return str(path)


async def test_signed_claim_answers_in_the_reference_shape(
    start: Start, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path,
        [
            {
                "device_id": IDFA,
                "node": "twitter",
                "engagement_type": "CLICK",
                "engagement_time": "2026-11-20T08:15:00Z",
                "campaign_name": "Winter promo kodemo-ios5f1c2a3b4d5e6f708192a3b4",
                "account_id": "18ce54d4x5t",
                "is_granular_data_sharing_allowed": True,
            }
        ],
    )
    base_url = await start(script=script)
    params = claim_params(click_window="7", view_through_window="1", price_micro="9990000")

    status, headers, body = await claim(session, base_url, params)

    assert status == 200
    assert body["request"] == {"params": params}
    data = body["data"]
    assert data["click_window"] == 7 and data["view_through_window"] == 1
    assert {k: data[k] for k in ("app_id", "os_type", "hashed_device_id")} == {
        k: params[k] for k in ("app_id", "os_type", "hashed_device_id")
    }
    assert data["conversion_type"] == "PURCHASE" and data["conversion_time"] == CONVERSION_TIME
    assert data["tpn_attribution"] is None
    node = data["twitter_attribution"]
    assert node["engagement_type"] == "CLICK"
    assert node["engagement_time"] == "2026-11-20T08:15:00.000Z"
    assert node["attribution_type"] == "PROMOTED"
    assert node["is_granular_data_sharing_allowed"] is True
    promoted = node["promoted_properties"]
    assert promoted["account_id"] == "18ce54d4x5t"
    assert promoted["campaign_name"] == "Winter promo kodemo-ios5f1c2a3b4d5e6f708192a3b4"
    assert promoted["line_item_objective"] == "APP_ENGAGEMENTS"
    assert set(promoted) >= {"campaign_id", "line_item_id", "publisher_app_id"}
    assert headers["x-rate-limit-limit"] == "60000"
    assert headers["x-rate-limit-remaining"] == "59999"
    assert int(headers["x-rate-limit-reset"]) >= time.time() + 890


async def test_default_windows_and_no_claim(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start()

    status, _, body = await claim(session, base_url, claim_params())

    assert status == 200
    assert (body["data"]["click_window"], body["data"]["view_through_window"]) == (14, 1)
    assert body["data"]["twitter_attribution"] is None
    assert body["data"]["tpn_attribution"] is None


@pytest.mark.parametrize(
    "signing",
    [
        pytest.param({"secret": "wrong"}, id="bad-signature"),
        pytest.param({"consumer": ("other", "consumer-secret")}, id="unknown-consumer"),
        pytest.param({"token": "token-z", "secret": "secret-a"}, id="unknown-token"),
        pytest.param({"timestamp": str(int(time.time()) - 3600)}, id="stale-timestamp"),
    ],
)
async def test_unauthenticated_calls_answer_401(
    start: Start, session: aiohttp.ClientSession, signing: dict[str, Any]
) -> None:
    base_url = await start()

    status, _, body = await claim(session, base_url, claim_params(), **signing)

    assert status == 401
    assert body["errors"][0]["code"] == "UNAUTHORIZED_ACCESS"


async def test_unsigned_call_answers_401(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start()

    async with session.post(f"{base_url}/12/conversion_event?{urlencode(claim_params())}") as r:
        assert r.status == 401
        assert (await r.json())["errors"][0]["code"] == "UNAUTHORIZED_ACCESS"


@pytest.mark.parametrize(
    ("overrides", "code", "parameter"),
    [
        ({"app_id": None}, "MISSING_PARAMETER", "app_id"),
        ({"conversion_time": None}, "MISSING_PARAMETER", "conversion_time"),
        ({"os_type": "WINDOWS"}, "INVALID_PARAMETER", "os_type"),
        ({"hashed_device_id": base64.b64encode(b"x" * 16).decode()}, "INVALID_PARAMETER",
         "hashed_device_id"),
        ({"hashed_device_id": IDFA}, "INVALID_PARAMETER", "hashed_device_id"),
        ({"conversion_type": "BUY"}, "INVALID_PARAMETER", "conversion_type"),
        ({"conversion_time": "2026-11-28T12:00:00Z"}, "INVALID_PARAMETER", "conversion_time"),
        ({"conversion_time": "2026-02-30T12:00:00.000Z"}, "INVALID_PARAMETER",
         "conversion_time"),
        ({"click_window": "2"}, "INVALID_TIME_WINDOW", "click_window"),
        ({"view_through_window": "3"}, "INVALID_TIME_WINDOW", "view_through_window"),
        ({"click_window": "1", "view_through_window": "7"}, "INVALID_TIME_WINDOW",
         "click_window"),
        ({"click_window": "week"}, "INVALID_PARAMETER", "click_window"),
        ({"price_micro": "9.99"}, "INVALID_PARAMETER", "price_micro"),
        ({"user_payment_info": "yes"}, "INVALID_PARAMETER", "user_payment_info"),
        ({"device_ip_address": "300.1.1.1"}, "INVALID_PARAMETER", "device_ip_address"),
    ],
)  # fmt: skip
async def test_bad_parameters_answer_400_naming_the_parameter(
    start: Start,
    session: aiohttp.ClientSession,
    overrides: dict[str, str | None],
    code: str,
    parameter: str,
) -> None:
    base_url = await start()
    params = claim_params(**overrides)

    status, _, body = await claim(session, base_url, params)

    assert status == 400
    assert body["errors"] == [
        {"code": code, "message": body["errors"][0]["message"], "parameter": parameter}
    ]
    assert body["request"] == {"params": params}


async def test_rate_limit_answers_429_until_the_window_resets(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start(rate_limit=2, rate_window_s=1.0)

    answers = [await claim(session, base_url, claim_params()) for _ in range(3)]
    other_token = await claim(session, base_url, claim_params(), token="token-b", secret="secret-b")

    assert [a[0] for a in answers] == [200, 200, 429]
    status, headers, body = answers[2]
    assert body["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert headers["x-rate-limit-limit"] == "2"
    assert headers["x-rate-limit-remaining"] == "0"
    reset_at = int(headers["x-rate-limit-reset"])
    assert time.time() <= reset_at <= time.time() + 2
    assert other_token[0] == 200  # the budget is per token

    await asyncio.sleep(1.05)
    status, headers, _ = await claim(session, base_url, claim_params())
    assert status == 200
    assert headers["x-rate-limit-remaining"] == "1"


async def test_scripted_claims_on_both_nodes(
    start: Start, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path,
        [
            {"device_id": IDFA, "node": "twitter", "engagement_type": "VIEW",
             "engagement_time": "2026-11-27T10:00:00.000Z", "campaign_name": None,
             "account_id": "18ce54d4x5u", "is_granular_data_sharing_allowed": False},
            {"device_id": IDFA, "node": "twitter", "engagement_type": "CLICK",
             "engagement_time": "2026-11-25T10:00:00.000Z", "campaign_name": "older click",
             "account_id": "18ce54d4x5u", "is_granular_data_sharing_allowed": False},
            {"device_id": IDFA, "node": "tpn", "engagement_type": "VIEW",
             "engagement_time": "2026-11-28T11:00:00.000Z", "campaign_name": "tpn view",
             "account_id": "18ce54d4x5u", "is_granular_data_sharing_allowed": True},
            {"device_id": ADID, "os_type": "ANDROID", "node": "tpn", "engagement_type": "CLICK",
             "engagement_time": "2026-11-28T11:00:00.000Z", "campaign_name": "signup only",
             "account_id": "18ce54d4x5u", "conversion_type": "SIGN_UP"},
        ],
    )  # fmt: skip
    base_url = await start(script=script)

    _, _, ios = await claim(session, base_url, claim_params())
    android = claim_params(
        os_type="ANDROID",
        app_id="com.example.game",
        hashed_device_id=hash_device_id(HMAC_KEY, ADID, "ANDROID"),
    )
    _, _, purchase = await claim(session, base_url, android)
    _, _, sign_up = await claim(session, base_url, android | {"conversion_type": "SIGN_UP"})
    upper_cased = android | {"hashed_device_id": hash_device_id(HMAC_KEY, ADID.upper(), "IOS")}
    _, _, wrong_hash = await claim(session, base_url, upper_cased | {"conversion_type": "SIGN_UP"})

    twitter, tpn = ios["data"]["twitter_attribution"], ios["data"]["tpn_attribution"]
    # Clicks before views on one node; the data-sharing flag travels inside the node.
    assert twitter["engagement_type"] == "CLICK"
    assert twitter["promoted_properties"]["campaign_name"] == "older click"
    assert twitter["is_granular_data_sharing_allowed"] is False
    assert tpn["engagement_type"] == "VIEW"
    assert tpn["promoted_properties"]["campaign_name"] == "tpn view"
    assert tpn["is_granular_data_sharing_allowed"] is True
    assert purchase["data"]["tpn_attribution"] is None  # filtered to SIGN_UP
    assert sign_up["data"]["tpn_attribution"]["promoted_properties"]["account_id"] == (
        "18ce54d4x5u"
    )
    assert wrong_hash["data"]["tpn_attribution"] is None  # ADID must be lower-cased


async def random_answers(session: aiohttp.ClientSession, base_url: str) -> list[Any]:
    answers = []
    for n in range(60):
        params = claim_params(hashed_device_id=hash_device_id(HMAC_KEY, f"device-{n}", "IOS"))
        _, _, body = await claim(session, base_url, params)
        answers.append((body["data"]["twitter_attribution"], body["data"]["tpn_attribution"]))
    return answers


async def test_seeded_random_claims_are_deterministic(
    start: Start, session: aiohttp.ClientSession
) -> None:
    settings = {"claim_rate": 0.5, "campaign_names": ("Promo A", "Promo B")}
    first = await random_answers(session, await start(seed=7, **settings))
    again = await random_answers(session, await start(seed=7, **settings))
    other = await random_answers(session, await start(seed=8, **settings))

    assert first == again
    assert first != other
    claimed = [twitter or tpn for twitter, tpn in first if twitter or tpn]
    assert 15 <= len(claimed) <= 45
    for node in claimed:
        assert node["promoted_properties"]["campaign_name"] in ("Promo A", "Promo B")
        assert node["engagement_time"] <= CONVERSION_TIME
        assert node["engagement_time"] >= "2026-11-21T12:00:00.123Z"


async def test_outage_switch(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start()

    async with session.patch(f"{base_url}/_mock/config", json={"outage": True}) as r:
        assert r.status == 200
    during = await claim(session, base_url, claim_params())
    async with session.patch(f"{base_url}/_mock/config", json={"outage": False}) as r:
        assert r.status == 200
    after = await claim(session, base_url, claim_params())

    assert during[0] == 503
    assert during[2]["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
    assert after[0] == 200


async def test_connection_reset_fault(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start(reset_rate=1.0)

    with pytest.raises(aiohttp.ClientConnectionError):
        await claim(session, base_url, claim_params())

    async with session.get(f"{base_url}/_mock/stats") as r:
        assert (await r.json())["resets"] == 1


async def test_injected_errors_timeouts_and_latency(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start(error_rate=1.0)
    status, _, body = await claim(session, base_url, claim_params())
    assert (status, body["errors"][0]["code"]) in (
        (500, "INTERNAL_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
    )

    config = {"error_rate": 0, "timeout_rate": 1.0, "timeout_hold_s": 5}
    async with session.patch(f"{base_url}/_mock/config", json=config) as r:
        assert r.status == 200
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await claim(session, base_url, claim_params())

    async with session.patch(
        f"{base_url}/_mock/config", json={"timeout_rate": 0, "latency": "fixed:150"}
    ) as r:
        assert r.status == 200
    started = time.monotonic()
    status, _, _ = await claim(session, base_url, claim_params())
    assert status == 200
    assert time.monotonic() - started >= 0.15

    async with session.get(f"{base_url}/_mock/stats") as r:
        stats = await r.json()
    assert stats["errors"] == 1
    assert stats["timeouts"] == 1


async def test_stats_and_request_log(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start()
    await claim(session, base_url, claim_params())
    await claim(session, base_url, claim_params())  # the same conversion again
    await claim(session, base_url, claim_params(conversion_type="LOGIN"))
    await claim(session, base_url, claim_params(os_type="PC"))
    await claim(session, base_url, claim_params(), secret="wrong")
    await claim(session, base_url, claim_params(), token="token-b", secret="secret-b")

    async with session.get(f"{base_url}/_mock/stats") as r:
        stats = await r.json()
    async with session.get(f"{base_url}/_mock/requests?limit=2&offset=3") as r:
        page = await r.json()
    async with session.post(f"{base_url}/_mock/reset") as r:
        assert r.status == 200
    async with session.get(f"{base_url}/_mock/stats") as r:
        cleared = await r.json()

    assert stats["requests_total"] == 6
    assert stats["requests"]["conversion_event"] == {"200": 4, "400": 1, "401": 1}
    assert stats["tokens"] == {"token-a": 4, "token-b": 1}
    assert stats["tokens_by_status"] == {"token-a": {"200": 3, "400": 1}, "token-b": {"200": 1}}
    assert stats["conversions"] == {"recorded": 4, "distinct": 2, "duplicates": 2}
    # The request that failed its signature belongs to no account.
    assert stats["by_account"] == {
        "18ce54d4x5t": {"requests": 4, "status": {"200": 3, "400": 1}},
        "18ce54d4x5u": {"requests": 1, "status": {"200": 1}},
    }
    assert page["total"] == 6
    assert [(e["status"], e["token"]) for e in page["requests"]] == [(400, "token-a"), (401, None)]
    first = page["requests"][0]
    assert first["method"] == "POST" and first["path"] == "/12/conversion_event"
    assert first["params"]["os_type"] == "PC"
    assert cleared["requests_total"] == 0 and cleared["conversions"]["recorded"] == 0
    assert cleared["by_account"] == {}


async def test_receipt_log_keeps_each_claim_answered_200_when_asked(
    start: Start, session: aiohttp.ClientSession
) -> None:
    plain_url = await start()
    await claim(session, plain_url, claim_params())
    async with session.get(f"{plain_url}/_mock/receipts") as r:
        off = await r.json()

    base_url = await start(receipt_log=True)
    other = hash_device_id(HMAC_KEY, ADID, "ANDROID")
    before_s = time.monotonic()
    await claim(session, base_url, claim_params())
    await claim(session, base_url, claim_params(os_type="PC"))  # 400: not a receipt
    await claim(session, base_url, claim_params(os_type="ANDROID", hashed_device_id=other))
    await claim(session, base_url, claim_params(), secret="wrong")  # 401: not a receipt
    after_s = time.monotonic()
    async with session.get(f"{base_url}/_mock/receipts") as r:
        on = await r.json()
    async with session.get(f"{base_url}/_mock/receipts?offset=1&limit=5") as r:
        page = await r.json()
    async with session.get(f"{base_url}/_mock/receipts?offset=-1") as r:
        refused = r.status
    async with session.post(f"{base_url}/_mock/reset") as r:
        assert r.status == 200
    async with session.get(f"{base_url}/_mock/receipts") as r:
        cleared = await r.json()

    assert off["enabled"] is False and off["total"] == 0 and off["received_s"] == []
    assert on["enabled"] is True and on["clock"] == "monotonic" and on["total"] == 2
    assert on["hashed_device_id"] == [claim_params()["hashed_device_id"], other]
    # The same clock as this process's: between the moments around the calls, in order.
    first_s, second_s = on["received_s"]
    assert before_s <= first_s <= second_s <= after_s
    assert page["hashed_device_id"] == [other] and page["received_s"] == [second_s]
    assert refused == 400
    assert cleared["total"] == 0 and cleared["hashed_device_id"] == []


async def test_revoked_tokens_answer_401_until_restored(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start()

    async def account_check(account_id: str) -> int:
        uri, headers = sign("GET", f"{base_url}/12/accounts/{account_id}")
        async with session.get(uri, headers=headers) as r:
            return r.status

    before = (await account_check("18ce54d4x5t"), await account_check("18ce54d4x5u"))
    async with session.patch(
        f"{base_url}/_mock/config", json={"revoke_tokens": ["18ce54d4x5t"]}
    ) as r:
        view = await r.json()
    revoked = (await account_check("18ce54d4x5t"), await claim(session, base_url, claim_params()))
    other = await claim(session, base_url, claim_params(), token="token-b", secret="secret-b")
    async with session.patch(
        f"{base_url}/_mock/config", json={"restore_tokens": ["18ce54d4x5t"]}
    ) as r:
        assert r.status == 200
    restored = await claim(session, base_url, claim_params())

    assert before == (200, 401)  # token-a has no access to the second account
    assert [a["revoked"] for a in view["accounts"]] == [True, False]
    assert revoked[0] == 401
    assert revoked[1][0] == 401
    assert revoked[1][2]["errors"][0]["code"] == "UNAUTHORIZED_ACCESS"
    assert "x-rate-limit-remaining" in revoked[1][1]
    assert other[0] == 200
    assert restored[0] == 200


async def test_unknown_account_and_bad_patch_are_refused(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start()

    for body in ({"revoke_tokens": ["nope"]}, {"error_rate": 2}, {"consumer_key": "x"}):
        async with session.patch(f"{base_url}/_mock/config", json=body) as r:
            assert r.status == 400
    async with session.get(f"{base_url}/_mock/config") as r:
        config = await r.json()
    assert config["error_rate"] == 0
    assert "consumer_secret" not in config and "secret-a" not in json.dumps(config)


async def test_other_api_version_answers_404(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start()

    uri, headers = sign("POST", f"{base_url}/11/conversion_event?{urlencode(claim_params())}")
    async with session.post(uri, headers=headers) as r:
        assert r.status == 404
        body = await r.json()
    assert body["errors"][0]["code"] == "NOT_FOUND"


async def test_app_allow_list(start: Start, session: aiohttp.ClientSession) -> None:
    base_url = await start(apps=("333903271",))

    known = await claim(session, base_url, claim_params())
    unknown = await claim(session, base_url, claim_params(app_id="42"))

    assert known[0] == 200
    assert unknown[0] == 404
    assert unknown[2]["errors"][0] == {
        "code": "MACT_APP_NOT_FOUND",
        "message": unknown[2]["errors"][0]["message"],
        "parameter": "app_id",
    }


async def stats_of(session: aiohttp.ClientSession, base_url: str) -> Any:
    async with session.get(f"{base_url}/_mock/stats") as r:
        return await r.json()


async def account_check(
    session: aiohttp.ClientSession, base_url: str, account_id: str, **signing: Any
) -> tuple[int, dict[str, str]]:
    uri, headers = sign("GET", f"{base_url}/12/accounts/{account_id}", **signing)
    async with session.get(uri, headers=headers) as r:
        return r.status, dict(r.headers)


async def patch(session: aiohttp.ClientSession, base_url: str, body: Any) -> tuple[int, Any]:
    async with session.patch(f"{base_url}/_mock/config", json=body) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    "slow",
    [
        pytest.param(AccountFaults(latency=Latency("fixed", 60_000)), id="latency"),
        pytest.param(AccountFaults(timeout_rate=1.0), id="held"),
    ],
)
async def test_a_slow_account_leaves_the_others_fast(
    start: Start, session: aiohttp.ClientSession, slow: AccountFaults
) -> None:
    base_url = await start(account_faults={B_ID: slow}, timeout_hold_s=60)
    sent = asyncio.Event()

    async def headers_sent(*_: object) -> None:
        sent.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)
    async with aiohttp.ClientSession(trace_configs=[trace]) as slow_session:
        pending = asyncio.create_task(claim(slow_session, base_url, claim_params(), **AS_B))
        await sent.wait()  # the slow request is on its way before the fast ones leave

        # A hang guard far below the slow account's minute, not a speed measure.
        async with asyncio.timeout(20):
            fast = await claim(session, base_url, claim_params())
            # Authenticating the slow account is not slowed: only its claim requests are.
            checked = await account_check(session, base_url, B_ID, **AS_B)
        stats = await stats_of(session, base_url)
        still_pending = not pending.done()
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending

    assert fast[0] == 200
    assert checked[0] == 200
    assert still_pending
    assert stats["by_account"] == {A_ID: {"requests": 1, "status": {"200": 1}}}
    assert stats["timeouts"] == (1 if slow.timeout_rate else 0)


async def test_an_account_rate_limit_throttles_only_that_account(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start(account_faults={B_ID: AccountFaults(rate_limit=1, rate_window_s=120)})

    b_answers = [await claim(session, base_url, claim_params(), **AS_B) for _ in range(2)]
    a_answers = [await claim(session, base_url, claim_params()) for _ in range(3)]
    b_checks = [await account_check(session, base_url, B_ID, **AS_B) for _ in range(2)]
    a_check = await account_check(session, base_url, A_ID)
    stats = await stats_of(session, base_url)

    assert [a[0] for a in b_answers] == [200, 429]
    _, headers, body = b_answers[1]
    assert body["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert headers["x-rate-limit-limit"] == "1"
    assert headers["x-rate-limit-remaining"] == "0"
    assert time.time() + 100 <= int(headers["x-rate-limit-reset"]) <= time.time() + 121
    assert [a[0] for a in a_answers] == [200, 200, 200]
    assert a_answers[2][1]["x-rate-limit-limit"] == "60000"
    assert a_answers[2][1]["x-rate-limit-remaining"] == "59997"
    # The account check has its own window (per endpoint), with the account's limit.
    assert [c[0] for c in b_checks] == [200, 429]
    assert b_checks[0][1]["x-rate-limit-limit"] == "1"
    assert a_check[0] == 200 and a_check[1]["x-rate-limit-limit"] == "60000"
    assert stats["by_account"] == {
        A_ID: {"requests": 3, "status": {"200": 3}},
        B_ID: {"requests": 2, "status": {"200": 1, "429": 1}},
    }
    assert stats["too_many_requests"] == 2


async def test_an_account_error_rate_overrides_the_global_one(
    start: Start, session: aiohttp.ClientSession
) -> None:
    # Every claim fails, except those of the account whose own error rate is 0.
    base_url = await start(error_rate=1.0, account_faults={A_ID: AccountFaults(error_rate=0.0)})

    a_answers = [await claim(session, base_url, claim_params()) for _ in range(3)]
    b_answers = [await claim(session, base_url, claim_params(), **AS_B) for _ in range(3)]
    stats = await stats_of(session, base_url)

    assert [a[0] for a in a_answers] == [200, 200, 200]
    assert all(a[0] in (500, 503) for a in b_answers)
    assert {a[2]["errors"][0]["code"] for a in b_answers} <= {
        "INTERNAL_ERROR",
        "SERVICE_UNAVAILABLE",
    }
    assert stats["errors"] == 3
    assert stats["by_account"][A_ID] == {"requests": 3, "status": {"200": 3}}
    assert stats["by_account"][B_ID]["requests"] == 3
    assert sum(stats["by_account"][B_ID]["status"].values()) == 3
    assert set(stats["by_account"][B_ID]["status"]) <= {"500", "503"}


async def test_runtime_account_faults_replace_the_mapping_and_clear(
    start: Start, session: aiohttp.ClientSession
) -> None:
    base_url = await start()

    status, view = await patch(session, base_url, {"account_faults": {B_ID: {"rate_limit": 1}}})
    assert status == 200
    assert view["account_faults"] == {B_ID: {"rate_limit": 1}}
    throttled = [await claim(session, base_url, claim_params(), **AS_B) for _ in range(2)]

    # The new mapping replaces the old: B's limit is the global one again.
    replaced = {A_ID: {"reset_rate": 1, "latency": "uniform:1:2"}}
    status, view = await patch(session, base_url, {"account_faults": replaced})
    assert status == 200
    assert view["account_faults"] == {A_ID: {"latency": "uniform:1:2", "reset_rate": 1.0}}
    b_again = await claim(session, base_url, claim_params(), **AS_B)
    with pytest.raises(aiohttp.ClientConnectionError):
        await claim(session, base_url, claim_params())

    status, view = await patch(session, base_url, {"account_faults": {}})
    assert status == 200
    assert view["account_faults"] == {}
    a_again = await claim(session, base_url, claim_params())
    async with session.get(f"{base_url}/_mock/config") as r:
        shown = await r.json()

    assert [a[0] for a in throttled] == [200, 429]
    assert b_again[0] == 200 and b_again[1]["x-rate-limit-limit"] == "60000"
    assert a_again[0] == 200
    assert shown["account_faults"] == {}
    stats = await stats_of(session, base_url)
    assert stats["by_account"][A_ID] == {"requests": 2, "status": {"200": 1, "reset": 1}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"nope": {"rate_limit": 1}}, ("account_faults.nope", "no such account")),
        ({B_ID: {"rate_limt": 1}}, (f"account_faults.{B_ID}", "rate_limt")),
        ({B_ID: {"rate_limit": 0}}, (f"account_faults.{B_ID}", "rate_limit")),
        ({B_ID: {"error_rate": "0.5"}}, (f"account_faults.{B_ID}", "error_rate")),
        ({B_ID: {"latency": "slow"}}, (f"account_faults.{B_ID}", "latency")),
        # The global reset rate (0.5) counts for the account that sets none of its own.
        ({B_ID: {"error_rate": 0.6}}, (f"account_faults.{B_ID}", "reset_rate")),
    ],
)
async def test_bad_runtime_account_faults_are_refused_naming_account_and_key(
    start: Start, session: aiohttp.ClientSession, body: dict[str, Any], named: tuple[str, str]
) -> None:
    base_url = await start(reset_rate=0.5, account_faults={A_ID: AccountFaults(rate_limit=7)})

    status, answer = await patch(session, base_url, {"account_faults": body})
    async with session.get(f"{base_url}/_mock/config") as r:
        config = await r.json()

    assert status == 400
    message = answer["error"]["message"]
    assert all(word in message for word in named), message
    assert config["account_faults"] == {A_ID: {"rate_limit": 7}}  # unchanged
