"""`postbackd` and its commands. Each command's --help says what it does and how.

A command is a name, a help text with an example, a function adding its arguments and a
function running it (`args -> exit status`); `build_parser` registers each with
`_add_command`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import stat
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeVar

import uvloop

from postbackd import __version__, settings
from postbackd.client import (
    DEFAULT_URL,
    TOKEN_ENV,
    BatchReader,
    ClientError,
    DaemonClient,
    IngestTotals,
    resolve_token,
    upload_ndjson,
)
from postbackd.errors import PostbackdError
from postbackd.progress import Progress

if TYPE_CHECKING:
    from postbackd.store.backup import Copy

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")

DESCRIPTION = """\
postbackd sends event claim requests to X for an app's in-app events, through rate-limited,
pooled connections with retries, reads X's answers and decides re-engagement attribution
from the reengagement trackers configured through its admin API."""

_DAEMON_DEFAULTS: Final = settings.Settings()
DATA_DIR_ENV: Final = "POSTBACKD_DATA_DIR"
DATABASE_URL_ENV: Final = "POSTBACKD_DATABASE_URL"
SHOWN_REFUSALS: Final = 20
HELP_WIDTH: Final = 90


def _serve(args: argparse.Namespace) -> int:
    from postbackd import daemon, logs

    conf = settings.Settings.load(flags=vars(args))
    try:
        logs.configure_logging(conf.log_level, conf.log_format, file=conf.log_file)
    except OSError as e:
        raise settings.SettingsError(
            f"log_file: cannot open {conf.log_file}: {e.strerror}"
        ) from None
    secrets = [conf.x_consumer_secret, conf.x_hmac_key, conf.api_token, conf.secret_key]
    if (stream := conf.event_stream) is not None:
        secrets.append(stream.password)
    secrets.append(conf.database.password)
    logs.register_secret(*(s for s in (*secrets, *conf.secret_keys) if s))
    path = settings.config_file(vars(args))
    if path is not None and (warning := settings.exposed_secrets_warning(path)):
        logging.getLogger("postbackd.settings").warning("%s", warning)
    _tune_gc()
    if conf.workers > 1:
        from postbackd import workers

        return workers.supervise(conf)
    return daemon.run(conf)


# Collect the youngest generation after this many new container objects rather than 700.
_GC_YOUNG_THRESHOLD: Final = 20_000


def _tune_gc() -> None:
    """The engine makes and drops dozens of container objects per claim, nearly all freed by
    their reference count, not by the cycle collector. What is loaded by now (modules,
    classes) is frozen out of every scan, and the young generation is scanned 30 times less
    often, so each scan finds mostly what is dead already and the collector's share of the
    daemon's CPU under load becomes small."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


def _mock_x(args: argparse.Namespace) -> int:
    from postbackd.mockx import cli as mock_cli

    return mock_cli.run(args)


def _run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _connect(args: argparse.Namespace) -> DaemonClient:
    """The client of the daemon named by the client flags (PRODUCT.md 3, "Client commands")."""
    return DaemonClient(args.url, resolve_token(args.token, os.environ, _data_dir(args)))


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        file = open(name, "rb")  # noqa: SIM115  (closed below; open errors become usage errors)
    except OSError as e:
        raise ClientError(f"cannot read {name}: {e.strerror}") from None
    with file:
        yield file


def _input_size(source: BinaryIO) -> int | None:
    """The size of a regular file (stdin redirected from one too); None for a pipe."""
    try:
        info = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None


def _ingest(args: argparse.Namespace) -> int:
    client = _connect(args)
    with _open_input(args.file) as source:
        size = _input_size(source)
        reader = BatchReader(source, max_lines=args.batch_size)
        progress = Progress("events")

        def show(totals: IngestTotals) -> None:
            progress.update(
                totals.sent,
                fraction=totals.input_bytes / size if size else None,
                detail=f"{totals.accepted} accepted, {totals.duplicates} duplicates, "
                f"{totals.refused} refused",
            )

        async def upload() -> IngestTotals:
            async with client:
                return await upload_ndjson(
                    client,
                    reader,
                    concurrency=args.concurrency,
                    keep_refusals=SHOWN_REFUSALS,
                    on_batch=show,
                )

        started = time.monotonic()
        try:
            totals = _run(upload())
        finally:
            progress.finish()
        elapsed_s = time.monotonic() - started
    return _report(totals, elapsed_s)


def _report(totals: IngestTotals, elapsed_s: float) -> int:
    """Refused lines on stderr, the summary on stdout; the exit status of `ingest`."""
    for refusal in totals.first_refusals:
        at = f" (field {refusal.field})" if refusal.field else ""
        print(f"line {refusal.line_number}: refused: {refusal.error}{at}", file=sys.stderr)  # noqa: T201
    if (hidden := totals.refused - len(totals.first_refusals)) > 0:
        print(f"... and {hidden} more refused lines", file=sys.stderr)  # noqa: T201
    rate = totals.sent / elapsed_s if elapsed_s > 0 else 0.0
    print(  # noqa: T201
        f"{totals.sent} sent, {totals.accepted} accepted, {totals.duplicates} duplicates, "
        f"{totals.refused} refused in {elapsed_s:.1f} s ({rate:.0f} events/s)"
    )
    return 1 if totals.refused else 0


def _replay(args: argparse.Namespace) -> int:
    client = _connect(args)
    ids: list[int] | None = None if args.all_dead else args.ids

    async def replay() -> int:
        async with client:
            return await client.replay(ids)

    count = _run(replay())
    line = f"{count} dead {'delivery' if count == 1 else 'deliveries'} re-queued"
    if ids is not None and (missed := len(set(ids)) - count) > 0:
        line += f"; {missed} of the given ids are not dead deliveries"
    print(line)  # noqa: T201
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get(DATA_DIR_ENV) or _DAEMON_DEFAULTS.data_dir)


def _embedded_only(environ: Mapping[str, str]) -> None:
    """`backup` copies the embedded store's file: refuse when the daemon's state is in a
    database of its own (PRODUCT.md 5), rather than copy a file that is not it."""
    from postbackd.store.backup import BackupError
    from postbackd.store.url import DatabaseUrl

    try:
        database = DatabaseUrl.parse(environ.get(DATABASE_URL_ENV))
    except ValueError as e:
        raise BackupError(f"{DATABASE_URL_ENV}: {e}") from None
    if database.kind != "sqlite":
        raise BackupError(
            f"backup copies the embedded SQLite store, and {DATABASE_URL_ENV} names a "
            f"PostgreSQL database ({database.shown}): back that up with PostgreSQL's own "
            "tools (pg_dump, or a base backup)"
        )


def _backup(args: argparse.Namespace) -> int:
    from postbackd.store.backup import CopyDamaged, backup_database
    from postbackd.token import token_path

    _embedded_only(os.environ)
    data_dir = _data_dir(args)
    progress = Progress("pages")

    def show(done: int, total: int) -> None:
        progress.update(done, fraction=done / total if total else None)

    try:
        copy = backup_database(data_dir, args.dest, force=args.force, progress=show)
    except CopyDamaged as e:
        print(f"postbackd: {e}; {args.dest} was not written", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        progress.finish()
    for line in _restore_notes(copy, token_path(data_dir)):
        print(line)  # noqa: T201
    return 0


def _restore_notes(copy: Copy, token_file: Path) -> list[str]:
    """What `backup` prints: the copy, then everything else a restore needs."""
    accounts, encrypted = copy.accounts, copy.encrypted_accounts
    lines = [
        f"{copy.dest}: a copy of {copy.source} ({copy.pages} pages, "
        f"{copy.size_bytes / 2**20:.1f} MiB, mode 0600); PRAGMA integrity_check: ok",
        "A restore also needs, kept apart from this copy:",
    ]
    if token_file.exists():
        lines.append(f"  - {token_file}: the API token file (clients and scripts read it)")
    else:
        lines.append("  - the api_token setting (POSTBACKD_API_TOKEN): clients use it")
    lines.append(
        "  - x_consumer_key, x_consumer_secret and x_hmac_key: without them no claim is "
        "signed and no device id hashed as before"
    )
    if encrypted:
        lines.append(
            f"  - secret_key (POSTBACKD_SECRET_KEY): the tokens of {encrypted} of the "
            f"{accounts} X accounts in the copy are encrypted with it; without it the daemon "
            "refuses the copy"
        )
    if accounts - encrypted:
        lines.append(
            f"  - note: the tokens of {accounts - encrypted} X account(s) are in plain text in "
            "this copy (secret_key was not set): keep it as secret as the tokens"
        )
    lines.append(
        "Restore: stop the daemon, put the copy in the data directory as postbackd.sqlite3 "
        "(mode 0600, no -wal or -shm file beside it), start the daemon (docs/operations.md)."
    )
    return lines


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", metavar="DEST", type=Path, help="the file to write the copy to")
    parser.add_argument("--force", action="store_true", help="replace DEST when it exists")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the daemon's data directory (default: ${DATA_DIR_ENV}, else "
        f"{os.path.join('.', _DAEMON_DEFAULTS.data_dir)})",
    )


def _int_from(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < low or (high and int(text) > high):
            rule = f"of at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected an integer {rule}")
        return int(text)

    return parse


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("daemon")
    group.add_argument(
        "--url", default=DEFAULT_URL, help="the daemon's base URL (default: %(default)s)"
    )
    group.add_argument(
        "--token",
        help=f"API token; else ${TOKEN_ENV}, else the token file of --data-dir (prefer the "
        "environment: flags are visible in ps)",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the daemon's data directory, whose api-token file is read when no token is "
        f"given (default: ${DATA_DIR_ENV}, else {os.path.join('.', _DAEMON_DEFAULTS.data_dir)})",
    )


def _ingest_arguments(parser: argparse.ArgumentParser) -> None:
    most = _DAEMON_DEFAULTS.max_batch_items
    parser.add_argument("file", metavar="FILE", help="NDJSON file, or - for standard input")
    parser.add_argument(
        "--batch-size",
        type=_int_from(1, most),
        default=1000,
        metavar="N",
        help=f"events per request, at most the daemon's {most} (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_from(1, 64),
        default=4,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    _client_arguments(parser)


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        dest="ids",
        type=_int_from(1),
        action="append",
        metavar="N",
        help="a dead delivery's id (repeatable)",
    )
    which.add_argument("--all-dead", action="store_true", help="every dead delivery")
    _client_arguments(parser)


def _paragraphs(text: str) -> str:
    return "\n\n".join(textwrap.fill(p, HELP_WIDTH) for p in text.split("\n\n"))


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    example: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Command,
) -> None:
    """One command: `summary` in `postbackd --help`; `description` (paragraphs split by a
    blank line) and `example` (shell lines, kept as written) in its own --help."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=_paragraphs(description),
        epilog="example:\n" + textwrap.indent(example, "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(command=run)


def _demo(args: argparse.Namespace) -> int:
    from postbackd import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    from postbackd import demo
    from postbackd.mockx import cli as mock_cli

    parser = argparse.ArgumentParser(
        prog="postbackd",
        description=DESCRIPTION,
        epilog="Run `postbackd COMMAND --help` for what a command does, with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"postbackd {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_command(
        commands,
        "serve",
        summary="run the daemon (admin API, ingest, delivery to X, metrics)",
        description="Run the postbackd daemon until SIGTERM or SIGINT. Settings come from "
        "flags, then POSTBACKD_* environment variables, then the --config TOML file, then "
        "the defaults shown below.\n\n"
        "--workers N runs N daemons on this host under one supervising process. They share "
        "the listening socket (the kernel gives each new connection to one of them) and "
        "the store, so it needs a PostgreSQL --database-url: on the embedded SQLite store it "
        "is refused (exit 2). A worker that fails to start stops the others and the "
        "supervisor exits with its status (what stopped it would stop a replacement too); a "
        "worker that ends later (killed, out of memory) is logged and replaced at once, its "
        "leased deliveries going out from the others when the leases run out. SIGTERM or "
        "SIGINT: every worker drains as one daemon does, and the supervisor exits when they "
        "have ended, 0 when each ended cleanly. SIGHUP reaches every worker. Log lines of a "
        "worker carry worker=N.\n\n"
        "Metrics: /metrics on the shared port answers from whichever worker took the "
        "connection, with that worker's figures only. Scrape each worker on its own port "
        "instead: with --metrics-listen HOST:PORT worker N serves /metrics, /healthz and "
        "/readyz on PORT+N (one scrape target per worker; Prometheus sums them).",
        example="export POSTBACKD_X_CONSUMER_KEY=... POSTBACKD_X_CONSUMER_SECRET=... "
        "POSTBACKD_X_HMAC_KEY=...\npostbackd serve --listen 127.0.0.1:8080 --data-dir "
        "/var/lib/postbackd\n"
        "POSTBACKD_DATABASE_URL=postgresql://postbackd:...@db:5432/postbackd \\\n"
        "  postbackd serve --workers 4 --listen 0.0.0.0:8080 --metrics-listen 127.0.0.1:9100",
        add_arguments=settings.add_arguments,
        run=_serve,
    )
    _add_command(
        commands,
        "demo",
        summary=demo.SUMMARY,
        description=demo.DESCRIPTION,
        example=demo.EXAMPLE,
        add_arguments=demo.add_arguments,
        run=_demo,
    )
    _add_command(
        commands,
        "mock-x",
        summary="run a simulated X Ads API for tests, benchmarks and demos",
        description="A simulated X Ads API speaking X's conversion wire format: checks OAuth "
        "1.0a signatures, validates parameters, enforces rate limits, injects latency and "
        "faults, and claims conversions from a script or at a seeded random rate. It reads "
        "the consumer key, secret and HMAC key from the daemon's variables, so one "
        "environment drives both; each --account is an X ads account with the OAuth token "
        "and secret to give the daemon's POST /api/v1/x-accounts.\n\n"
        "Control endpoints (no OAuth; keep it on loopback): GET /_mock/stats (counters), GET "
        "/_mock/requests?limit=&offset= (the requests received, oldest first), POST "
        "/_mock/reset (clear the log, counters and rate windows), GET /_mock/config and "
        "PATCH /_mock/config (faults, rate limit, claims; revoke or restore tokens).",
        example="export POSTBACKD_X_CONSUMER_KEY=demo-key POSTBACKD_X_CONSUMER_SECRET=demo-secret "
        "POSTBACKD_X_HMAC_KEY=ZGVtby1obWFjLWtleQ==\n"
        "postbackd mock-x --listen 127.0.0.1:8081 --account "
        "18ce54d4x5t:demo-token:demo-token-secret --claim-rate 0.3 &\n"
        "postbackd serve --x-api-url http://127.0.0.1:8081\n"
        "curl -s http://127.0.0.1:8081/_mock/stats",
        add_arguments=mock_cli.add_arguments,
        run=_mock_x,
    )
    _add_command(
        commands,
        "ingest",
        summary="stream NDJSON events to a daemon, with progress",
        description="Send the NDJSON events of FILE (- for standard input), one Kochava "
        "server-to-server event a line, to the daemon's POST /track/json: in batches, a "
        "few in flight at once, with a progress line on stderr. Blank lines are skipped; "
        "the input is read as it is sent, so its size does not matter. A batch is resent "
        "after a connection error or a 5xx answer.\n\n"
        "A line without an event_id is given one derived from its content alone: the first "
        "32 hex digits of the SHA-256 of the line's JSON object in canonical form (keys "
        "sorted at every level, no blanks, event_id left out). A re-sent event is therefore "
        "a duplicate however it arrives: the same batch again, the whole file again, the "
        "file renamed or moved, or its lines piped through standard input; the daemon "
        "counts those as duplicates and adds nothing. Two identical lines are one event: "
        "give events that may look alike (the same device, event, data and usertime) their "
        "own event_id.\n\n"
        f"Refused lines are listed on stderr by line number (the first {SHOWN_REFUSALS}, "
        "then a count), and a summary line on stdout ends the run: N sent, A accepted, D "
        "duplicates, R refused in T s (X events/s).\n\n"
        "Exit status: 0 when every event was accepted or a duplicate, 1 when some were "
        "refused, 2 on a usage error, an unreachable daemon or a request refused as a "
        "whole (a wrong token, for one).",
        example="postbackd ingest events.ndjson --data-dir /var/lib/postbackd\n"
        "zcat events.ndjson.gz | postbackd ingest - --url http://10.0.0.5:8080",
        add_arguments=_ingest_arguments,
        run=_ingest,
    )
    _add_command(
        commands,
        "replay",
        summary="re-queue dead deliveries",
        description="Re-queue dead deliveries (those that used up their retries or got a "
        "final error from X) so that they go out again with their retries restored. Name "
        "them with --id, or take every dead delivery with --all-dead; GET "
        "/api/v1/deliveries?state=dead lists them. Prints how many were re-queued.",
        example="postbackd replay --all-dead\npostbackd replay --id 17 --id 42 --url "
        "http://10.0.0.5:8080",
        add_arguments=_replay_arguments,
        run=_replay,
    )
    _add_command(
        commands,
        "backup",
        summary="copy the database while the daemon runs, checked, for a restore",
        description="Write an online, consistent copy of the daemon's SQLite database "
        "(DATA_DIR/postbackd.sqlite3) to DEST while the daemon runs: SQLite's backup API "
        "copies one snapshot (every event accepted before the backup started is in it) "
        "without stopping ingest or delivery, and without the daemon's lock: a backup only "
        "reads. The copy is one file, mode 0600, checked with PRAGMA integrity_check before "
        "it takes the name DEST. A progress line shows on stderr; stdout then names what a "
        "restore needs besides the copy (the API token file, the X credentials, and "
        "secret_key when the X account tokens are encrypted). The embedded store only: "
        "with POSTBACKD_DATABASE_URL naming a PostgreSQL database it refuses (use "
        "PostgreSQL's own tools).\n\n"
        "Exit status: 0 when the copy was written and passed the check, 1 when it failed "
        "the check (DEST is not written), 2 on a usage error (no database in --data-dir, "
        "DEST exists without --force, DEST not writable, a PostgreSQL database_url).",
        example="postbackd backup /var/backups/postbackd/postbackd-$(date +%F).sqlite3 "
        "--data-dir /var/lib/postbackd",
        add_arguments=_backup_arguments,
        run=_backup,
    )
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
