"""Configuration changes and cancels of other daemons (PRODUCT.md 5): a LISTEN connection of
its own on `postbackd_config`, whose notices (sent at commit by `config.apply`) carry the new
version and the daemon that made it, and on `postbackd_cancel` (sent by `deliveries.cancel`
after its commit). A daemon ignores its own.

A notice sent while this daemon was not listening (its connection lost, the server
restarted) is never delivered: after every (re)connect, and every few seconds anyway, the
stored version is compared with the latest this daemon has seen, and a difference is
reported as a change; and after every (re)connect, cancels are reported as if noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import asyncpg

from postbackd.logs import RateLimitedLog
from postbackd.store.url import DatabaseUrl

from .config import CHANNEL
from .connect import APPLICATION_NAME, CONNECT_TIMEOUT_S
from .deliveries import CANCEL_CHANNEL

log = logging.getLogger(__name__)

# How often the version is checked even without a notice, and a lost connection retried.
CHECK_S: Final = 5.0
RETRY_S: Final = 1.0


class ConfigWatch:
    def __init__(self, database: DatabaseUrl, owner: str) -> None:
        self._database = database
        self._owner = owner
        self._version = 0
        self._listener: Callable[[int], None] | None = None
        self._cancels: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(log)

    def seen(self, version: int) -> None:
        """This daemon holds the configuration at `version` (loaded or written by it)."""
        self._version = max(self._version, version)

    def start(self, listener: Callable[[int], None]) -> None:
        self._listener = listener
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="config-watch")

    def on_cancels(self, listener: Callable[[], None]) -> None:
        """Call `listener()` when another daemon cancelled deliveries (from the start of
        the watch, `start`)."""
        self._cancels = listener

    def _changed(self, version: int) -> None:
        if version > self._version and self._listener is not None:
            self._version = version
            self._listener(version)

    def _notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        version, _, origin = str(payload).partition(" ")
        if origin != self._owner and version.isdigit():
            self._changed(int(version))

    def _cancel_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if str(payload) != self._owner and self._cancels is not None:
            self._cancels()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._warn.warning("listen", f"configuration notices not received: {exc}")
            await asyncio.sleep(RETRY_S)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._database.url,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": f"{APPLICATION_NAME} config-watch"},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._notice)
            await conn.add_listener(CANCEL_CHANNEL, self._cancel_notice)
            if self._cancels is not None:
                self._cancels()  # any missed while not listening
            while not lost.is_set():
                # Listening first, then the check: a change committed in between is seen
                # by one or the other.
                self._changed(int(await conn.fetchval("SELECT version FROM config_version")))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=CHECK_S)
        finally:
            conn.terminate()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
