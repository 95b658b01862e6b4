"""Reads that must not wait for the writer nor delay it: the results API, the queue-depth
gauge, device lookups. WAL lets readers work beside the one writer; each reader thread has
its own connection, so a long report never holds up an ingest commit (and sqlite3 releases
the GIL while SQLite works)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")
DEFAULT_THREADS: Final = 2


class Reader:
    def __init__(self, path: Path, threads: int = DEFAULT_THREADS) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="postbackd-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA query_only=1")  # a reader never writes, even by mistake
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on a reader thread with that thread's connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._connection(), *args))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
