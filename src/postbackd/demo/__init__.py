"""`postbackd demo`: the seed's workflow end to end on one machine, checked against its
own script.

    simulated X (in process, scripted) <-- claims -- postbackd daemon (in process)
                                                         ^  admin API, POST /track/json
                                                       the demo (steps, events, summary)

Both servers share one uvloop event loop and listen on free loopback ports; the data
directory is temporary unless `--data-dir` names one, and every credential is made fresh
for the run and never printed, but for the API token with `--keep-running`: it signs in to
the web console the demo leaves running.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import logging
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiohttp
import uvloop
from aiohttp import web

from postbackd import logs
from postbackd.daemon import Daemon
from postbackd.mockx.app import start_mock
from postbackd.mockx.claims import ClaimMaker
from postbackd.mockx.config import MockAccount, MockConfig
from postbackd.mockx.script import load_script
from postbackd.mockx.state import STATE
from postbackd.progress import Progress
from postbackd.settings import Settings
from postbackd.token import read_token_file, token_path

from .scenarios import SCENARIOS, make_plan
from .summary import compare, expected, mismatch_lines, observe, render
from .traffic import BATCH_EVENTS, stream, wait_for_deliveries
from .workflow import ACCOUNT_ID, APP_STORE_ID, Api, DemoError, configure

# For `postbackd --help` and `postbackd demo --help` (the CLI wires them).
SUMMARY: Final = "run the seed's workflow end to end against a simulated X, and check it"
DESCRIPTION: Final = """\
Run the X re-engagement workflow end to end with nothing to set up. A simulated X Ads API
and a postbackd daemon start on free loopback ports, with a temporary data directory and
credentials made for this run (never printed). Through the admin API, the demo
authenticates an X account and creates an app, a campaign and segment, two reengagement
trackers (a default one, and one that X campaign names carry the id of) and two postbacks.
It then streams sample events, each scripted to reach a known outcome: attributed by a click
or a view, claimed, not claimed, rejected for data sharing, outside the window or for an
engagement after the conversion, or skipped for want of an IDFA. A table per tracker shows
what was delivered, what X claimed and what postbackd attributed or rejected, and why.

Every figure is checked against the script: exit status 0 when all match, 1 otherwise."""

EXAMPLE: Final = """\
postbackd demo
postbackd demo --events 20000 --seed 7 --data-dir ./demo-data --keep-running"""

DEFAULT_EVENTS: Final = 3000
# X allows 60,000 claims per account in 15 minutes (reference, "Rate limits"); the demo
# stays well inside one window so that it never waits for a reset.
MAX_EVENTS: Final = 50_000
SCRIPT_FILE: Final = "x-engagements.ndjson"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=_event_count,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"sample events to stream, {len(SCENARIOS)} to {MAX_EVENTS:,} "
        f"(default {DEFAULT_EVENTS:,})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="seed of the sample events and X's engagements: the same seed, the same "
        "figures (default 1)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the daemon's data (SQLite database, API token, X's script) in DIR, which "
        "must be new or empty (default: a temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the summary, leave the daemon running until Ctrl-C, and print the address "
        "of its web console with a token to sign in (and where /metrics and the admin API are)",
    )


def _event_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not len(SCENARIOS) <= count <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(f"choose from {len(SCENARIOS)} to {MAX_EVENTS:,}")
    return count


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """The partner's and the X account's secrets of one run."""

    consumer_key: str
    consumer_secret: str = dataclasses.field(repr=False)
    hmac_key: bytes = dataclasses.field(repr=False)
    account_token: str = dataclasses.field(repr=False)
    account_secret: str = dataclasses.field(repr=False)

    @classmethod
    def new(cls) -> Credentials:
        made = cls(
            consumer_key=secrets.token_urlsafe(18),
            consumer_secret=secrets.token_urlsafe(32),
            hmac_key=secrets.token_bytes(32),
            account_token=f"{secrets.randbelow(10**9)}-{secrets.token_urlsafe(24)}",
            account_secret=secrets.token_urlsafe(32),
        )
        logs.register_secret(
            made.consumer_secret, made.hmac_key_b64, made.account_token, made.account_secret
        )
        return made

    @property
    def hmac_key_b64(self) -> str:
        return base64.b64encode(self.hmac_key).decode()


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when the summary matches the scripted claims, 1 when not."""
    with _data_dir(args.data_dir) as data_dir:
        # Only the daemon's warnings and errors: the demo's own lines tell the story.
        logs.configure_logging("warning", "text")
        # Its X account tokens are made up and stay plain (no secret_key), so that a kept
        # --data-dir opens with `serve` as it is: the warning would only be noise here.
        logging.getLogger("postbackd.store.sealing").setLevel(logging.ERROR)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_demo(args, data_dir, Credentials.new()))


@contextlib.contextmanager
def _data_dir(given: Path | None) -> Iterator[Path]:
    if given is None:
        with tempfile.TemporaryDirectory(prefix="postbackd-demo-") as temporary:
            yield Path(temporary)
        return
    if given.exists() and (not given.is_dir() or any(given.iterdir())):
        raise DemoError(f"--data-dir {given}: must be a new or empty directory")
    yield given


async def _demo(args: argparse.Namespace, data_dir: Path, credentials: Credentials) -> int:
    mock, mock_url = await start_mock(
        MockConfig(
            consumer_key=credentials.consumer_key,
            consumer_secret=credentials.consumer_secret,
            hmac_key=credentials.hmac_key,
            accounts=(
                MockAccount(
                    ACCOUNT_ID, credentials.account_token, credentials.account_secret, "Demo ads"
                ),
            ),
            apps=(APP_STORE_ID,),
            seed=args.seed,
            # The demo reads X's answers through postbackd, not the mock's request log.
            request_log_max=1000,
        )
    )
    try:
        daemon = Daemon(
            Settings(
                listen="127.0.0.1:0",
                data_dir=data_dir,
                x_api_url=mock_url,
                x_consumer_key=credentials.consumer_key,
                x_consumer_secret=credentials.consumer_secret,
                x_hmac_key=credentials.hmac_key_b64,
                shutdown_grace_s=2.0,
            )
        )
        try:
            await daemon.start()
            # Generated into the data dir at the first start (PRODUCT.md 3).
            token = read_token_file(data_dir)
            assert token is not None
            logs.register_secret(token)
            url = f"http://127.0.0.1:{daemon.port}"
            _say(
                f"postbackd demo: simulated X on {mock_url}, postbackd on {url}, data in {data_dir}"
            )
            async with aiohttp.ClientSession() as session:
                status = await _walk(Api(session, url, token), mock, args, data_dir, credentials)
            if args.keep_running:
                await _stay(url, data_dir, token)
            return status
        finally:
            await daemon.stop()
    finally:
        await mock.cleanup()


async def _walk(
    api: Api, mock: web.AppRunner, args: argparse.Namespace, data_dir: Path, cred: Credentials
) -> int:
    setup = await configure(api, cred.account_token, cred.account_secret, _say)
    plan = make_plan(
        args.events,
        args.seed,
        app_id=setup.app_id,
        named_tracker_id=setup.trackers["named"].id,
        now_s=int(time.time()),
        run_id=secrets.token_hex(4),
    )
    script = data_dir / SCRIPT_FILE
    script.write_bytes(plan.ndjson_script())
    _script_mock(mock, script)
    devices = len({entry["device_id"] for entry in plan.script})
    _say(
        f"6. simulated X scripted: {len(plan.script):,} engagements of {devices:,} devices "
        f"({script.name})"
    )

    _say(
        f"7. streaming {len(plan.events):,} sample events (seed {args.seed}) to "
        f"POST /track/json, NDJSON batches of {BATCH_EVENTS}"
    )
    started = time.monotonic()
    # Made now: deliveries start with the first batch, and the rate counts from there.
    delivering = Progress("claims")
    streamed = await stream(api, plan.events)
    want = expected(plan, setup)
    claims = await wait_for_deliveries(
        api, setup.app_id, sum(row["delivered"] for row in want.table.values()), delivering
    )
    deliver_s = time.monotonic() - started
    _say(f"8. X answered {claims:,} claim requests; per tracker:")
    got = await observe(api, plan, setup, streamed)
    _say("")
    for line in render(got, want, setup, streamed.seconds, deliver_s):
        _say(line)
    _say("")
    differ = compare(want, got, setup)
    if differ:
        for line in mismatch_lines(differ):
            _say(line)
        return 1
    _say(f"summary matches the scripted claims ({len(plan.events):,} events, seed {args.seed})")
    return 0


def _script_mock(mock: web.AppRunner, path: Path) -> None:
    """Give the running simulated X its engagements.

    Their campaign names carry a tracker id, which exists only once step 4 has made the
    tracker; the mock reads its script when it starts and `PATCH /_mock/config` cannot
    change it, so the demo, in the same process, hands the script over directly."""
    state = mock.app[STATE]
    state.config = dataclasses.replace(state.config, script=str(path))
    state.claims = ClaimMaker(load_script(path, state.config.hmac_key))


async def _stay(url: str, data_dir: Path, token: str) -> None:
    token_file = token_path(data_dir)
    _say(f"\npostbackd keeps running on {url} (API token in {token_file}); Ctrl-C stops it.")
    # The token is this run's own (made at its first start), printed on request only.
    _say(f"  web console: {url}/console/")
    _say(f"  sign in with the API token: {token}")
    _say("Or try:")
    _say(f"  curl -s {url}/metrics | grep ^postbackd_claims_total")
    _say(f'  curl -s -H "Authorization: Bearer $(cat {token_file})" {url}/api/v1/reports/trackers')
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _say(line: str) -> None:
    # Flushed at once, so the lines and the progress bars on stderr keep their order.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
