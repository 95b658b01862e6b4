"""`postbackd mock-x`: settings by flag > environment > settings file (`--config`) > default.

The environment names are the daemon's (PRODUCT.md section 3), so one environment drives
both: POSTBACKD_X_CONSUMER_KEY, POSTBACKD_X_CONSUMER_SECRET, POSTBACKD_X_HMAC_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import fields
from typing import Final

import uvloop

from postbackd import logs
from postbackd.mockx.app import start_mock
from postbackd.mockx.config import MockConfig, read_settings_file
from postbackd.mockx.state import STATE
from postbackd.settings import SettingsError

log = logging.getLogger("postbackd.mockx")

ENVIRONMENT: Final = {
    "consumer_key": "POSTBACKD_X_CONSUMER_KEY",
    "consumer_secret": "POSTBACKD_X_CONSUMER_SECRET",
    "hmac_key": "POSTBACKD_X_HMAC_KEY",
}

ACCOUNT_FAULTS_HELP: Final = """\
Make one X account slow, throttled, failing or timing out while the others stay
healthy. A request belongs to the account of the OAuth token that signed it. Keys:
latency, error_rate, timeout_rate, reset_rate, rate_limit, rate_window_s; a key left
out takes the global flag's value. Account checks (GET /12/accounts/ID) keep the
account's rate limit but not its latency or faults. Example, with the consumer key and
secret in POSTBACKD_X_CONSUMER_KEY and POSTBACKD_X_CONSUMER_SECRET: acct-b answers claims
after 40 s and takes 1 request per 2 minutes, acct-a answers at once:

  postbackd mock-x --account acct-a:TOKEN_A:SECRET_A --account acct-b:TOKEN_B:SECRET_B \\
    --account-faults acct-b:latency=fixed:40000,rate_limit=1,rate_window_s=120

In a settings file: [account_faults.acct-b] with the same keys. At runtime,
PATCH /_mock/config {"account_faults": {"acct-b": {"error_rate": 0.5}}} replaces
them all ({} clears them); GET /_mock/stats counts each account's answers (by_account)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", metavar="FILE", help="settings file, TOML (or JSON when named *.json)")
    add("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8081)")
    add("--api-version", metavar="VERSION", help="API version in the paths (default 12)")
    add("--consumer-key", help="the partner's OAuth consumer key [POSTBACKD_X_CONSUMER_KEY]")
    add("--consumer-secret", help="its consumer secret [POSTBACKD_X_CONSUMER_SECRET]")
    add("--hmac-key", metavar="BASE64", help="partner HMAC key [POSTBACKD_X_HMAC_KEY]")
    add("--account", dest="accounts", action="append", metavar="ID:TOKEN:SECRET",
        help="an ads account and an OAuth token with access to it (repeatable)")  # fmt: skip
    add("--app", dest="apps", action="append", metavar="APP_ID",
        help="allow only these app ids, others answer 404 (repeatable)")  # fmt: skip
    add("--script", metavar="FILE", help="scripted engagements, JSON array or NDJSON")
    add("--claim-rate", type=float, metavar="0..1", help="share of other conversions claimed")
    add("--campaign-name", dest="campaign_names", action="append", metavar="NAME",
        help="campaign names of random claims (repeatable)")  # fmt: skip
    add("--claim-max-age-days", type=float, metavar="DAYS", help="age of random engagements")
    add("--seed", type=int, help="seed of random claims and faults (default 0)")
    add("--latency", metavar="SPEC",
        help="added latency: none, fixed:MS, uniform:MIN:MAX, lognormal:MEDIAN:P99")  # fmt: skip
    add("--error-rate", type=float, metavar="0..1", help="share answered 500/503")
    add("--timeout-rate", type=float, metavar="0..1", help="share held for --timeout-hold-s")
    add("--timeout-hold-s", type=float, metavar="S", help="how long a held request waits")
    add("--reset-rate", type=float, metavar="0..1", help="share whose connection is reset")
    add("--outage", action="store_const", const=True, help="answer every claim 503")
    add("--rate-limit", type=int, metavar="N", help="requests per token per window (60000)")
    add("--rate-window-s", type=float, metavar="S", help="rate limit window (900)")
    add("--request-log-max", type=int, metavar="N", help="keep only the latest N requests")
    add("--receipt-log", action="store_const", const=True,
        help="keep each claim answered 200 and when it came (GET /_mock/receipts)")  # fmt: skip
    group = parser.add_argument_group("per-account faults", ACCOUNT_FAULTS_HELP)
    group.add_argument("--account-faults", dest="account_faults", action="append",
        metavar="ID:KEY=VALUE[,KEY=VALUE...]",
        help="one account's own faults and rate limit (repeatable; replaces the settings "
        "file's account_faults)")  # fmt: skip


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> MockConfig:
    values = read_settings_file(args.config) if args.config else {}
    for name, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
    for field in fields(MockConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    return MockConfig.from_mapping(values)


def run(args: argparse.Namespace) -> int:
    """Serve on uvloop until SIGINT or SIGTERM."""
    try:
        config = config_from_args(args)
        host, port = config.host_port
    except (ValueError, OSError) as exc:
        raise SettingsError(f"mock-x: {exc}") from None
    logs.configure_logging("info", "text")
    secrets = [config.consumer_secret, base64.b64encode(config.hmac_key).decode()]
    for account in config.accounts:
        secrets += [account.token, account.secret]
    logs.register_secret(*secrets)
    if not config.consumer_key or not config.accounts:
        log.warning("no consumer key or no account configured: every X call answers 401")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner, url = await start_mock(config, host, port)
        try:
            log.info("mock X listening on %s", url)
            await stop.wait()
        finally:
            stats = runner.app[STATE].recorder.stats()
            await runner.cleanup()
        log.info("mock X stopped after %s requests", stats["requests_total"])

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except (ValueError, OSError) as exc:
        raise SettingsError(f"mock-x: {exc}") from None
    return 0
