"""No input makes the daemon answer 500 or stop (PRODUCT.md 4): seeded random garbage at
every route that reads a body or a query, then a check that the daemon still works."""

from __future__ import annotations

import random
from typing import Any

import orjson

from conftest import Running, seed_config

ALLOWED = {200, 201, 202, 204, 400, 404, 405, 409, 413, 422}
VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**62, "", " ", "x" * 5000, "ko", "\u0000", "é", [], {},
    [1, "a"], {"a": {"b": []}}, "14", 14, 30, 0, "x_ios", "ios", "PURCHASE", "all",
    "network_and_agency", float("inf"),
]  # fmt: skip
FIELDS = [
    "id", "name", "platform", "bundle_id", "app_id", "segment_id", "campaign_name",
    "segment_name", "network", "default", "x_account_ids", "target_event",
    "post_engagement_window_days", "post_view_window_days", "event_matching_event",
    "event_name", "x_app_id", "conversion_type", "x_account_id", "delivery_delay_s",
    "retry_attempts", "delivery_method", "enabled", "access_token", "access_token_secret",
    "ammp", "ids", "state", "kochava_app_id", "data", "device_ids", "usertime", "event_id",
]  # fmt: skip


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 6:
        field = rng.choice(FIELDS).encode()
        return (
            b'{"'
            + field
            + b'": '
            + rng.choice([b"1e400", b"-0", b"123456789012345678901234567890", b"NaN"])
            + b"}"
        )
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 1:
        text = orjson.dumps({"a": 1, "b": [1, 2, {"c": "d"}]}).decode()
        return text[: rng.randrange(len(text))].encode()
    if kind == 2:
        return orjson.dumps(rng.choice(VALUES[:-1]))
    obj = {rng.choice(FIELDS): rng.choice(VALUES[:-1]) for _ in range(rng.randrange(1, 8))}
    if kind == 3:
        return orjson.dumps(obj)
    if kind == 4:
        return orjson.dumps([obj, rng.choice(VALUES[:-1])])
    return b"\n".join(orjson.dumps(obj) for _ in range(3)) + b"\n{bad\n"


async def test_random_bodies_never_make_a_500(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    ids = {
        "apps": seeded["app"]["id"],
        "trackers": seeded["tracker"]["id"],
        "postbacks": seeded["postback"]["id"],
        "x-accounts": seeded["account"]["id"],
    }
    routes = [("POST", f"/api/v1/{k}") for k in ("apps", "x-accounts", "campaigns", "trackers",
                                                 "postbacks")]  # fmt: skip
    routes += [("PATCH", f"/api/v1/{k}/{v}") for k, v in ids.items()]
    routes += [("POST", "/track/json"), ("POST", "/api/v1/deliveries/replay")]
    rng = random.Random(20261128)
    seen: set[int] = set()
    for _ in range(400):
        method, path = rng.choice(routes)
        content_type = rng.choice(["application/json", "application/x-ndjson", "text/plain"])
        status, body = await api.request(
            method, path, data=garbage(rng), headers={"Content-Type": content_type}
        )
        seen.add(status)
        assert status in ALLOWED, (method, path, status, body)
        if status >= 400:
            assert body["error"]["message"], body
    for query in ("?state=nope", "?limit=-1", "?limit=abc", "?app_id=%FF", "?colour=red"):
        for path in ("/api/v1/deliveries", "/api/v1/attributions", "/api/v1/trackers"):
            status, body = await api.request("GET", path + query)
            assert status in ALLOWED, (path, query, status, body)
    assert {400, 422} <= seen
    # Still serving, and the configuration is intact.
    assert await api.ok("GET", "/healthz", auth=False) == {"status": "ok"}
    assert (await api.ok("GET", f"/api/v1/apps/{ids['apps']}"))["id"] == ids["apps"]


async def test_replay_refuses_ids_no_delivery_can_have(running: Running) -> None:
    # Found by schemathesis: an id above SQLite's integer range was a 500.
    for ids in ([2**63], [2**64 - 1], [-1], [1.5], [True], ["1"]):
        status, body = await running.api.request(
            "POST", "/api/v1/deliveries/replay", json={"ids": ids}
        )
        assert status == 422, (ids, body)
        assert body["error"]["field"] == "ids"
    answer = await running.api.ok("POST", "/api/v1/deliveries/replay", json={"ids": [2**63 - 1]})
    assert answer == {"replayed": 0}
