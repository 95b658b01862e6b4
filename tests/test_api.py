"""The admin API end to end: the real daemon on a loopback port, a real SQLite file, and
the simulated X checking signatures."""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

import aiohttp
import pytest

from conftest import (
    ACCOUNT_ID,
    ACCOUNT_SECRET,
    ACCOUNT_TOKEN,
    API_TOKEN,
    CONSUMER_SECRET,
    MockX,
    Running,
    daemon_settings,
    seed_config,
)
from postbackd.daemon import Daemon

SECRETS = (ACCOUNT_TOKEN, ACCOUNT_SECRET, CONSUMER_SECRET, API_TOKEN)


def assert_error(body: Any, field: str | None) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] and error["message"]
    assert error.get("field") == field, error


async def test_every_api_call_needs_the_bearer_token(running: Running) -> None:
    api = running.api
    for method, path in [
        ("GET", "/api/v1/apps"),
        ("POST", "/api/v1/apps"),
        ("GET", "/api/v1/x-accounts"),
        ("DELETE", "/api/v1/trackers/x"),
        ("POST", "/api/v1/x-accounts/x/authenticate"),
        ("POST", "/track/json"),
        ("GET", "/api/v1/deliveries"),
    ]:
        status, body = await api.request(method, path, auth=False)
        assert status == 401, (method, path)
        assert_error(body, "Authorization")
        status, body = await api.request(
            method, path, auth=False, headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401
    # Health needs no token.
    assert await api.ok("GET", "/healthz", auth=False) == {"status": "ok"}
    assert await api.ok("GET", "/readyz", auth=False) == {"ready": True}


async def test_full_workflow_and_secrets_never_shown(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = running.api
    seeded = await seed_config(api)
    answers: list[Any] = [seeded]
    answers.append(await api.ok("GET", "/api/v1/x-accounts"))
    answers.append(await api.ok("GET", f"/api/v1/x-accounts/{ACCOUNT_ID}"))
    answers.append(await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate"))
    answers.append(
        await api.ok("PATCH", f"/api/v1/x-accounts/{ACCOUNT_ID}", json={"name": "Renamed"})
    )
    text = repr(answers)
    for secret in SECRETS:
        assert secret not in text
        assert secret not in caplog.text
    account = answers[2]
    assert account["authenticated"] is True and account["authenticated_at"]
    assert "access_token" not in account and "access_token_secret" not in account
    tracker = seeded["tracker"]
    assert tracker["post_engagement_window_days"] == 14
    assert tracker["post_view_window_days"] == 0
    assert tracker["bundle_id"] == "333903271"
    assert tracker["id"].startswith("kowinter-reengagement")
    postback = seeded["postback"]
    assert (postback["delivery_delay_s"], postback["retry_attempts"]) == (0, 3)
    assert postback["x_app_id"] == "333903271"
    # The lookup index used by the hot path sees the saved configuration at once.
    index = running.daemon.catalog.index
    assert index.postbacks_of(seeded["app"]["id"], "purchase")[0].id == postback["id"]
    assert index.trackers_of(seeded["app"]["id"], "x_ios").newest.id == tracker["id"]  # type: ignore[union-attr]


async def test_authentication_failure_is_kept(running: Running, mock_x: MockX) -> None:
    api = running.api
    account = await api.ok(
        "POST",
        "/api/v1/x-accounts",
        201,
        json={"id": ACCOUNT_ID, "name": "Ads", "access_token": ACCOUNT_TOKEN,
              "access_token_secret": "not-the-secret"},
    )  # fmt: skip
    assert account["authenticated"] is False
    assert "401" in account["last_auth_error"]
    # A tracker refuses an unauthenticated account.
    app = await api.ok("POST", "/api/v1/apps", 201,
                       json={"name": "G", "platform": "ios", "bundle_id": "1"})  # fmt: skip
    status, body = await api.request(
        "POST",
        "/api/v1/trackers",
        json={"app_id": app["id"], "campaign_name": "C", "name": "T", "network": "x_ios",
              "x_account_ids": [ACCOUNT_ID], "target_event": "PURCHASE",
              "event_matching_event": "purchase"},
    )  # fmt: skip
    assert status == 422
    assert_error(body, "x_account_ids[0]")
    # Fixing the secret re-authenticates.
    fixed = await api.ok(
        "PATCH", f"/api/v1/x-accounts/{ACCOUNT_ID}", json={"access_token_secret": ACCOUNT_SECRET}
    )
    assert fixed["authenticated"] is True and fixed["last_auth_error"] is None
    # X revoking the token shows on the next authenticate call.
    await mock_x.call("PATCH", "/_mock/config", json={"revoke_tokens": [ACCOUNT_ID]})
    again = await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    assert again["authenticated"] is False and again["last_auth_error"]


async def test_default_tracker_replacement_is_named(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    common = {"app_id": app_id, "campaign_name": "Winter", "network": "x_ios",
              "x_account_ids": [ACCOUNT_ID], "target_event": "PURCHASE",
              "event_matching_event": "purchase"}  # fmt: skip
    first = await api.ok("POST", "/api/v1/trackers", 201,
                         json=common | {"name": "First default", "default": True})  # fmt: skip
    assert first["replaced_default"] is None
    second = await api.ok("POST", "/api/v1/trackers", 201,
                          json=common | {"name": "Second default", "default": True})  # fmt: skip
    assert second["replaced_default"] == {"id": first["id"], "name": "First default"}
    old = await api.ok("GET", f"/api/v1/trackers/{first['id']}")
    assert old["default"] is False
    # Turning the first back on by PATCH takes the flag back.
    back = await api.ok("PATCH", f"/api/v1/trackers/{first['id']}", json={"default": True})
    assert back["replaced_default"]["id"] == second["id"]
    defaults = await api.ok("GET", f"/api/v1/trackers?app_id={app_id}&default=true")
    assert [t["id"] for t in defaults["items"]] == [first["id"]]


async def test_patch_rechecks_rules_and_refuses_immutable_fields(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    tracker_id = seeded["tracker"]["id"]
    status, body = await api.request(
        "PATCH", f"/api/v1/trackers/{tracker_id}", json={"post_view_window_days": 30}
    )
    assert status == 422
    assert_error(body, "post_view_window_days")
    status, body = await api.request(
        "PATCH", f"/api/v1/trackers/{tracker_id}", json={"network": "x_android"}
    )
    assert status == 422
    assert_error(body, "network")
    status, body = await api.request(
        "PATCH", f"/api/v1/apps/{seeded['app']['id']}", json={"platform": "android"}
    )
    assert status == 422
    assert_error(body, "platform")
    pb = seeded["postback"]["id"]
    for field, value in [("event_name", "other"), ("network", "x_android")]:
        status, body = await api.request("PATCH", f"/api/v1/postbacks/{pb}", json={field: value})
        assert status == 422
        assert_error(body, field)
    status, body = await api.request(
        "PATCH", f"/api/v1/postbacks/{pb}", json={"delivery_delay_s": 601}
    )
    assert status == 422
    assert_error(body, "delivery_delay_s")
    patched = await api.ok(
        "PATCH", f"/api/v1/postbacks/{pb}", json={"delivery_delay_s": 600, "retry_attempts": 0}
    )
    assert (patched["delivery_delay_s"], patched["retry_attempts"]) == (600, 0)
    status, body = await api.request(
        "PATCH", f"/api/v1/x-accounts/{ACCOUNT_ID}", json={"authenticated": True}
    )
    assert status == 422
    assert_error(body, "authenticated")


async def test_an_unknown_field_names_the_valid_ones_and_the_closest(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    tracker_id = seeded["tracker"]["id"]
    status, body = await api.request(
        "PATCH", f"/api/v1/trackers/{tracker_id}", json={"post_view_window": 7}
    )
    assert status == 422
    assert_error(body, "post_view_window")
    message = body["error"]["message"]
    assert body["error"]["code"] == "unknown_field"
    assert "did you mean post_view_window_days?" in message, message
    assert "valid fields: app_id, bundle_id, campaign_name, default," in message, message
    # Nothing close: the valid fields only; read-only fields keep their own refusal.
    status, body = await api.request("POST", "/api/v1/apps", json={"name": "A", "zzz": 1})
    assert (status, body["error"]["field"]) == (422, "zzz")
    assert "did you mean" not in body["error"]["message"]
    assert body["error"]["message"].endswith("(valid fields: bundle_id, id, name, platform)")
    status, body = await api.request("POST", "/api/v1/apps", json={"created_at": "x"})
    assert (status, body["error"]["code"]) == (422, "read_only")


async def test_conflicts_and_references(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    app_id = seeded["app"]["id"]
    status, body = await api.request(
        "POST", "/api/v1/postbacks",
        json={"app_id": app_id, "network": "x_ios", "event_name": "purchase",
              "conversion_type": "PURCHASE"},
    )  # fmt: skip
    assert status == 409
    assert_error(body, "event_name")
    status, body = await api.request(
        "POST", "/api/v1/trackers",
        json={"app_id": app_id, "campaign_name": "Winter", "name": "WINTER REENGAGEMENT",
              "network": "x_ios", "x_account_ids": [ACCOUNT_ID], "target_event": "PURCHASE",
              "event_matching_event": "purchase"},
    )  # fmt: skip
    assert status == 409
    assert_error(body, "name")
    status, body = await api.request(
        "POST", "/api/v1/postbacks",
        json={"app_id": "konope", "network": "x_ios", "event_name": "e",
              "conversion_type": "PURCHASE"},
    )  # fmt: skip
    assert status == 422
    assert_error(body, "app_id")
    status, body = await api.request(
        "POST", "/api/v1/postbacks",
        json={"app_id": app_id, "network": "x_ios", "event_name": "level",
              "conversion_type": "LEVEL_ACHIEVED", "x_account_id": "ghost"},
    )  # fmt: skip
    assert status == 422
    assert_error(body, "x_account_id")
    status, body = await api.request(
        "POST", "/api/v1/postbacks",
        json={"app_id": app_id, "network": "x_ios", "event_name": "level",
              "conversion_type": "LEVEL_ACHIEVED", "delivery_method": "network_and_agency"},
    )  # fmt: skip
    assert status == 422
    assert_error(body, "delivery_method")
    # In use: the app and the account cannot go while others name them.
    status, body = await api.request("DELETE", f"/api/v1/apps/{app_id}")
    assert status == 409
    status, body = await api.request("DELETE", f"/api/v1/x-accounts/{ACCOUNT_ID}")
    assert status == 409
    status, body = await api.request("GET", "/api/v1/trackers/kodoesnotexist")
    assert status == 404
    assert_error(body, "id")


async def test_delete_in_dependency_order(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    tracker = seeded["tracker"]
    segment_id = tracker["segment_id"]
    campaigns = await api.ok("GET", f"/api/v1/campaigns?app_id={seeded['app']['id']}")
    campaign_id = campaigns["items"][0]["id"]
    segments = await api.ok("GET", f"/api/v1/campaigns/{campaign_id}/segments")
    assert [s["id"] for s in segments["items"]] == [segment_id]
    await api.ok("DELETE", f"/api/v1/trackers/{tracker['id']}", 204)
    deleted = await api.ok("DELETE", f"/api/v1/postbacks/{seeded['postback']['id']}")
    assert deleted == {"id": seeded["postback"]["id"], "deleted": True, "pending_deliveries": 0}
    await api.ok("DELETE", f"/api/v1/campaigns/{campaign_id}/segments/{segment_id}", 204)
    await api.ok("DELETE", f"/api/v1/campaigns/{campaign_id}", 204)
    await api.ok("DELETE", f"/api/v1/apps/{seeded['app']['id']}", 204)
    await api.ok("DELETE", f"/api/v1/x-accounts/{ACCOUNT_ID}", 204)
    for kind in ("apps", "x-accounts", "campaigns", "trackers", "postbacks"):
        assert (await api.ok("GET", f"/api/v1/{kind}"))["count"] == 0


async def test_segments_live_under_their_campaign(running: Running) -> None:
    api = running.api
    app = await api.ok("POST", "/api/v1/apps", 201,
                       json={"name": "G", "platform": "android"})  # fmt: skip
    c1 = await api.ok("POST", "/api/v1/campaigns", 201, json={"app_id": app["id"], "name": "A"})
    c2 = await api.ok("POST", "/api/v1/campaigns", 201, json={"app_id": app["id"], "name": "B"})
    seg = await api.ok("POST", f"/api/v1/campaigns/{c1['id']}/segments", 201,
                       json={"name": "S"})  # fmt: skip
    assert seg["campaign_id"] == c1["id"]
    status, _ = await api.request("GET", f"/api/v1/campaigns/{c2['id']}/segments/{seg['id']}")
    assert status == 404
    renamed = await api.ok(
        "PATCH", f"/api/v1/campaigns/{c1['id']}/segments/{seg['id']}", json={"name": "T"}
    )
    assert renamed["name"] == "T"
    status, _ = await api.request(
        "POST", f"/api/v1/campaigns/{c1['id']}/segments", json={"name": "t"}
    )
    assert status == 409
    status, _ = await api.request("GET", "/api/v1/campaigns/konope/segments")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"{not json", {}, 400, "body"),
        (b'{"name": "G", "platform": "io', {}, 400, "body"),
        (b'\xff\xfe{"name": 1}', {}, 400, "body"),
        (b"", {}, 400, "body"),
        (b"[1, 2]", {}, 400, "body"),
        (b'"text"', {}, 400, "body"),
        (b'{"name": "G", "platform": "ios", "colour": "red"}', {}, 422, "colour"),
        (b'{"name": ["G"], "platform": "ios"}', {}, 422, "name"),
        (b'{"platform": "ios"}', {}, 422, "name"),
        (b'{"name": "G", "platform": "ios", "created_at": "x"}', {}, 422, "created_at"),
    ],
)
async def test_bad_bodies_name_the_field(
    running: Running, body: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    got, answer = await running.api.request("POST", "/api/v1/apps", data=body, headers=headers)
    assert got == status, answer
    assert_error(answer, field)


async def test_oversized_body_is_413(tmp_path: Any, mock_x: MockX) -> None:
    daemon = Daemon(daemon_settings(tmp_path / "d", mock_x.url, max_body_bytes=1024))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{daemon.port}/api/v1/apps"
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with s.post(url, data=b"{" + b" " * 4096 + b"}", headers=headers) as r:
                assert r.status == 413
                assert_error(await r.json(), "body")
    finally:
        await daemon.stop()


async def test_unknown_paths_and_methods_answer_json(running: Running) -> None:
    status, body = await running.api.request("GET", "/api/v1/nothing")
    assert status == 404
    assert_error(body, "path")
    status, body = await running.api.request("PUT", "/api/v1/apps")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"  # as the README's error table says
    status, body = await running.api.request("GET", "/api/v1/apps?colour=red")
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        400,
        "invalid_parameter",
        "colour",
    )


async def test_configuration_survives_restart(tmp_path: Any, mock_x: MockX) -> None:
    data_dir = tmp_path / "data"
    settings = daemon_settings(data_dir, mock_x.url)
    first = Daemon(settings)
    await first.start()
    try:
        async with aiohttp.ClientSession() as s:
            from conftest import Api

            api = Api(s, f"http://127.0.0.1:{first.port}")
            seeded = await seed_config(api)
            kinds = ("apps", "x-accounts", "campaigns", "trackers", "postbacks")
            before = {k: await api.ok("GET", f"/api/v1/{k}") for k in kinds}
    finally:
        await first.stop()
    second = Daemon(settings)
    await second.start()
    try:
        async with aiohttp.ClientSession() as s:
            api = Api(s, f"http://127.0.0.1:{second.port}")
            after = {k: await api.ok("GET", f"/api/v1/{k}") for k in before}
            assert after == before
            assert after["trackers"]["items"][0]["id"] == seeded["tracker"]["id"]
        idx = second.catalog.index
        assert idx.trackers_of(seeded["app"]["id"], "x_ios").newest is not None
    finally:
        await second.stop()


async def test_token_generated_once_with_owner_only_files(
    tmp_path: Any, mock_x: MockX, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    settings = daemon_settings(data_dir, mock_x.url, api_token=None)
    daemon = Daemon(settings)
    await daemon.start()
    await daemon.stop()
    token_file = data_dir / "api-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data_dir / "postbackd.sqlite3").st_mode) == 0o600
    assert str(token_file) in caplog.text
    assert token not in caplog.text
    again = Daemon(settings)
    await again.start()
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{again.port}/api/v1/apps"
            async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
    finally:
        await again.stop()
    assert token_file.read_text().strip() == token
