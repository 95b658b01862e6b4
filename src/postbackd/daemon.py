"""The daemon's life: open the store, serve, and shut down in a fixed order.

Shape after hypercorn's `asyncio/run.py`: signal handlers only set an event; `serve()` takes
that event so tests can stop the daemon without signals; shutdown runs in `finally`.

A daemon never hangs silently (PRODUCT.md 2): a start that fails is one clear line and a
non-zero exit; a part that dies or a store beyond recovery ends the process non-zero, so that
its supervisor restarts it; a store that fails for a while is answered (503, `/readyz`) and
recovered from without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import uvloop
from aiohttp import web

from postbackd import __version__, logs
from postbackd.admission import Admission
from postbackd.api.app import make_app, make_metrics_app
from postbackd.api.ingest import IngestRoute
from postbackd.api.results import ResultRoutes
from postbackd.catalog import Catalog
from postbackd.delivery.devices import DeviceNetworks
from postbackd.delivery.engine import Engine
from postbackd.delivery.intake import Intake
from postbackd.errors import PostbackdError, StoreUnavailable
from postbackd.janitor import Janitor
from postbackd.metrics import Metrics
from postbackd.model import XAccount
from postbackd.settings import Settings
from postbackd.settings import render as render_settings
from postbackd.store.base import Store
from postbackd.store.db import prepare_data_dir
from postbackd.store.factory import create_store
from postbackd.token import ensure_api_token
from postbackd.x.client import XClient
from postbackd.x.oauth import OAuth1Signer

if TYPE_CHECKING:
    # redis-py costs a tenth of a second to import: only a daemon that reads a stream pays it.
    from postbackd.stream.source import StreamSource

log = logging.getLogger(__name__)

# The exit status when the daemon stops because it cannot go on (a supervisor restarts it).
EXIT_FATAL: Final = 1
_DEPTH_REFRESH_S: Final = 5.0


class StartupError(PostbackdError):
    """The daemon could not start; the message says why in one line."""


class Daemon:
    """One running postbackd: its store, its configuration, its X client and its server."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        listen_socket: socket.socket | None = None,
    ) -> None:
        """`listen_socket`: a listening socket to serve on instead of binding `listen`
        (the one a `serve --workers` parent shares among its workers)."""
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.ready = False
        self.port: int | None = None
        self.store: Store | None = None
        self._x: XClient | None = None
        self._socket = listen_socket
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._janitor_task: asyncio.Task[None] | None = None
        self._stream: StreamSource | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.catalog: Catalog
        self.engine: Engine | None = None
        # Set when the daemon cannot go on: `serve` stops it and the process exits non-zero.
        self.fatal: asyncio.Future[str] | None = None

    def fail(self, error: BaseException | str) -> None:
        """Ask for a stop with a non-zero exit: something the daemon cannot recover from."""
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(str(error) or type(error).__name__)

    @property
    def is_ready(self) -> bool:
        """Started, not draining, and the store takes writes (PRODUCT.md 2)."""
        return self.ready and (self.store is None or self.store.healthy)

    async def start(self) -> None:
        """Start everything, or fail with a `StartupError` after undoing what had started."""
        self.fatal = asyncio.get_running_loop().create_future()
        try:
            await self._start()
        except BaseException as exc:
            await self._close()
            if isinstance(exc, PostbackdError | OSError):
                raise StartupError(startup_reason(exc, self.settings)) from exc
            raise

    async def _start(self) -> None:
        s = self.settings
        self._started = time.monotonic()
        log.info("postbackd %s starting, data dir %s", __version__, s.data_dir.resolve())
        log.info("settings: %s", render_settings(s))
        prepare_data_dir(s.data_dir)  # the API token file lives there, whatever the store
        errors = self.metrics.store_errors
        self.store = store = create_store(
            s, on_error=lambda kind: errors.labels(kind).inc(), on_fatal=self.fail
        )
        await store.open()
        self.catalog = await Catalog.load(store)
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
            pool_timeout_s=s.x_pool_timeout_s,
        )
        devices = DeviceNetworks(store, int(s.attribution_keep_s * 1000))
        engine = self.engine = Engine(
            s, store, self.catalog, self._x, self.metrics, devices, on_fatal=self.fail
        )
        intake = Intake(store, lambda: self.catalog.index, devices)
        admission = Admission(intake, self.catalog, self.metrics, on_accepted=engine.accepted)
        if (stream := s.event_stream) is not None:
            # Unreachable at start is a configuration to fix (host, port, password): one line
            # and a non-zero exit. Lost later, it is waited for (stream/source.py).
            from postbackd.stream.source import StreamSource

            self._stream = StreamSource(stream, admission, self.metrics)
            await self._stream.connect()
        app = make_app(
            catalog=self.catalog,
            metrics=self.metrics,
            api_token=token,
            authenticate=self.authenticate,
            max_body_bytes=s.max_body_bytes,
            is_ready=lambda: self.is_ready,
            ingest=IngestRoute(
                admission, max_body_bytes=s.max_body_bytes, max_items=s.max_batch_items
            ),
            results=ResultRoutes(store, engine, self.catalog, s.max_body_bytes),
        )  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = s.listen_host_port
        site: web.BaseSite
        if self._socket is not None:
            site = web.SockSite(self._runner, self._socket)
        else:
            site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        # Port 0 asks the OS for a free port; the runner knows which one it got.
        self.port = int(self._runner.addresses[0][1])
        if (metrics_at := s.metrics_host_port) is not None:
            await self._serve_metrics(*metrics_at)
        self._update_account_gauge()
        self.catalog.subscribe(lambda _: self._update_account_gauge())
        await engine.start()
        counts = await engine.refresh_queue_depth()
        self._depth_task = asyncio.create_task(self._refresh_depth(), name="queue-depth")
        janitor = Janitor(
            store, self.metrics,
            event_retention_s=s.event_retention_s, attribution_retention_s=s.attribution_keep_s,
            now_ms=engine.now_ms,
        )  # fmt: skip
        self._janitor_task = asyncio.create_task(janitor.run(), name="janitor")
        self._janitor_task.add_done_callback(self._part_ended)
        if self._stream is not None:
            self._stream_task = asyncio.create_task(self._stream.run(), name="event-stream")
            self._stream_task.add_done_callback(self._part_ended)
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

    async def _serve_metrics(self, host: str, port: int) -> None:
        app = make_metrics_app(self.metrics, lambda: self.is_ready)
        self._metrics_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._metrics_runner.setup()
        await web.TCPSite(self._metrics_runner, host, port, reuse_address=True).start()
        log.info(
            "metrics of this process on http://%s:%d/metrics",
            host,
            self._metrics_runner.addresses[0][1],
        )

    def _part_ended(self, task: asyncio.Task[None]) -> None:
        """A part that runs for the daemon's whole life ended: it cannot go on without it."""
        if not task.cancelled() and self.ready:
            error = task.exception() or RuntimeError(f"{task.get_name()} ended")
            log.critical("%s stopped", task.get_name(), exc_info=error)
            self.fail(error)

    async def _refresh_depth(self) -> None:
        """Queue depth by state and the store's size for the metrics; counts, so kept off
        the hot path."""
        assert self.engine is not None
        assert self.store is not None
        while True:
            # A failing store is counted and logged where it fails; the gauge keeps its value.
            with contextlib.suppress(StoreUnavailable):
                self.metrics.store_bytes.set(await self.store.size_bytes())
            await asyncio.sleep(_DEPTH_REFRESH_S)
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
        assert updated is not None
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
        """`/readyz` answers 503 first; then stop intake, then close what the work used, in
        that order (PRODUCT.md 2, "Shutdown")."""
        self.ready = False
        delay_s = self.settings.shutdown_delay_s
        if delay_s > 0 and self._runner is not None:
            log.info("draining: /readyz answers 503; the listener closes in %.1f s", delay_s)
            await asyncio.sleep(delay_s)
        log.info("draining: no new requests are accepted")
        try:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._stream_task is not None:
                # An entry whose commit is cut short is read again: a duplicate, harmless.
                self._stream_task.cancel()
                await asyncio.gather(self._stream_task, return_exceptions=True)
            for task in (self._depth_task, self._janitor_task):
                if task is not None:
                    task.cancel()
            if self.engine is not None:
                await self.engine.stop(self.settings.shutdown_grace_s)
        finally:
            await self._close()
        done = self.engine.done if self.engine else {}
        log.info(
            "stopped after %.1f s: %s",
            time.monotonic() - self._started,
            ", ".join(f"{n} {state}" for state, n in done.items()) or "nothing sent",
        )

    async def _close(self) -> None:
        """Close what is open, in the reverse order of opening; safe to call twice."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self._x is not None:
            await self._x.close()
            self._x = None
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None


def startup_reason(exc: BaseException, settings: Settings) -> str:
    """One line saying why the daemon could not start, for an operator."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {settings.listen}: the address is in use"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = exc.filename or settings.data_dir
        return f"cannot start: no permission for {where} ({exc.strerror})"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"cannot start: {exc.strerror or exc}{where}"
    return f"cannot start: {exc}"


def _reopen_log() -> None:
    """SIGHUP does not stop the daemon: it reopens `log_file` (after logrotate moved it)."""
    if logs.reopen_log_file():
        log.info("SIGHUP: log file reopened")
    else:
        log.info("SIGHUP: no log_file to reopen (the log goes to stderr); still running")


async def serve(
    settings: Settings,
    shutdown: asyncio.Event,
    *,
    listen_socket: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run until `shutdown` is set (0) or the daemon cannot go on (EXIT_FATAL); `on_ready`
    is called once the daemon has started."""
    daemon = Daemon(settings, listen_socket=listen_socket)
    await daemon.start()
    if on_ready is not None:
        on_ready()
    assert daemon.fatal is not None
    stop: asyncio.Future[object] = asyncio.ensure_future(shutdown.wait())
    fatal: asyncio.Future[object] = daemon.fatal  # type: ignore[assignment]
    try:
        await asyncio.wait([stop, fatal], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        await daemon.stop()
    if daemon.fatal.done():
        log.critical("stopped because the daemon cannot go on: %s", daemon.fatal.result())
        return EXIT_FATAL
    return 0


def run(
    settings: Settings,
    *,
    listen_socket: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run the daemon on uvloop until SIGTERM or SIGINT; the exit status."""

    async def main() -> int:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        loop.add_signal_handler(signal.SIGHUP, _reopen_log)
        return await serve(settings, shutdown, listen_socket=listen_socket, on_ready=on_ready)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
