"""The daemon and the simulated X as separate processes on loopback ports, as an operator
runs them: `postbackd serve` and `postbackd mock-x`, each found by its "listening" line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from conftest import (
    ACCOUNT_ID,
    ACCOUNT_SECRET,
    ACCOUNT_TOKEN,
    API_TOKEN,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    HMAC_KEY,
    Api,
)

_URL = re.compile(rb"(http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 30.0
OTHER_ACCOUNT = ("acct2nd0002", "2222-second-token", "second-token-secret")


def postbackd(*args: str) -> list[str]:
    return [sys.executable, "-m", "postbackd", *args]


class Proc:
    """A child process whose stderr is drained into `lines` (so it can never block)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._drain = asyncio.create_task(self._read())
        self.url = ""

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line)

    @classmethod
    async def spawn(cls, argv: list[str], env: dict[str, str]) -> Proc:
        """Started, not waited for."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        return cls(proc)

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str], ready: bytes) -> Proc:
        self = await cls.spawn(argv, env)
        proc = self.proc
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            for line in self.lines:
                if ready in line and (found := _URL.search(line)):
                    self.url = found.group(1).decode()
                    return self
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        await self.kill()
        raise RuntimeError(f"{argv[3]} did not start:\n{self.log}")

    @property
    def log(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    async def said(self, words: str, times: int = 1) -> bool:
        """Whether the process has logged `words` (at least `times` times) yet: a predicate
        for `wait_for`."""
        return self.log.count(words) >= times

    async def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        finally:
            await self.kill()
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


async def start_mock(*extra: str) -> Proc:
    accounts = [f"{ACCOUNT_ID}:{ACCOUNT_TOKEN}:{ACCOUNT_SECRET}", ":".join(OTHER_ACCOUNT)]
    argv = postbackd("mock-x", "--listen", "127.0.0.1:0",
                     *(a for acct in accounts for a in ("--account", acct)), *extra)  # fmt: skip
    return await Proc.start(argv, key_env(), b"mock X listening")


def key_env() -> dict[str, str]:
    return {
        "POSTBACKD_X_CONSUMER_KEY": CONSUMER_KEY,
        "POSTBACKD_X_CONSUMER_SECRET": CONSUMER_SECRET,
        "POSTBACKD_X_HMAC_KEY": base64.b64encode(HMAC_KEY).decode(),
    }


def daemon_env(data_dir: Path, x_url: str, **settings: Any) -> dict[str, str]:
    return {
        **key_env(),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_DATA_DIR": str(data_dir),
        "POSTBACKD_X_API_URL": x_url,
        "POSTBACKD_API_TOKEN": API_TOKEN,
        **{f"POSTBACKD_{k.upper()}": str(v) for k, v in settings.items()},
    }


async def start_daemon(data_dir: Path, x_url: str, **settings: Any) -> Proc:
    env = daemon_env(data_dir, x_url, **settings)
    return await Proc.start(postbackd("serve"), env, b"ready: listening")


@contextlib.asynccontextmanager
async def client(proc: Proc) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, proc.url)


async def mock_get(mock: Proc, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(mock.url + path) as r:
        return await r.json()


async def mock_patch(mock: Proc, changes: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s, s.patch(mock.url + "/_mock/config", json=changes) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def conversions(mock: Proc) -> list[dict[str, Any]]:
    """Every conversion_event request the simulated X received, oldest first."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await mock_get(mock, f"/_mock/requests?limit=5000&offset={offset}")
        items = page["requests"]
        out += [r for r in items if r["path"].endswith("/conversion_event")]
        if len(items) < 5000:
            return out
        offset += len(items)


async def wait_for(predicate: Any, timeout_s: float = 20.0, every_s: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(every_s)
