"""The web console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against `postbackd serve` and `postbackd mock-x` run
as processes, as an operator runs them.

The seed's workflow is clicked through from sign-in to the tracker report; refusals must
appear beside their fields with what was typed; a form without its CSRF token, or posted
from another site, must change nothing; a hostile name must stay text; and no page may
trip its own Content-Security-Policy. A screenshot of each page goes to the test's
temporary directory (`screenshots/`).

No browser is downloaded: Selenium is pointed at /usr/bin/chromium and
/usr/bin/chromedriver. Without them the tests skip, except in CI (CI=true), where they
fail: `.ci/run` installs the packages. The browser's steps run in a worker thread, so the
event loop keeps reading the daemon's log meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from conftest import ACCOUNT_ID, ACCOUNT_SECRET, ACCOUNT_TOKEN, API_TOKEN
from e2e import DAY, HOUR, T0, engagement, event, idfa
from procs import Proc, start_daemon, start_mock

selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
# Generous: a shared two-core machine may be slow, and every wait ends as soon as it can.
WAIT_S: Final = 30.0
# Without these, Chromium tries to reach Google (updates, sync, field trials) and can hang.
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def _binaries() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    why = f"{', '.join(missing)} not installed (Debian packages chromium and chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; .ci/run installs them")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile of its own."""
    _binaries()
    profile = tempfile.mkdtemp(prefix="postbackd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Console:
    """The console as a person uses it: pages opened, fields typed, buttons clicked."""

    def __init__(self, driver: WebDriver, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        driver.delete_all_cookies()

    def wait(self, condition: Callable[[WebDriver], Any], what: str) -> Any:
        # While a page is replaced, Chromium may answer a query about the old one with an
        # error of its own rather than "stale element": such answers are asked again.
        waiting = WebDriverWait(self.driver, WAIT_S, ignored_exceptions=(WebDriverException,))
        try:
            return waiting.until(condition)
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(f"waited {WAIT_S} s for {what}; page: {self.driver.current_url}\n"
                                 f"{self.body()[:2000]}") from None  # fmt: skip

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.wait(EC.presence_of_element_located((By.TAG_NAME, "main")), f"{path} to load")

    def find(self, css: str) -> WebElement:
        return self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, css)), css)

    def body(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def type(self, field: str, text: str) -> None:
        element = self.find(f"#{field}")
        element.clear()
        element.send_keys(text)

    def choose(self, field: str, value: str) -> None:
        Select(self.find(f"#{field}")).select_by_value(value)

    def choose_text(self, field: str, text: str) -> None:
        Select(self.find(f"#{field}")).select_by_visible_text(text)

    def tick(self, css: str, on: bool = True) -> None:
        box = self.find(css)
        if box.is_selected() != on:
            box.click()

    def click(self, css: str) -> None:
        """Click a button that loads a page, and wait for the new page."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.find(css).click()
        self.wait(lambda _: gone(old), f"the page after clicking {css}")
        self.wait(EC.presence_of_element_located((By.TAG_NAME, "main")), "the next page")

    def error(self, field: str) -> str:
        return str(self.find(f"#{field}-error").text)

    def value(self, field: str) -> str:
        return str(self.find(f"#{field}").get_attribute("value"))

    def selected(self, field: str) -> str:
        return str(Select(self.find(f"#{field}")).first_selected_option.get_attribute("value"))

    def notices(self) -> str:
        return "\n".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, ".notice"))

    def shot(self, name: str) -> Path:
        """The whole page as a PNG (not just the window)."""
        path = self.shots / f"{name}.png"
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        data = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": 1280, "height": max(900, height), "scale": 1}},
        )  # fmt: skip
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def csp_violations(self) -> list[str]:
        """Messages of the browser's console about the page's Content-Security-Policy."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if "Content Security Policy" in entry["message"]
        ]

    def sign_in(self, token: str = API_TOKEN, shot: bool = False) -> None:
        self.open("/console/")
        self.wait(EC.url_contains("/console/sign-in"), "the sign-in form")
        if shot:
            self.shot("sign-in")
        self.type("token", token)
        self.click("form[action='/console/sign-in'] button")


def gone(element: WebElement) -> bool:
    """Whether the element's page was replaced (a new page has loaded)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def api(base: str, method: str, path: str, body: object = None) -> Any:
    """The admin API or ingest, with the bearer token (plain urllib: this runs in a thread)."""
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def mock(base: str, method: str, path: str, body: object = None) -> Any:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll the API (not the browser) until `check` is truthy; the page is loaded after."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT_S} s for {what} (last: {value!r})")
        time.sleep(0.1)


# Devices of the seed walk and what the simulated X says of them (the app's default
# tracker has windows of 14 days for clicks and 1 day for views).
BUYER: Final = idfa(1)  # a click 2 days before: attributed
SHARER: Final = idfa(2)  # no data sharing on X's node, a click on the partner node: attributed
VIEWER: Final = idfa(3)  # a view 3 days before: outside the 1-day post-view window
STRANGER: Final = idfa(4)  # nothing: not claimed
TUTOR: Final = idfa(5)  # the event whose delivery dies, and is replayed


def _script(path: Path) -> Path:
    lines = [
        engagement(BUYER, T0 - 2 * DAY, campaign="Winter sale"),
        engagement(SHARER, T0 - HOUR, kind="VIEW", granular=False, campaign="Winter sale"),
        engagement(SHARER, T0 - 5 * HOUR, node="tpn", campaign="Winter sale partners"),
        engagement(VIEWER, T0 - 3 * DAY, kind="VIEW", campaign="Winter sale"),
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    """The simulated X (scripted) and the daemon, as processes; their URLs."""
    x = await start_mock("--script", str(_script(tmp_path / "engagements.ndjson")))
    daemon: Proc | None = None
    try:
        daemon = await start_daemon(tmp_path / "data", x.url, retry_base_s=0.05)
        yield daemon.url, x.url
        assert "Traceback" not in daemon.log, daemon.log
    finally:
        if daemon is not None:
            await daemon.stop()
        await x.stop()


def _walk_the_seed(console: Console, base: str, x_url: str) -> None:
    # Sign in with the API token.
    console.sign_in(shot=True)
    assert "Signed in." in console.notices()
    console.shot("overview")

    # 1. An X Ads account: a wrong secret first, and X's reason is shown.
    console.open("/console/x-accounts")
    console.type("id", ACCOUNT_ID)
    console.type("name", "Main ads")
    console.type("access_token", ACCOUNT_TOKEN)
    console.type("access_token_secret", "not-the-secret")
    console.click("#account-form button[type=submit]")
    assert "did not authenticate it" in console.notices()
    assert "not authenticated" in console.find(f"#account-{ACCOUNT_ID} .status").text
    assert "X said:" in console.find(f"#account-{ACCOUNT_ID} .status").text
    console.shot("x-accounts-refused")
    # ... then the right tokens, and it is authenticated.
    console.open(f"/console/x-accounts/{ACCOUNT_ID}")
    console.type("access_token", ACCOUNT_TOKEN)
    console.type("access_token_secret", ACCOUNT_SECRET)
    console.click("#account-form button[type=submit]")
    assert "saved and authenticated" in console.notices()
    console.click(f"#account-{ACCOUNT_ID} .actions button")  # Authenticate again
    assert "checked with X and authenticated" in console.notices()
    assert "authenticated" in console.find(f"#account-{ACCOUNT_ID} .status").text
    console.shot("x-accounts")

    # 2. The app.
    console.open("/console/apps")
    console.type("name", "Demo Game")
    console.choose("platform", "ios")
    console.type("bundle_id", "333903271")
    console.click("#app-form button[type=submit]")
    assert "App 'Demo Game' created" in console.notices()
    (app,) = api(base, "GET", "/api/v1/apps")["items"]
    console.shot("apps")

    # 3. A campaign and its segment.
    console.open("/console/campaigns")
    console.choose("app_id", app["id"])
    console.type("name", "Winter")
    console.click("#campaign-form button[type=submit]")
    console.type("segment-name", "All")
    console.click("#segment-form button[type=submit]")
    assert "Segment 'All' created" in console.notices()
    console.shot("campaign")
    console.open("/console/campaigns")
    console.shot("campaigns")

    # 4. The reengagement tracker: the seed's form, every field.
    console.open("/console/trackers/new")
    assert console.selected("app_id") == app["id"]  # the only app, chosen already
    console.choose_text("segment_id", "Demo Game › Winter › All")
    console.type("name", "Winter reengagement")
    console.choose("network", "x_ios")
    console.tick("#default")
    console.tick("#x_account_ids-1")
    assert console.value("bundle_id") == ""  # the app's
    console.choose("target_event", "PURCHASE")
    assert console.selected("post_engagement_window_days") == "14"  # the seed's defaults
    assert console.selected("post_view_window_days") == "0"
    window_choices = [
        o.get_attribute("value")
        for o in Select(console.find("#post_view_window_days")).options
    ]  # fmt: skip
    assert window_choices == ["0", "1", "7", "14", "30"]
    console.choose("post_view_window_days", "1")
    console.type("event_matching_event", "purchase")
    console.shot("tracker-form")
    console.click("#tracker-form button[value=view]")
    (tracker,) = api(base, "GET", "/api/v1/trackers")["items"]
    assert tracker["default"] is True and tracker["bundle_id"] == "333903271"
    assert console.find("#tracker-id").text == tracker["id"]
    assert "Append this id to the name of the X campaign" in console.find("#append-id").text
    # Copy the tracker id, as the marketer does to paste it into the X campaign name.
    console.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    copy = console.find("button[data-copy-from='tracker-id']")
    # Shown by the page's script (without it, the id is there to select by hand).
    console.wait(lambda _: copy.is_displayed(), "the copy button")
    copy.click()
    console.wait(lambda d: copy.text == "Copied", "the copy button to confirm")
    pasted = console.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, e => done('failed: ' + e));"
    )
    assert pasted == tracker["id"]
    console.shot("tracker")

    # 5. The postbacks: purchase from the tracker's page, filled in for its event; then a
    # second one, without retries, whose delivery will die and be replayed.
    console.click("a[href^='/console/postbacks/new']")
    assert console.value("event_name") == "purchase"
    assert console.selected("conversion_type") == "PURCHASE"
    assert console.selected("delivery_delay_s") == "0"
    assert console.selected("retry_attempts") == "3"
    assert console.selected("delivery_method") == "all"
    assert console.find("#enabled").is_selected()
    console.shot("postback-form")
    console.click("#postback-form button[type=submit]")
    assert "every 'purchase' event of 'Demo Game' is sent to X as PURCHASE" in console.notices()
    console.open("/console/postbacks/new")
    console.type("event_name", "tutorial")
    console.choose("conversion_type", "TUTORIAL_COMPLETE")
    console.choose("retry_attempts", "0")
    console.choose("delivery_delay_s", "0")
    console.click("#postback-form button[type=submit]")
    console.shot("postbacks")
    console.open("/console/trackers")
    console.shot("trackers")

    # Events through the API. First one that X fails (500): without retries it is dead.
    mock(x_url, "PATCH", "/_mock/config", {"error_rate": 1.0})
    tutor = event(app, idfa=TUTOR, name="tutorial", event_id="tutorial-5")
    api(base, "POST", "/track/json", tutor)
    wait_for(
        lambda: api(base, "GET", "/api/v1/deliveries?state=dead")["count"] == 1, "a dead delivery"
    )
    mock(x_url, "PATCH", "/_mock/config", {"error_rate": 0.0})
    events = [
        event(app, idfa=BUYER, event_id="order-1", event_data={"sum": 9.99, "currency": "USD"}),
        event(app, idfa=SHARER, event_id="order-2"),
        event(app, idfa=VIEWER, event_id="order-3"),
        event(app, idfa=STRANGER, event_id="order-4"),
        event(app, device_ids={}, event_id="order-5"),  # no IDFA: skipped
    ]
    answer = api(base, "POST", "/track/json", events)
    assert answer["accepted"] == 5, answer
    wait_for(
        lambda: api(base, "GET", "/api/v1/deliveries?state=delivered")["count"] == 4,
        "the purchases delivered",
    )

    # Results: the dead delivery, replayed from the console.
    console.open("/console/deliveries?state=dead")
    assert len(console.driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")) == 1
    console.tick("#deliveries input[name=ids]")
    console.shot("deliveries-dead")
    console.click("#replay-chosen")
    assert "1 dead deliveries replayed" in console.notices()
    wait_for(
        lambda: api(base, "GET", "/api/v1/deliveries?state=delivered")["count"] == 5,
        "the replayed delivery delivered",
    )
    console.open("/console/deliveries")
    rows = console.driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")
    states = sorted(r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows)
    assert states == ["delivered"] * 5 + ["skipped"], states
    console.shot("deliveries")

    # One event: its claim, and the candidate rejected on the way, with the reason.
    console.open("/console/deliveries")
    console.type("lookup-event", "order-2")
    console.click(".lookup button")
    claim = console.find(".claim").text
    assert "attributed" in claim and "Winter reengagement" in claim
    assert "tpn: CLICK" in claim
    rejected = console.find(".claim table.rejected").text
    assert "rejected_data_sharing" in rejected and "twitter" in rejected
    console.shot("event")

    # The report per tracker, drawn: X claimed 3, accepted 2, the gap of 1 by reason, and
    # the attributions by CLICK and VIEW.
    console.open("/console/report")
    report = console.find(f"#tracker-{tracker['id']}")
    assert report.find_element(By.CSS_SELECTOR, ".total-claimed").text == "3"
    assert report.find_element(By.CSS_SELECTOR, ".total-accepted").text == "2"
    charts = report.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    assert len(charts) == 3
    claimed_bars = [t.text for t in charts[0].find_elements(By.CSS_SELECTOR, "text.value")]
    assert claimed_bars == ["3", "2", "1"]
    gap = charts[1].text
    assert "Outside the window" in gap
    assert [t.text for t in charts[2].find_elements(By.CSS_SELECTOR, "text.value")] == ["2", "0"]
    console.shot("report")

    # Every page of the walk respected its own Content-Security-Policy.
    assert console.csp_violations() == []


async def test_the_seed_workflow_through_the_console(
    browser: WebDriver, world: tuple[str, str], tmp_path: Path
) -> None:
    base, x_url = world
    console = Console(browser, base, tmp_path / "screenshots")
    await asyncio.to_thread(_walk_the_seed, console, base, x_url)
    shots = {p.stem for p in (tmp_path / "screenshots").glob("*.png")}
    assert {"sign-in", "overview", "x-accounts", "apps", "campaigns", "campaign", "tracker-form",
            "tracker", "trackers", "postback-form", "postbacks", "deliveries", "event",
            "report"} <= shots  # fmt: skip


def _refusals(console: Console, base: str) -> None:
    api(base, "POST", "/api/v1/x-accounts", {"id": ACCOUNT_ID, "name": "Main ads",
        "access_token": ACCOUNT_TOKEN, "access_token_secret": ACCOUNT_SECRET})  # fmt: skip
    api(base, "POST", "/api/v1/x-accounts", {"id": "acct-new", "name": "Not yet",
        "access_token": "unknown-token", "access_token_secret": "unknown"})  # fmt: skip
    app = api(base, "POST", "/api/v1/apps",
              {"name": "Demo Game", "platform": "ios", "bundle_id": "333903271"})  # fmt: skip
    console.sign_in()
    console.open(f"/console/trackers/new?app_id={app['id']}")
    console.type("campaign_name", "Spring")
    console.type("name", "Spring buyers")
    console.choose("network", "x_ios")
    console.tick("#x_account_ids-1")
    console.choose("target_event", "PURCHASE")
    console.choose("post_engagement_window_days", "7")
    console.choose("post_view_window_days", "14")
    console.type("event_matching_event", "purchase")
    console.click("#tracker-form button[value=view]")
    # The rule's refusal, beside the post-view window; everything typed is still there.
    assert console.error("post_view_window_days") == (
        "post_view_window_days (14) must not be above post_engagement_window_days (7)"
    )
    assert console.value("name") == "Spring buyers"
    assert console.value("campaign_name") == "Spring"
    assert console.value("event_matching_event") == "purchase"
    assert console.selected("post_engagement_window_days") == "7"
    assert console.selected("post_view_window_days") == "14"
    assert console.selected("target_event") == "PURCHASE"
    assert console.find("#x_account_ids-1").is_selected()
    assert console.find("#post_view_window_days").get_attribute("aria-invalid") == "true"
    console.shot("refused-window")
    # Fixed, but now with the account X has not authenticated.
    console.choose("post_view_window_days", "1")
    console.tick("#x_account_ids-1", on=False)
    console.tick("#x_account_ids-2")
    assert "not authenticated" in console.find("label[for='x_account_ids-2']").text
    console.click("#tracker-form button[value=view]")
    assert console.error("x_account_ids") == "X account 'acct-new' is not authenticated"
    assert console.selected("post_view_window_days") == "1"
    assert console.find("#x_account_ids-2").is_selected()
    assert api(base, "GET", "/api/v1/trackers")["count"] == 0
    console.shot("refused-account")
    # And a postback the rules refuse: a delay above ten minutes cannot be chosen, a second
    # postback for the same event is refused beside the event.
    api(base, "POST", "/api/v1/postbacks", {"app_id": app["id"], "network": "x_ios",
        "event_name": "purchase", "conversion_type": "PURCHASE"})  # fmt: skip
    console.open(f"/console/postbacks/new?app_id={app['id']}")
    delays = [o.get_attribute("value") for o in Select(console.find("#delivery_delay_s")).options]
    assert delays[0] == "0" and delays[-1] == "600"
    console.type("event_name", "purchase")
    console.choose("conversion_type", "PURCHASE")
    console.click("#postback-form button[type=submit]")
    assert "already has a x_ios postback for event 'purchase'" in console.error("event_name")
    assert console.value("event_name") == "purchase"
    assert console.csp_violations() == []


async def test_refusals_appear_beside_their_fields_with_what_was_typed(
    browser: WebDriver, world: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = world
    console = Console(browser, base, tmp_path / "screenshots")
    await asyncio.to_thread(_refusals, console, base)


HOSTILE: Final = "<img src=x id=pwned><script>window.pwned = 1</script>"


def _csrf_and_escaping(console: Console, base: str) -> None:
    console.sign_in()
    # A hostile app name, typed into the console, is shown as text wherever it appears.
    console.open("/console/apps")
    console.type("name", HOSTILE)
    console.choose("platform", "android")
    console.click("#app-form button[type=submit]")
    assert HOSTILE in console.find("#apps").text
    assert console.driver.find_elements(By.ID, "pwned") == []
    assert console.driver.execute_script("return window.pwned === undefined") is True
    console.open("/console/campaigns")
    assert HOSTILE in console.body()
    assert console.driver.find_elements(By.ID, "pwned") == []
    console.shot("hostile-name")

    # A form whose CSRF token was taken out is refused, and nothing is created.
    console.open("/console/apps")
    console.type("name", "Forged")
    console.choose("platform", "ios")
    console.driver.execute_script(
        "document.querySelector('#app-form input[name=csrf_token]').remove()"
    )
    console.click("#app-form button[type=submit]")
    assert "security token is missing or wrong" in console.find("#error-message").text
    console.shot("csrf-refused")
    # So is a form another site makes the browser post: its session cookie (SameSite=Strict)
    # does not go with it.
    console.driver.get(
        "data:text/html,<form method=post action='" + base + "/console/apps'>"
        "<input name=name value=Forged><input name=platform value=ios>"
        "<button id=go>go</button></form>"
    )
    old = console.driver.find_element(By.TAG_NAME, "html")
    console.driver.find_element(By.ID, "go").click()
    console.wait(lambda _: gone(old), "the answer to the forged form")
    console.wait(EC.presence_of_element_located((By.ID, "error-message")), "the refusal")
    assert "not signed in" in console.find("#error-message").text
    names = [a["name"] for a in api(base, "GET", "/api/v1/apps")["items"]]
    assert names == [HOSTILE]
    # The session is still there for the console's own forms.
    console.open("/console/apps")
    assert "Sign out" in console.body()

    # The security headers, on a page as the browser got it.
    with urllib.request.urlopen(base + "/console/sign-in", timeout=30) as answer:
        headers = answer.headers
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    # Framing is refused by the browser itself (frame-ancestors 'none').
    console.driver.get(f"data:text/html,<iframe id=f src='{base}/console/sign-in'></iframe>")
    console.driver.switch_to.frame(console.find("#f"))
    try:
        # Either the sign-in form loaded in the frame, or Chromium's own error page did.
        console.wait(
            lambda d: (
                d.find_elements(By.ID, "token")
                or d.find_elements(By.CSS_SELECTOR, "html[subframe]")
            ),
            "the frame to load or be refused",
        )
        assert console.driver.find_elements(By.ID, "token") == []
    finally:
        console.driver.switch_to.default_content()
    # Signing out ends it.
    console.open("/console/")
    console.click("form.sign-out button")
    assert "You are signed out" in console.body()
    console.open("/console/apps")
    assert "/console/sign-in" in console.driver.current_url
    assert [v for v in console.csp_violations() if base in v] == []


async def test_csrf_escaping_and_security_headers(
    browser: WebDriver, world: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = world
    console = Console(browser, base, tmp_path / "screenshots")
    await asyncio.to_thread(_csrf_and_escaping, console, base)
