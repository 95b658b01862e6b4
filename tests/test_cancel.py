"""Cancelling deliveries (PRODUCT.md 2, "Delivery states"): an operator stops deliveries that
have not gone out, by ids or all of a misconfigured postback. `scheduled`, `ready` and `held`
ones become `cancelled`, a final state, and never reach X; requests already at X finish."""

from __future__ import annotations

import pytest

from conftest import ACCOUNT_ID, seed_config
from procs import conversions, mock_patch, wait_for
from test_delivery import Stack, deliveries, event, ingest, settled, stack  # noqa: F401


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
        ({"postback_id": 7}, "postback_id"),
        ({"state": "dead"}, "state"),
    ):
        status, answer = await api.request("POST", "/api/v1/deliveries/cancel", json=body)
        assert status == 422, (body, answer)
        assert answer["error"]["field"] == field, (body, answer)
