"""A real redis-server (Debian's package `redis-server`, which .ci/run installs) for the
tests: its own temporary directory, a free loopback port, no persistence; killed or stopped
and started again on the same port when a test asks."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import IO

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

START_TIMEOUT_S = 10.0


def redis_binary() -> str:
    """The path of redis-server; in CI a missing one fails the test instead of skipping."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port)

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        async with self.client() as redis:
            while True:
                try:
                    if await redis.ping():
                        return
                except (RedisError, OSError):
                    pass
                if self._process.poll() is not None or asyncio.get_running_loop().time() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{log}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: Redis lost at once, as when its host dies."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(sig)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
