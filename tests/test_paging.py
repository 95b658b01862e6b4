"""Paging of every list (PRODUCT.md 3, "Lists") through the real daemon: `limit`, the opaque
`cursor`, `next`; stable while the list grows; bad limits, cursors and filters refused with
the parameter named."""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import orjson
import pytest

from conftest import ACCOUNT_ID, Api, Running, seed_config
from postbackd.api.paging import decode_cursor, encode_cursor
from postbackd.errors import BadRequest
from postbackd.store.db import DB_NAME

LISTS = (
    "/api/v1/apps",
    "/api/v1/x-accounts",
    "/api/v1/campaigns",
    "/api/v1/trackers",
    "/api/v1/postbacks",
    "/api/v1/deliveries",
    "/api/v1/deliveries?state=dead",
    "/api/v1/deliveries?state=ready",
    "/api/v1/attributions",
)


def with_query(path: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{path}{'&' if '?' in path else '?'}{query}"


async def walk(api: Api, path: str, limit: int, between: Any = None) -> list[dict[str, Any]]:
    """Every item of a list, `limit` at a time; `between()` runs after each page."""
    items: list[dict[str, Any]] = []
    page = await api.ok("GET", with_query(path, limit=str(limit)))
    while True:
        assert page["count"] == len(page["items"]) <= limit
        items += page["items"]
        if between is not None:
            await between()
        if "next" not in page:
            return items
        assert page["count"] == limit
        page = await api.ok("GET", with_query(path, limit=str(limit), cursor=page["next"]))


async def add_app(api: Api, n: int) -> dict[str, Any]:
    body = {"name": f"Game {n}", "platform": "ios" if n % 2 else "android"}
    return await api.ok("POST", "/api/v1/apps", 201, json=body)  # type: ignore[no-any-return]


async def test_configuration_lists_page_in_creation_order_while_growing(running: Running) -> None:
    api = running.api
    made = [await add_app(api, n) for n in range(7)]
    first = await api.ok("GET", "/api/v1/apps?limit=3")
    assert (first["count"], first["total"]) == (3, 7)
    assert [a["id"] for a in first["items"]] == [a["id"] for a in made[:3]]

    added = 0

    async def grow() -> None:
        nonlocal added
        made.append(await add_app(api, 100 + added))
        added += 1

    seen = await walk(api, "/api/v1/apps", 3, between=grow)
    # Every app made before or during the walk, once each, in creation order: an app made
    # while paging sorts after every cursor handed out before it.
    assert [a["id"] for a in seen] == [a["id"] for a in made[: len(seen)]]
    assert len({a["id"] for a in seen}) == len(seen) == 9
    stamps = [a["created_at"] for a in made]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    last = await api.ok("GET", "/api/v1/apps?limit=10000")
    assert "next" not in last and last["count"] == last["total"] == len(made)


async def test_a_cursor_outlives_the_item_it_stands_after(running: Running) -> None:
    api = running.api
    made = [await add_app(api, n) for n in range(5)]
    page = await api.ok("GET", "/api/v1/apps?limit=2")
    await api.ok("DELETE", f"/api/v1/apps/{made[1]['id']}", 204)
    rest = await api.ok("GET", f"/api/v1/apps?limit=10&cursor={page['next']}")
    assert [a["id"] for a in rest["items"]] == [a["id"] for a in made[2:]]
    assert rest["total"] == 4


async def test_filters_page_and_bind_the_cursor(running: Running) -> None:
    api = running.api
    for n in range(6):
        await add_app(api, n)
    ios = await walk(api, "/api/v1/apps?platform=ios", 2)
    assert [a["platform"] for a in ios] == ["ios"] * 3
    page = await api.ok("GET", "/api/v1/apps?platform=ios&limit=1")
    assert page["total"] == 3
    # The same cursor without its filter, with another, or on another list: refused.
    for path in (
        f"/api/v1/apps?cursor={page['next']}",
        f"/api/v1/apps?platform=android&cursor={page['next']}",
        f"/api/v1/trackers?cursor={page['next']}",
        f"/api/v1/deliveries?cursor={page['next']}",
    ):
        status, body = await api.request("GET", path)
        assert status == 400, (path, body)
        assert body["error"]["field"] == "cursor"


async def test_boolean_and_integer_filters_refuse_other_values(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    for path, field in (
        (f"/api/v1/trackers?app_id={app_id}&default=yes", "default"),
        ("/api/v1/trackers?default=TRUE", "default"),
        ("/api/v1/trackers?default=", "default"),
        ("/api/v1/postbacks?enabled=1", "enabled"),
        ("/api/v1/x-accounts?ammp=no", "ammp"),
        ("/api/v1/postbacks?retry_attempts=three", "retry_attempts"),
        ("/api/v1/trackers?post_view_window_days=-1", "post_view_window_days"),
        ("/api/v1/apps?colour=red", "colour"),
        ("/api/v1/apps?name=a&name=b", "name"),
        ("/api/v1/x-accounts?access_token=x", "access_token"),
    ):
        status, body = await api.request("GET", path)
        assert status == 400, (path, body)
        assert body["error"]["field"] == field, (path, body)
    found = await api.ok("GET", "/api/v1/trackers?default=false")
    assert [t["id"] for t in found["items"]] == [seeded["tracker"]["id"]]
    assert (await api.ok("GET", "/api/v1/trackers?default=true"))["items"] == []
    found = await api.ok("GET", f"/api/v1/trackers?x_account_ids={ACCOUNT_ID}")
    assert found["total"] == 1
    found = await api.ok("GET", "/api/v1/postbacks?retry_attempts=3&enabled=true")
    assert found["total"] == 1


@pytest.mark.parametrize("limit", ["0", "-1", "10001", "ten", "1.5", "", "²", "+5", "9" * 30])
async def test_bad_limits_are_refused_naming_limit(running: Running, limit: str) -> None:
    for path in LISTS:
        status, body = await running.api.request("GET", with_query(path, limit=limit))
        assert status == 400, (path, limit, body)
        assert body["error"]["field"] == "limit"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


FORGED = [
    "",
    "!!!",
    "a",
    "abc%20",
    b64(b"not json"),
    b64(b"\xff\xfe"),
    b64(b"[1, 2]"),
    b64(b'{"v": 1}'),
    b64(orjson.dumps({"v": 2, "l": "apps", "f": "", "k": ["", ""]})),
    b64(orjson.dumps({"v": 1, "l": "apps", "f": "0" * 16, "k": ["", ""]})),
    "x" * 5000,
]


async def test_forged_cursors_are_refused_naming_cursor(running: Running) -> None:
    api = running.api
    apps_cursor = encode_cursor("apps", {}, ("2026-01-01T00:00:00.000Z", "koa"))
    # Right list and filters, wrong key types: each list knows its key's shape.
    wrong_keys = [
        ("/api/v1/apps", encode_cursor("apps", {}, (1, "koa"))),
        ("/api/v1/apps", encode_cursor("apps", {}, ("x",))),
        ("/api/v1/deliveries", encode_cursor("deliveries", {}, ("1",))),
        ("/api/v1/deliveries", encode_cursor("deliveries", {}, (2**63,))),
        ("/api/v1/deliveries?state=ready", encode_cursor("deliveries", {"state": "ready"}, (1,))),
        ("/api/v1/attributions", b64(orjson.dumps({"v": 1, "l": "attributions",
                                                    "f": "x", "k": [True]}))),
    ]  # fmt: skip
    cases = [(path, cursor) for path in LISTS for cursor in [*FORGED, apps_cursor]]
    cases = [c for c in cases if c != ("/api/v1/apps", apps_cursor)] + wrong_keys
    for path, cursor in cases:
        status, body = await api.request("GET", with_query(path, cursor=cursor))
        assert status == 400, (path, cursor, body)
        assert body["error"]["field"] == "cursor", body
        assert body["error"]["code"] == "invalid_cursor"


def test_cursor_round_trip_and_binding() -> None:
    key = ("2026-11-28T10:00:00.123Z", "kogame-5f1c")
    cursor = encode_cursor("apps", {"platform": "ios"}, key)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor, "apps", {"platform": "ios"}, (str, str)) == key
    for args in (("trackers", {"platform": "ios"}), ("apps", {}), ("apps", {"platform": "x"})):
        with pytest.raises(BadRequest) as refused:
            decode_cursor(cursor, *args, (str, str))
        assert refused.value.field == "cursor"


async def ingest(api: Api, app_id: str, first: int, count: int) -> None:
    events = [
        {"kochava_app_id": app_id, "event_id": f"page-{n}",
         "device_ids": {"idfa": f"AB12CD34-0000-4000-8000-{n:012d}"},
         "data": {"event_name": "purchase"}}
        for n in range(first, first + count)
    ]  # fmt: skip
    await api.ok("POST", "/track/json", 202, json=events)


async def test_deliveries_page_while_events_arrive(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    await ingest(api, app_id, 0, 5)
    arrived = 5

    async def more() -> None:
        nonlocal arrived
        if arrived < 11:  # three batches while paging, then the walk can end
            await ingest(api, app_id, arrived, 2)
            arrived += 2

    seen = await walk(api, "/api/v1/deliveries", 2, between=more)
    # Oldest first: every delivery made while paging sorted after the cursor, so none was
    # skipped nor repeated.
    assert [d["event_id"] for d in seen] == [f"page-{n}" for n in range(11)]
    ids = [d["id"] for d in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def add_attributions(data_dir: Any, app_id: str, first: int, count: int) -> None:
    with sqlite3.connect(data_dir / DB_NAME, timeout=10) as db:
        db.executemany(
            "INSERT INTO attributions (app_id, device_key, network, tracker_id, engagement_type,"
            " engagement_time, event_id, delivery_id, created_ms) VALUES (?,?,?,?,?,?,?,?,?)",
            [(app_id, f"device-{n}", "x_ios", "kotracker", "CLICK", "2026-01-01T00:00:00Z",
              f"event-{n}", n, 1_790_000_000_000) for n in range(first, first + count)],
        )  # fmt: skip


async def test_attributions_page_by_id_while_growing(running: Running) -> None:
    api = running.api
    add_attributions(running.data_dir, "koapp", 0, 5)
    add_attributions(running.data_dir, "koother", 100, 3)
    arrived = 5

    async def more() -> None:
        nonlocal arrived
        add_attributions(running.data_dir, "koapp", arrived, 1)
        arrived += 1

    seen = await walk(api, "/api/v1/attributions?app_id=koapp", 2, between=more)
    assert [a["event_id"] for a in seen] == [f"event-{n}" for n in range(len(seen))]
    assert len(seen) >= 8
    assert {a["app_id"] for a in seen} == {"koapp"}
    everything = await api.ok("GET", "/api/v1/attributions?limit=10000")
    ids = [a["id"] for a in everything["items"]]
    assert ids == sorted(ids) and everything["count"] == len(ids)
    assert "total" not in everything
