"""The daemon's life: open the store, serve, and shut down in a fixed order.

Shape after hypercorn's `asyncio/run.py`: signal handlers only set an event; `serve()` takes
that event so tests can stop the daemon without signals; shutdown runs in `finally`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import aiosqlite
import uvloop
from aiohttp import web

from postbackd import __version__
from postbackd.api.app import make_app
from postbackd.api.ingest import IngestRoute
from postbackd.api.results import ResultRoutes
from postbackd.catalog import Catalog
from postbackd.delivery.devices import DeviceNetworks
from postbackd.delivery.engine import Engine
from postbackd.delivery.intake import Intake
from postbackd.metrics import Metrics
from postbackd.model import XAccount
from postbackd.settings import Settings
from postbackd.settings import render as render_settings
from postbackd.store import deliveries as sql
from postbackd.store.db import DB_NAME, open_database
from postbackd.store.journal import Journal
from postbackd.token import ensure_api_token
from postbackd.x.client import XClient
from postbackd.x.oauth import OAuth1Signer

log = logging.getLogger(__name__)


class Daemon:
    """One running postbackd: its store, its configuration, its X client and its server."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.ready = False
        self.port: int | None = None
        self._conn: aiosqlite.Connection | None = None
        self._x: XClient | None = None
        self._runner: web.AppRunner | None = None
        self._journal: Journal | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.catalog: Catalog
        self.engine: Engine | None = None

    async def start(self) -> None:
        s = self.settings
        self._started = time.monotonic()
        log.info("postbackd %s starting, data dir %s", __version__, s.data_dir.resolve())
        log.info("settings: %s", render_settings(s))
        self._conn = await open_database(s.data_dir)
        self.catalog = await Catalog.load(self._conn, s.secret_keys)
        token = ensure_api_token(s.api_token, s.data_dir)
        if not (s.x_consumer_key and s.x_consumer_secret):
            log.warning(
                "POSTBACKD_X_CONSUMER_KEY / POSTBACKD_X_CONSUMER_SECRET are not set: "
                "X accounts cannot authenticate and no claim can be signed"
            )
        self._x = XClient.create(
            base_url=s.x_api_url,
            api_version=s.x_api_version,
            signer=OAuth1Signer(s.x_consumer_key, s.x_consumer_secret),
            max_connections=s.x_max_connections,
            timeout_s=s.x_timeout_s,
        )
        self._journal = journal = Journal(s.data_dir / DB_NAME)
        await journal.open()
        devices = DeviceNetworks(journal)
        engine = self.engine = Engine(s, journal, self.catalog, self._x, self.metrics, devices)
        first_id = await journal.call(sql.max_delivery_id) + 1
        intake = Intake(journal, lambda: self.catalog.index, devices, first_id)
        app = make_app(
            catalog=self.catalog,
            metrics=self.metrics,
            api_token=token,
            authenticate=self.authenticate,
            max_body_bytes=s.max_body_bytes,
            is_ready=lambda: self.ready,
            ingest=IngestRoute(
                intake, self.catalog, self.metrics, max_body_bytes=s.max_body_bytes,
                max_items=s.max_batch_items, on_accepted=engine.rewind,
            ),
            results=ResultRoutes(journal, self.catalog, engine.rewind, s.max_body_bytes),
        )  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = s.listen_host_port
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        # Port 0 asks the OS for a free port; the runner knows which one it got.
        self.port = int(self._runner.addresses[0][1])
        self._update_account_gauge()
        self.catalog.subscribe(lambda _: self._update_account_gauge())
        await engine.start()
        counts = await engine.refresh_queue_depth()
        self._depth_task = asyncio.create_task(self._refresh_depth(), name="queue-depth")
        self.ready = True
        log.info(
            "ready: listening on http://%s:%d (%d apps, %d trackers, %d postbacks; "
            "%d deliveries pending, %d held, %d dead)",
            host,
            self.port,
            len(self.catalog.index.apps),
            len(self.catalog.index.trackers),
            len(self.catalog.index.postbacks),
            counts["ready"] + counts["scheduled"],
            counts.get("held", 0),
            counts.get("dead", 0),
        )

    async def _refresh_depth(self) -> None:
        """Queue depth by state for the metrics; a count, so kept off the hot path."""
        assert self.engine is not None
        while True:
            await asyncio.sleep(5.0)
            try:
                await self.engine.refresh_queue_depth()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not count deliveries by state")

    async def authenticate(self, account_id: str) -> XAccount:
        """A signed GET /{version}/accounts/{id}; `authenticated` follows its result."""
        account = self.catalog.index.accounts[account_id]
        error: str | None
        if not (self.settings.x_consumer_key and self.settings.x_consumer_secret):
            ok, error = False, "the daemon has no X consumer key and secret configured"
        else:
            assert self._x is not None
            check = await self._x.check_account(
                account.id, account.access_token, account.access_token_secret
            )
            ok, error = check.ok, check.error
        updated = await self.catalog.record_authentication(account_id, ok, error)
        if ok:
            log.info("X account %s authenticated", account_id)
        else:
            log.warning("X account %s failed to authenticate: %s", account_id, error)
        return updated

    def _update_account_gauge(self) -> None:
        unauthenticated = sum(
            1 for a in self.catalog.index.accounts.values() if not a.authenticated
        )
        self.metrics.accounts_unauthenticated.set(unauthenticated)

    async def stop(self) -> None:
        """Stop intake first, then close what the work used, in that order."""
        self.ready = False
        log.info("draining: no new requests are accepted")
        try:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._depth_task is not None:
                self._depth_task.cancel()
            if self.engine is not None:
                await self.engine.stop(self.settings.shutdown_grace_s)
        finally:
            if self._journal is not None:
                await self._journal.close()
            if self._x is not None:
                await self._x.close()
            if self._conn is not None:
                await self._conn.close()
        done = self.engine.done if self.engine else {}
        log.info(
            "stopped after %.1f s: %s",
            time.monotonic() - self._started,
            ", ".join(f"{n} {state}" for state, n in done.items()) or "nothing sent",
        )


async def serve(settings: Settings, shutdown: asyncio.Event) -> None:
    daemon = Daemon(settings)
    try:
        await daemon.start()
        await shutdown.wait()
    finally:
        await daemon.stop()


def run(settings: Settings) -> int:
    """Run the daemon on uvloop until SIGTERM or SIGINT."""

    async def main() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(settings, shutdown)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0
