"""Claim delivery end to end: `postbackd serve` and `postbackd mock-x` as separate
processes on loopback, configured and fed through HTTP, checked against what X received."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ACCOUNT_ID, ACCOUNT_TOKEN, HMAC_KEY, Api, seed_config
from procs import (
    OTHER_ACCOUNT,
    Proc,
    client,
    conversions,
    mock_get,
    mock_patch,
    start_daemon,
    start_mock,
    wait_for,
)

FAST_RETRY = {"retry_base_s": 0.05, "retry_factor": 2, "retry_cap_s": 0.2}


def idfa(n: int) -> str:
    return f"{n:08X}-0000-4000-8000-00000000ABCD"


def hashed(raw: str) -> str:
    return base64.b64encode(hmac.new(HMAC_KEY, raw.encode(), hashlib.sha256).digest()).decode()


def event(app_id: str, n: int, **kw: Any) -> dict[str, Any]:
    return {
        "action": "event",
        "kochava_app_id": app_id,
        "event_id": f"ev-{n}",
        "device_ids": {"idfa": idfa(n)},
        "data": {"event_name": "purchase", "event_data": {}},
    } | kw


async def deliveries(api: Api, state: str | None = None) -> list[dict[str, Any]]:
    query = f"?limit=10000&state={state}" if state else "?limit=10000"
    return (await api.ok("GET", "/api/v1/deliveries" + query))["items"]  # type: ignore[no-any-return]


async def settled(
    api: Api, count: int, state: str = "delivered", timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Wait until `count` deliveries are in `state`."""

    async def check() -> list[dict[str, Any]] | None:
        found = await deliveries(api, state)
        return found if len(found) >= count else None

    return await wait_for(check, timeout_s=timeout_s)  # type: ignore[no-any-return]


class Stack:
    def __init__(self, mock: Proc, daemon: Proc, api: Api, data_dir: Path) -> None:
        self.mock, self.daemon, self.api, self.data_dir = mock, daemon, api, data_dir


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    marker = request.node.get_closest_marker("daemon_settings")
    settings = {**FAST_RETRY, **(marker.kwargs if marker else {})}
    mock_marker = request.node.get_closest_marker("mock_args")
    mock = await start_mock(*(mock_marker.args if mock_marker else ()))
    daemon = None
    try:
        daemon = await start_daemon(tmp_path / "data", mock.url, **settings)
        async with client(daemon) as api:
            yield Stack(mock, daemon, api, tmp_path / "data")
    finally:
        if daemon is not None:
            await daemon.kill()
        await mock.kill()


async def ingest(api: Api, events: list[dict[str, Any]]) -> dict[str, Any]:
    return await api.ok("POST", "/track/json", 202, json=events)  # type: ignore[no-any-return]


async def test_the_request_x_receives(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    usertime = 1_795_000_000.123
    data = {
        "event_name": "purchase",
        "event_data": {"sum": "9.99", "currency": "usd", "quantity": 2, "level": 7},
    }
    answer = await ingest(
        api, [event(app_id, 1, usertime=usertime, origination_ip="203.0.113.9", data=data)]
    )
    assert answer["accepted"] == 1
    await settled(api, 1)
    [request] = await conversions(stack.mock)
    assert request["status"] == 200  # the simulated X verified the OAuth 1.0a signature
    assert request["token"] == ACCOUNT_TOKEN
    assert request["method"] == "POST"
    assert request["path"] == "/12/conversion_event"
    assert request["params"] == {
        "app_id": "333903271",
        "os_type": "IOS",
        "hashed_device_id": hashed(idfa(1).upper()),
        "conversion_type": "PURCHASE",
        "conversion_time": "2026-11-18T11:06:40.123Z",
        # The seeded tracker matches "purchase": its windows, 14 and 0 days.
        "click_window": "14",
        "view_through_window": "0",
        "device_ip_address": "203.0.113.9",
        "price_micro": "9990000",
        "price_currency": "USD",
        "number_items": "2",
        "level": "7",
    }


async def test_duplicate_event_ids_are_sent_once(stack: Stack) -> None:
    api = stack.api
    app_id = (await seed_config(api))["app"]["id"]
    first = await ingest(api, [event(app_id, 1), event(app_id, 1)])
    assert (first["accepted"], first["duplicates"]) == (1, 1)
    again = await ingest(api, [event(app_id, 1)])  # a resend is not an error
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    await settled(api, 1)
    await asyncio.sleep(0.3)
    assert len(await conversions(stack.mock)) == 1


async def test_events_without_device_id_are_skipped(stack: Stack) -> None:
    api = stack.api
    app_id = (await seed_config(api))["app"]["id"]
    await ingest(api, [
        event(app_id, 1, device_ids={}),
        event(app_id, 2, device_ids={"idfa": "00000000-0000-0000-0000-000000000000"}),
        event(app_id, 3, device_ids={"android_id": "abc"}),
    ])  # fmt: skip
    skipped = await settled(api, 3, "skipped")
    assert {d["reason"] for d in skipped} == {"no_device_id"}
    assert await conversions(stack.mock) == []


@pytest.mark.daemon_settings(retry_base_s=0.05)
async def test_delay_holds_the_delivery_and_survives_restart(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await api.ok(
        "PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}", json={"delivery_delay_s": 3}
    )
    accepted_at = time.time()
    await ingest(api, [event(seeded["app"]["id"], 1)])
    [scheduled] = await deliveries(api, "scheduled")
    assert scheduled["due_at"] > scheduled["first_due_at"] or scheduled["due_at"]
    # Restart before it is due: the schedule is in the store, not in memory.
    assert await stack.daemon.stop() == 0
    daemon = await start_daemon(stack.data_dir, stack.mock.url, **FAST_RETRY)
    try:
        async with client(daemon) as api2:
            assert await conversions(stack.mock) == []
            await settled(api2, 1)
            [request] = await conversions(stack.mock)
            assert request["ts"] >= accepted_at + 2.9
    finally:
        await daemon.kill()


async def test_a_delayed_delivery_accepted_beside_realtime_ones_goes_when_due(
    stack: Stack,
) -> None:
    """Realtime deliveries reach the engine from memory at acceptance; a delayed one of the
    same lane in the same batch must still be read when it is due, not at the loader's
    periodic rescan a minute later."""
    api = stack.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    await api.ok("POST", "/api/v1/postbacks", 201, json={
        "app_id": app_id, "network": "x_ios", "event_name": "level_up",
        "conversion_type": "LEVEL_ACHIEVED", "delivery_delay_s": 1,
    })  # fmt: skip
    await ingest(api, [event(app_id, 1)])  # the lane is read once, to its end
    await settled(api, 1)
    level_up = {"event_name": "level_up", "event_data": {}}
    accepted_at = time.time()
    await ingest(api, [event(app_id, 2), event(app_id, 3, data=level_up)])
    await settled(api, 3, timeout_s=15)
    requests = await conversions(stack.mock)
    delayed = [r for r in requests if r["params"]["conversion_type"] == "LEVEL_ACHIEVED"]
    assert len(requests) == 3 and len(delayed) == 1
    assert delayed[0]["ts"] >= accepted_at + 0.9


@pytest.mark.daemon_settings(x_timeout_s=0.3)
async def test_retry_classes_and_dead_letters_then_replay(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    await api.ok(
        "PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}", json={"retry_attempts": 2}
    )
    # 5xx: retried twice, then dead with the last error.
    await mock_patch(stack.mock, {"error_rate": 1.0})
    await ingest(api, [event(app_id, 1)])
    [dead] = await settled(api, 1, "dead")
    assert dead["attempts"] == 3
    assert dead["last_status"] in (500, 503)
    assert len(await conversions(stack.mock)) == 3
    # Timeouts: retried as well.
    await mock_patch(stack.mock, {"error_rate": 0.0, "timeout_rate": 1.0, "timeout_hold_s": 2.0})
    await ingest(api, [event(app_id, 2)])
    dead_now = await settled(api, 2, "dead")
    timed_out = next(d for d in dead_now if d["event_id"] == "ev-2")
    assert timed_out["attempts"] == 3 and "timeout" in timed_out["last_error"]
    # Connection resets: retried as well.
    await mock_patch(stack.mock, {"timeout_rate": 0.0, "reset_rate": 1.0})
    await ingest(api, [event(app_id, 3)])
    await settled(api, 3, "dead")
    # Replay after X recovers: every dead delivery goes out again, with its retries back.
    await mock_patch(stack.mock, {"reset_rate": 0.0})
    replayed = await api.ok("POST", "/api/v1/deliveries/replay", json={"state": "dead"})
    assert replayed == {"replayed": 3}
    delivered = await settled(api, 3)
    assert {d["event_id"] for d in delivered} == {"ev-1", "ev-2", "ev-3"}
    assert await deliveries(api, "dead") == []


@pytest.mark.mock_args("--app", "333903271")
async def test_other_4xx_is_final_with_the_x_error_code(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    # An X app id the simulated X does not know: 404 MACT_APP_NOT_FOUND, no retry.
    await api.ok("PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}",
                 json={"x_app_id": "123456789012345678"})  # fmt: skip
    await ingest(api, [event(seeded["app"]["id"], 1)])
    [dead] = await settled(api, 1, "dead")
    assert dead["attempts"] == 1
    assert dead["last_status"] == 404
    assert "MACT_APP_NOT_FOUND" in dead["last_error"]
    assert len(await conversions(stack.mock)) == 1


async def test_rate_limit_429_waits_for_reset_without_using_retries(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await api.ok(
        "PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}", json={"retry_attempts": 0}
    )
    await mock_patch(stack.mock, {"rate_limit": 5, "rate_window_s": 2})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(12)])
    delivered = await settled(api, 12)
    assert len(delivered) == 12 and await deliveries(api, "dead") == []
    requests = await conversions(stack.mock)
    ok = [r for r in requests if r["status"] == 200]
    assert len(ok) == 12
    # Twelve at five per window need three windows: about four seconds.
    assert ok[-1]["ts"] - ok[0]["ts"] >= 3.5


@pytest.mark.daemon_settings(rate_limit_requests=5, rate_limit_window_s=30)
async def test_a_throttled_account_does_not_delay_another(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    second_id, token, secret = OTHER_ACCOUNT
    second = {"id": second_id, "name": "Second", "access_token": token,
              "access_token_secret": secret}  # fmt: skip
    await api.ok("POST", "/api/v1/x-accounts", 201, json=second)
    other = {"name": "Other", "platform": "ios", "bundle_id": "444"}
    other_app = await api.ok("POST", "/api/v1/apps", 201, json=other)
    postback = {"app_id": other_app["id"], "network": "x_ios", "event_name": "purchase",
                "conversion_type": "PURCHASE", "x_account_id": second_id}  # fmt: skip
    await api.ok("POST", "/api/v1/postbacks", 201, json=postback)
    # Account 1 gets 30 events against a budget of 5 per 30 s; account 2 gets 5 after them.
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(30)])
    await ingest(api, [event(other_app["id"], 100 + n) for n in range(5)])

    async def second_done() -> bool:
        sent = [r for r in await conversions(stack.mock) if r["token"] == token]
        return len(sent) == 5

    await wait_for(second_done, timeout_s=10)
    # X has the claims; the daemon records each answer a moment after it arrives.
    delivered = await settled(api, 10, timeout_s=10)
    assert len(delivered) == 10
    first = [r for r in await conversions(stack.mock) if r["token"] == ACCOUNT_TOKEN]
    assert len(first) == 5  # the rest waits for account 1's window, not in account 2's way
    waiting = await deliveries(api, "ready")
    assert len(waiting) == 25


async def test_401_holds_then_releases_after_authentication(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await mock_get(stack.mock, "/_mock/stats")
    await mock_patch(stack.mock, {"revoke_tokens": [ACCOUNT_ID]})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(3)])
    held = await settled(api, 3, "held")
    assert {d["reason"] for d in held} == {"account_unauthenticated"}
    account = await api.ok("GET", f"/api/v1/x-accounts/{ACCOUNT_ID}")
    assert account["authenticated"] is False and "401" in account["last_auth_error"]
    # Still unauthenticated: authenticate fails, nothing moves.
    await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    await asyncio.sleep(0.5)
    assert len(await deliveries(api, "held")) == 3
    # X takes the token again; authenticating releases the held deliveries.
    await mock_patch(stack.mock, {"restore_tokens": [ACCOUNT_ID]})
    account = await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    assert account["authenticated"] is True
    await settled(api, 3)
    assert await deliveries(api, "held") == []


@pytest.mark.daemon_settings(circuit_min_requests=5, circuit_window_s=5,
                             circuit_probe_interval_s=0.3)  # fmt: skip
async def test_outage_opens_the_circuit_and_keeps_retries(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await api.ok(
        "PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}", json={"retry_attempts": 1}
    )
    await mock_patch(stack.mock, {"outage": True})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(40)])
    # Far longer than the whole retry schedule (one retry after ~0.05 s).
    await asyncio.sleep(3.0)
    assert "circuit open" in stack.daemon.log
    during = await conversions(stack.mock)
    # The first 40 went out together; after that only probes (about one per 0.3 s), where
    # without the circuit each delivery would have used its retry: 80 requests.
    assert len(during) < 60
    assert await deliveries(api, "dead") == []
    await mock_patch(stack.mock, {"outage": False})
    await settled(api, 40)
    assert await deliveries(api, "dead") == []
    assert "circuit closed" in stack.daemon.log


async def test_one_failing_delivery_does_not_open_the_circuit(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await api.ok(
        "PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}", json={"retry_attempts": 8}
    )
    await mock_patch(stack.mock, {"error_rate": 1.0})
    await ingest(api, [event(seeded["app"]["id"], 1)])
    await settled(api, 1, "dead")
    assert "circuit open" not in stack.daemon.log


# Cancelling (PRODUCT.md 2, "Delivery states"): an operator stops deliveries that have not
# gone out, by ids or all of a misconfigured postback. `scheduled`, `ready` and `held` ones
# become `cancelled`, a final state, and never reach X; requests already at X finish.


async def test_cancel_by_ids_and_by_postback(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    postback_id = seeded["postback"]["id"]
    await api.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json={"delivery_delay_s": 60})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(6)])
    scheduled = await settled(api, 6, "scheduled")
    chosen = sorted(d["id"] for d in scheduled)[:2]
    assert await api.ok("POST", "/api/v1/deliveries/cancel", json={"ids": chosen}) == {
        "cancelled": 2
    }
    cancelled = await deliveries(api, "cancelled")
    assert sorted(d["id"] for d in cancelled) == chosen
    assert {d["reason"] for d in cancelled} == {"cancelled"}
    # Again: nothing left to cancel among those; the rest by postback.
    assert await api.ok("POST", "/api/v1/deliveries/cancel", json={"ids": chosen}) == {
        "cancelled": 0
    }
    answer = await api.ok("POST", "/api/v1/deliveries/cancel", json={"postback_id": postback_id})
    assert answer == {"cancelled": 4}
    assert len(await deliveries(api, "cancelled")) == 6
    assert await deliveries(api, "scheduled") == []
    # Final: replay does not bring them back, and X never saw them.
    assert await api.ok("POST", "/api/v1/deliveries/replay", json={"state": "dead"}) == {
        "replayed": 0
    }
    assert await conversions(stack.mock) == []


async def test_held_deliveries_can_be_cancelled_and_stay_so(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await mock_patch(stack.mock, {"revoke_tokens": [ACCOUNT_ID]})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(3)])
    await settled(api, 3, "held")
    answer = await api.ok("POST", "/api/v1/deliveries/cancel",
                          json={"postback_id": seeded["postback"]["id"]})  # fmt: skip
    assert answer == {"cancelled": 3}
    # The account authenticates again: cancelled deliveries are not released.
    await mock_patch(stack.mock, {"restore_tokens": [ACCOUNT_ID]})
    await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    await ingest(api, [event(seeded["app"]["id"], 10)])
    await settled(api, 1)
    assert len(await deliveries(api, "cancelled")) == 3
    # X saw the three 401s before the cancel, then only the new event.
    answered = [r["status"] for r in await conversions(stack.mock)]
    assert sorted(answered) == [200, 401, 401, 401]


@pytest.mark.mock_args("--latency", "fixed:1500")
async def test_requests_at_x_finish_and_the_queued_ones_never_go(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    await api.ok("PATCH", f"/api/v1/postbacks/{seeded['postback']['id']}",
                 json={"retry_attempts": 0})  # fmt: skip
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(40)])

    async def some_in_flight() -> list[dict[str, object]]:
        return await deliveries(api, "in_flight")

    in_flight = await wait_for(some_in_flight)
    answer = await api.ok("POST", "/api/v1/deliveries/cancel",
                          json={"postback_id": seeded["postback"]["id"]})  # fmt: skip
    assert 0 < answer["cancelled"] < 40
    delivered = await settled(api, len(in_flight))
    assert {d["id"] for d in in_flight} <= {d["id"] for d in delivered}
    await settled(api, answer["cancelled"], "cancelled")
    # Only what was at X went out.
    received = await conversions(stack.mock)
    assert len(received) == 40 - answer["cancelled"]


async def test_cancel_refuses_what_it_cannot_read(stack: Stack) -> None:
    api = stack.api
    for body, field in (
        ({}, "ids"),
        ({"ids": [1], "postback_id": "x"}, "ids"),
        ({"ids": "1"}, "ids"),
        ({"ids": [True]}, "ids"),
        ({"ids": None}, "ids"),
        ({"postback_id": 7}, "postback_id"),
        ({"state": "dead"}, "state"),
    ):
        status, answer = await api.request("POST", "/api/v1/deliveries/cancel", json=body)
        assert status == 422, (body, answer)
        assert answer["error"]["field"] == field, (body, answer)


async def test_disabling_or_deleting_a_postback_says_what_still_goes_out(stack: Stack) -> None:
    api = stack.api
    seeded = await seed_config(api)
    postback_id = seeded["postback"]["id"]
    await api.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json={"delivery_delay_s": 60})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(4)])
    await settled(api, 4, "scheduled")
    disabled = await api.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json={"enabled": False})
    assert disabled["enabled"] is False and disabled["pending_deliveries"] == 4
    deleted = await api.ok("DELETE", f"/api/v1/postbacks/{postback_id}")
    assert deleted == {"id": postback_id, "deleted": True, "pending_deliveries": 4}
    # Accepted means durable: they still go out unless cancelled.
    assert await api.ok("POST", "/api/v1/deliveries/cancel",
                        json={"postback_id": postback_id}) == {"cancelled": 4}  # fmt: skip


async def test_replay_of_ids_null_is_refused_not_every_dead_delivery(stack: Stack) -> None:
    status, answer = await stack.api.request("POST", "/api/v1/deliveries/replay",
                                             json={"ids": None})  # fmt: skip
    assert status == 422 and answer["error"]["field"] == "ids", answer
