"""`postbackd` and its commands. Each command's --help says what it does and how."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from postbackd import __version__, settings
from postbackd.errors import PostbackdError

Command = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
postbackd sends event claim requests to X for an app's in-app events, through rate-limited,
pooled connections with retries, reads X's answers and decides re-engagement attribution
from the reengagement trackers configured through its admin API."""


def _serve(args: argparse.Namespace) -> int:
    from postbackd import daemon, logs

    conf = settings.Settings.load(flags=vars(args))
    logs.configure_logging(conf.log_level, conf.log_format)
    for secret in (conf.x_consumer_secret, conf.x_hmac_key, conf.api_token):
        if secret:
            logs.register_secret(secret)
    return daemon.run(conf)


def _mock_x(args: argparse.Namespace) -> int:
    from postbackd.mockx import cli as mock_cli

    return mock_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postbackd",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"postbackd {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the daemon (admin API, ingest, delivery to X, metrics)",
        description="Run the postbackd daemon until SIGTERM or SIGINT. Settings come from "
        "flags, then POSTBACKD_* environment variables, then the --config TOML file, then "
        "the defaults shown below.",
    )
    settings.add_arguments(serve)
    serve.set_defaults(command=_serve)

    from postbackd.mockx import cli as mock_cli

    mock = commands.add_parser(
        "mock-x",
        help="run a simulated X Ads API for tests, benchmarks and demos",
        description="A simulated X Ads API speaking X's conversion wire format: checks OAuth "
        "1.0a signatures, validates parameters, enforces rate limits, injects latency and "
        "faults, and claims conversions from a script or at a seeded random rate.",
    )
    mock_cli.add_arguments(mock)
    mock.set_defaults(command=_mock_x)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except PostbackdError as e:
        print(f"postbackd: error: {e}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
