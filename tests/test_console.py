"""The web console over plain HTTP against the real daemon: signing in and out, the session
cookie's flags, CSRF, security headers, escaping, and refusals shown beside their fields.
The same flows in a real browser are in tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import html
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from multidict import MultiDict

from conftest import ACCOUNT_ID, API_TOKEN, Running, seed_config
from consolekit import ConsoleClient, Page
from postbackd.console.forms import FormState, json_fields
from postbackd.console.session import COOKIE, Sessions
from postbackd.console.throttle import Throttle
from postbackd.demo.scenarios import SCENARIOS
from postbackd.rules import POSTBACK, TRACKER

PAGES = (
    "/console/",
    "/console/x-accounts",
    "/console/apps",
    "/console/campaigns",
    "/console/trackers",
    "/console/trackers/new",
    "/console/postbacks",
    "/console/postbacks/new",
    "/console/deliveries",
    "/console/events",
    "/console/report",
)


@pytest.fixture
async def console(running: Running) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient(running.api.base)
    try:
        yield client
    finally:
        await client.close()


def set_cookie(page: Page, name: str) -> SimpleCookie:
    for header in page.headers.getall("Set-Cookie", []):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            return parsed
    raise AssertionError(f"no Set-Cookie {name} in {page.headers}")


async def test_every_page_wants_a_session_first(console: ConsoleClient) -> None:
    page = await console.get("/console/trackers/new?app_id=x")
    assert page.status == 303
    assert page.location == "/console/sign-in?next=%2Fconsole%2Ftrackers%2Fnew%3Fapp_id%3Dx"
    # A form posted without a session does nothing.
    page = await console.post("/console/apps", {"name": "Game", "platform": "ios"})
    assert page.status == 403
    assert "not signed in" in page.text
    # The bare address too.
    assert (await console.get("/console")).location == "/console/sign-in?next=%2Fconsole"


async def test_signing_in_sets_a_strict_http_only_session_cookie_with_an_expiry(
    console: ConsoleClient,
) -> None:
    page = await console.sign_in()
    assert page.status == 303 and page.location == "/console/"
    cookie = set_cookie(page, COOKIE)[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console"
    assert cookie["max-age"] == "28800"
    # Plain HTTP: a Secure cookie would never come back.
    assert not cookie["secure"]
    assert (await console.get("/console/")).status == 200
    # Behind a proxy that ended TLS, the cookie is Secure.
    console.jar.clear()
    form = await console.get("/console/sign-in")
    page = await console.post(
        "/console/sign-in",
        {"csrf_token": form.csrf(), "token": API_TOKEN},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert set_cookie(page, COOKIE)[COOKIE]["secure"] is True


async def test_a_wrong_token_is_refused_beside_the_field_and_never_shown(
    console: ConsoleClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    typed = "not-the-token-" + API_TOKEN[::-1]
    page = await console.sign_in(typed)
    assert page.status == 401
    assert "not the daemon's API token" in (page.error("token") or "")
    assert typed not in page.text and typed not in caplog.text
    assert console.cookie(COOKIE) is None
    assert "refused a sign-in" in caplog.text
    # The next page still wants a session.
    assert (await console.get("/console/apps")).status == 303


async def test_the_sign_in_form_is_refused_without_its_csrf_token(console: ConsoleClient) -> None:
    page = await console.post("/console/sign-in", {"token": API_TOKEN})
    assert page.status == 403
    assert "out of date" in (page.error("_form") or "")
    assert console.cookie(COOKIE) is None
    # A token from another browser (no nonce cookie of its own) is no better.
    other = ConsoleClient(console.base)
    try:
        token = (await other.get("/console/sign-in")).csrf()
    finally:
        await other.close()
    page = await console.post("/console/sign-in", {"token": API_TOKEN, "csrf_token": token})
    assert page.status == 403


async def test_a_form_posted_without_its_csrf_token_changes_nothing(
    console: ConsoleClient, running: Running
) -> None:
    await console.sign_in()
    fields = {"name": "Demo Game", "platform": "ios", "bundle_id": "333903271"}
    for extra in ({}, {"csrf_token": "forged"}):
        page = await console.post("/console/apps", {**fields, **extra})
        assert page.status == 403
        assert "security token is missing or wrong" in page.text
    assert running.daemon.catalog.index.apps == {}
    page = await console.submit("/console/apps", "/console/apps", fields)
    assert page.status == 303 and page.location == "/console/apps"
    (app,) = running.daemon.catalog.index.apps.values()
    assert app.name == "Demo Game"
    listing = await console.get("/console/apps")
    assert "Demo Game" in listing.text and "App &#39;Demo Game&#39; created" in listing.text


async def test_signing_out_ends_the_session_for_good(console: ConsoleClient) -> None:
    await console.sign_in()
    key = console.cookie(COOKIE)
    assert key
    page = await console.submit("/console/", "/console/sign-out", {})
    assert page.status == 303 and page.location == "/console/sign-in?signed_out=1"
    assert set_cookie(page, COOKIE)[COOKIE]["max-age"] == "0"
    assert "You are signed out" in (await console.get(page.location)).text
    # The old cookie, sent again by hand, opens nothing.
    page = await console.get("/console/apps", headers={"Cookie": f"{COOKIE}={key}"})
    assert page.status == 303 and page.location.startswith("/console/sign-in")


async def test_the_session_is_no_key_to_the_api(console: ConsoleClient) -> None:
    await console.sign_in()
    key = console.cookie(COOKIE)
    for headers in ({"Cookie": f"{COOKIE}={key}"}, {"Authorization": f"Bearer {key}"}):
        async with console.session.get(console.base + "/api/v1/apps", headers=headers) as r:
            assert r.status == 401


async def test_security_headers_on_every_answer_of_the_console(console: ConsoleClient) -> None:
    await console.sign_in()
    answers = [await console.get(path) for path in PAGES]
    answers += [
        await console.get("/console/no-such-page"),
        await console.get("/console/static/console.css"),
        await console.get("/console/static/console.js"),
        await console.get("/console/trackers/ko-missing"),
        await console.get("/console"),  # a redirect
    ]
    for page in answers:
        csp = page.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["X-Frame-Options"] == "DENY"
    for page in answers[: len(PAGES)]:
        assert page.status == 200, page.text[:500]
        assert page.headers["Cache-Control"] == "no-store"
        # No inline script or style for the policy to block: scripts and styles are files.
        assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
        assert "<style" not in page.text and " style=" not in page.text
        assert re.search(r"\son[a-z]+=", page.text) is None
    assert answers[len(PAGES)].status == 404
    assert answers[len(PAGES) + 1].headers["Content-Type"].startswith("text/css")
    assert "javascript" in answers[len(PAGES) + 2].headers["Content-Type"]


async def test_hostile_names_are_shown_as_text(console: ConsoleClient, running: Running) -> None:
    seeded = await seed_config(running.api)
    hostile = '<script>alert("x")</script>'
    await running.api.ok(
        "PATCH", f"/api/v1/trackers/{seeded['tracker']['id']}", json={"name": hostile}
    )
    await running.api.ok("PATCH", f"/api/v1/apps/{seeded['app']['id']}", json={"name": hostile})
    await console.sign_in()
    tracker_id = seeded["tracker"]["id"]
    for path in (*PAGES, f"/console/trackers/{tracker_id}", f"/console/apps/{seeded['app']['id']}"):
        page = await console.get(path)
        assert page.status == 200, path
        assert hostile not in page.text, path
    page = await console.get(f"/console/trackers/{tracker_id}")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text


async def test_no_page_shows_the_api_token_or_an_account_secret(
    console: ConsoleClient, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seeded = await seed_config(running.api)
    await console.sign_in()
    key = console.cookie(COOKIE)
    assert key
    paths = [
        *PAGES,
        f"/console/x-accounts/{ACCOUNT_ID}",
        f"/console/trackers/{seeded['tracker']['id']}",
        f"/console/postbacks/{seeded['postback']['id']}",
    ]
    account = running.daemon.catalog.index.accounts[ACCOUNT_ID]
    for path in paths:
        page = await console.get(path)
        assert page.status == 200, path
        for secret in (API_TOKEN, key, account.access_token, account.access_token_secret):
            assert secret not in page.text, path
    # The session key is never logged.
    assert key not in caplog.text


async def test_a_refused_tracker_keeps_what_was_typed_and_says_why_beside_the_field(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    await console.sign_in()
    fields = [
        ("app_id", seeded["app"]["id"]),
        ("campaign_name", "Spring"),
        ("name", "Spring buyers"),
        ("network", "x_ios"),
        ("x_account_ids", ACCOUNT_ID),
        ("target_event", "PURCHASE"),
        ("post_engagement_window_days", "7"),
        ("post_view_window_days", "14"),
        ("event_matching_event", "purchase"),
        ("then", "view"),
    ]
    page = await console.submit("/console/trackers/new", "/console/trackers", fields)
    assert page.status == 422
    # The API's own message, beside the field it names.
    assert page.error("post_view_window_days") == (
        "post_view_window_days (14) must not be above post_engagement_window_days (7)"
    )
    assert page.value("name") == "Spring buyers"
    assert page.value("campaign_name") == "Spring"
    assert re.search(r'<option value="14" selected>14 days</option>', page.text)
    assert re.search(rf'value="{ACCOUNT_ID}" checked', page.text)
    assert len(running.daemon.catalog.index.trackers) == 1
    # Fixed, it is saved, and the tracker's page shows its id to copy.
    fields[7] = ("post_view_window_days", "1")
    page = await console.submit("/console/trackers/new", "/console/trackers", fields)
    assert page.status == 303, page.text
    tracker_page = await console.get(page.location)
    tracker = next(
        t for t in running.daemon.catalog.index.trackers.values() if t.name == "Spring buyers"
    )
    assert page.location == f"/console/trackers/{tracker.id}"
    assert f'<code id="tracker-id">{tracker.id}</code>' in tracker_page.text
    assert "Append this id to the name of the X campaign" in tracker_page.text


async def test_making_a_tracker_default_names_the_one_it_replaces(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    first = seeded["tracker"]
    await running.api.ok("PATCH", f"/api/v1/trackers/{first['id']}", json={"default": True})
    await console.sign_in()
    page = await console.submit(
        "/console/trackers/new",
        "/console/trackers",
        [("app_id", seeded["app"]["id"]), ("segment_id", first["segment_id"]),
         ("name", "Spring"), ("network", "x_ios"), ("default", "true"),
         ("x_account_ids", ACCOUNT_ID), ("target_event", "PURCHASE"),
         ("event_matching_event", "purchase"), ("then", "postback")],
    )  # fmt: skip
    assert page.status == 303
    # "Save & Create Postback" opens the postback form filled in for the tracker's event.
    assert page.location.startswith("/console/postbacks/new?app_id=")
    assert "event_name=purchase" in page.location and "conversion_type=PURCHASE" in page.location
    form = await console.get(page.location)
    assert "in place of &#39;Winter reengagement&#39;" in form.text
    assert form.value("event_name") == "purchase"
    index = running.daemon.catalog.index
    assert not index.trackers[first["id"]].default


async def test_an_unauthenticated_account_is_refused_on_a_tracker_beside_its_field(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    await running.api.ok(
        "POST",
        "/api/v1/x-accounts",
        201,
        json={"id": "acct-wrong", "name": "Wrong", "access_token": "a-wrong-token",
              "access_token_secret": "a-wrong-secret"},
    )  # fmt: skip
    await console.sign_in()
    accounts = await console.get("/console/x-accounts")
    # Why X refused it is on the accounts page.
    assert "not authenticated" in accounts.text and "X said:" in accounts.text
    page = await console.submit(
        f"/console/trackers/{seeded['tracker']['id']}",
        f"/console/trackers/{seeded['tracker']['id']}",
        [("segment_id", seeded["tracker"]["segment_id"]), ("name", "Winter reengagement"),
         ("type", "reengagement"), ("x_account_ids", ACCOUNT_ID), ("x_account_ids", "acct-wrong"),
         ("target_event", "PURCHASE"), ("post_engagement_window_days", "14"),
         ("post_view_window_days", "0"), ("event_matching_event", "purchase")],
    )  # fmt: skip
    assert page.status == 422
    assert page.error("x_account_ids") == "X account 'acct-wrong' is not authenticated"
    assert re.search(r'value="acct-wrong" checked', page.text)


async def test_postback_form_offers_the_rules_choices_and_refuses_what_they_refuse(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    await console.sign_in()
    form = await console.get(f"/console/postbacks/new?app_id={seeded['app']['id']}")
    assert '<option value="0" selected>Realtime</option>' in form.text
    assert '<option value="600">10 minutes</option>' in form.text
    assert '<option value="3" selected>3</option>' in form.text
    assert '<option value="10">10</option>' in form.text and 'value="11"' not in form.text
    assert '<option value="network_and_agency" disabled>' in form.text
    # A duplicate postback (one per app, network and event) is the API's 409, beside the event.
    page = await console.submit(
        "/console/postbacks/new",
        "/console/postbacks",
        {"app_id": seeded["app"]["id"], "network": "x_ios", "event_name": "purchase",
         "conversion_type": "PURCHASE", "delivery_delay_s": "0", "retry_attempts": "3",
         "delivery_method": "all", "enabled": "true"},
    )  # fmt: skip
    assert page.status == 409
    assert "already has a x_ios postback for event 'purchase'" in (page.error("event_name") or "")
    # A delay the select does not offer, posted by hand, meets the rule's own limit.
    page = await console.submit(
        "/console/postbacks/new",
        "/console/postbacks",
        {"app_id": seeded["app"]["id"], "network": "x_ios", "event_name": "level_up",
         "conversion_type": "LEVEL_ACHIEVED", "delivery_delay_s": "601"},
    )  # fmt: skip
    assert page.status == 422
    assert page.error("delivery_delay_s") == "delivery_delay_s must be between 0 and 600, got 601"


async def test_sign_in_leads_only_to_pages_of_the_console(console: ConsoleClient) -> None:
    for target, expected in [
        ("/console/report?app_id=x", "/console/report?app_id=x"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/api/v1/apps", "/console/"),
        ("/console\\@evil.example", "/console/"),
    ]:
        console.jar.clear()
        form = await console.get("/console/sign-in")
        page = await console.post(
            "/console/sign-in", {"csrf_token": form.csrf(), "token": API_TOKEN, "next": target}
        )
        assert page.location == expected, target


def test_sessions_end_after_their_lifetime_or_when_idle() -> None:
    now = [1000.0]
    sessions = Sessions(lifetime_s=100, idle_s=30, max_sessions=2, clock=lambda: now[0])
    key, session = sessions.create()
    assert sessions.get(key) is session
    now[0] += 29
    assert sessions.get(key) is session  # in use: still alive
    now[0] += 30
    assert sessions.get(key) is None  # idle too long
    key, session = sessions.create()
    for _ in range(4):
        now[0] += 20
        assert sessions.get(key) is session
    now[0] += 21
    assert sessions.get(key) is None  # 101 s after sign-in, however busy
    keys = [sessions.create()[0] for _ in range(3)]
    assert len(sessions) == 2 and sessions.get(keys[0]) is None


def test_the_throttle_brakes_one_address_only() -> None:
    now = [0.0]
    throttle = Throttle(failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    now[0] += 61
    assert not throttle.blocked("10.0.0.1")


def test_a_posted_form_becomes_the_apis_json_fields() -> None:
    posted = MultiDict(
        [("name", "Winter"), ("default", "true"), ("x_account_ids", "a"), ("x_account_ids", "b"),
         ("bundle_id", " 333903271 "), ("post_engagement_window_days", "7"),
         ("post_view_window_days", "seven"), ("event_matching_event", ""), ("type", "")]
    )  # fmt: skip
    names = ("name", "default", "x_account_ids", "bundle_id", "post_engagement_window_days",
             "post_view_window_days", "event_matching_event", "type")  # fmt: skip
    assert json_fields(TRACKER, posted, names, keep_blank_secrets=False) == {
        "name": "Winter",
        "default": True,
        "x_account_ids": ["a", "b"],
        "bundle_id": "333903271",
        "post_engagement_window_days": 7,
        # Not a number: sent as typed, for the rule to refuse with its message.
        "post_view_window_days": "seven",
        "event_matching_event": None,
        "type": None,
    }
    unticked = json_fields(POSTBACK, MultiDict([("delivery_delay_s", "")]), ("enabled",
                           "delivery_delay_s"), keep_blank_secrets=False)  # fmt: skip
    assert unticked == {"enabled": False}
    state = FormState.posted(MultiDict([("access_token", "s3cret"), ("name", "n")]))
    assert state.values == {"name": "n"}


async def test_the_demo_left_running_prints_the_console_and_a_token_that_signs_in(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postbackd", "demo", "--events", str(len(SCENARIOS)),
        "--keep-running", "--data-dir", str(tmp_path / "demo"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not lines or "sign in with the API token" not in lines[-1]:
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        out = "".join(lines)
        console_url = re.search(r"web console: (http://127\.0\.0\.1:\d+)/console/", out)
        token = re.search(r"sign in with the API token: (\S+)", out)
        assert console_url and token, out
        assert token.group(1) == (tmp_path / "demo" / "api-token").read_text().strip()
        client = ConsoleClient(console_url.group(1))
        try:
            page = await client.sign_in(token.group(1))
            assert page.status == 303
            trackers = await client.get("/console/trackers")
            assert trackers.status == 200 and "Demo Game" in trackers.text
            report = await client.get("/console/report")
            assert report.status == 200 and "<svg" in report.text
        finally:
            await client.close()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_readme_shows_the_console_with_committed_screenshots() -> None:
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert "## The console" in readme
    for name in ("console-tracker.png", "console-report.png"):
        assert f"(docs/{name})" in readme
        assert (root / "docs" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


async def test_deliveries_page_with_the_apis_cursor(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    events = [
        {"action": "event", "kochava_app_id": seeded["app"]["id"], "event_id": f"page-{i}",
         "device_ids": {"idfa": f"{i:08x}-0000-4000-8000-{i:012x}"},
         "data": {"event_name": "purchase", "event_data": {}}}
        for i in range(1, 6)
    ]  # fmt: skip
    await running.api.ok("POST", "/track/json", 202, json=events)
    await console.sign_in()
    seen: list[str] = []
    path = "/console/deliveries?limit=2"
    while path:
        page = await console.get(path)
        assert page.status == 200
        ids = re.findall(r'<tr id="delivery-(\d+)"', page.text)
        assert 1 <= len(ids) <= 2
        seen += ids
        found = re.search(r'<a href="([^"]+)" rel="next"', page.text)
        path = html.unescape(found.group(1)) if found else ""
    assert seen == sorted(set(seen), key=int) and len(seen) == 5
    # A cursor that is not one of the API's is refused with its message.
    page = await console.get("/console/deliveries?cursor=bogus!")
    assert page.status == 400 and "cursor is not base64url" in page.text


async def test_pending_deliveries_are_cancelled_from_the_console(
    console: ConsoleClient, running: Running
) -> None:
    seeded = await seed_config(running.api)
    postback_id = seeded["postback"]["id"]
    # Ten minutes' delay: the deliveries wait, scheduled, and can be cancelled.
    delay = {"delivery_delay_s": 600}
    await running.api.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json=delay)
    events = [
        {"action": "event", "kochava_app_id": seeded["app"]["id"], "event_id": f"later-{i}",
         "device_ids": {"idfa": f"{i:08x}-0000-4000-8000-{i:012x}"},
         "data": {"event_name": "purchase", "event_data": {}}}
        for i in range(1, 4)
    ]  # fmt: skip
    await running.api.ok("POST", "/track/json", 202, json=events)
    await console.sign_in()
    listing = await console.get("/console/deliveries?state=scheduled")
    ids = re.findall(r'name="ids" value="(\d+)"', listing.text)
    assert len(ids) == 3
    page = await console.submit(
        "/console/deliveries?state=scheduled",
        "/console/deliveries/cancel",
        [("ids", ids[0]), ("state", "scheduled")],
    )
    assert page.status == 303 and page.location == "/console/deliveries?state=scheduled"
    assert "1 deliveries cancelled" in (await console.get(page.location)).text
    # The rest, all of the postback's, from its page.
    page = await console.submit(
        f"/console/postbacks/{postback_id}", f"/console/postbacks/{postback_id}/cancel", {}
    )
    assert "2 deliveries of this postback cancelled" in (await console.get(page.location)).text
    cancelled = await running.api.ok("GET", "/api/v1/deliveries?state=cancelled")
    assert cancelled["count"] == 3
    # Ids that are not delivery ids meet the API's own check.
    page = await console.submit("/console/deliveries", "/console/deliveries/cancel", [("ids", "x")])
    assert "ids must be a list of at most" in (await console.get(page.location)).text


async def test_saving_an_object_that_is_gone_is_a_404_and_creates_nothing(
    console: ConsoleClient, running: Running
) -> None:
    # A form left open while someone else deleted its object: the save must not create it
    # again or show a form about nothing.
    await console.sign_in()
    before = await running.api.ok("GET", "/api/v1/apps")
    for kind in ("x-accounts", "apps", "campaigns", "trackers", "postbacks"):
        page = await console.submit(
            f"/console/{kind}", f"/console/{kind}/ko-missing", {"name": "Back again"}
        )
        assert page.status == 404, (kind, page.text[:300])
    assert await running.api.ok("GET", "/api/v1/apps") == before
