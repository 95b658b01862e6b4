"""Store failures (PRODUCT.md 2): a full disk, or a store that cannot be written at all, is
answered and recovered from, never a silent hang. Ingest answers 503 `store_unavailable`
within seconds and accepts nothing it could not commit, `/readyz` answers 503 while writes
fail, the failure is logged and counted, and once the store writes again the daemon carries
on by itself: every event answered 202 is delivered, X's answers that could not be recorded
meanwhile are recorded then, without sending anything twice.

The data dir is a small tmpfs of its own (mounting one needs root, as in CI)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import Api, seed_config
from procs import Proc, client, conversions, start_daemon, start_mock, wait_for
from test_delivery import FAST_RETRY, event, settled

# Each ingest call must be answered within this, whatever the store does.
ANSWER_TIMEOUT_S = 10.0
PADDING = "x" * 2_000  # makes the WAL grow fast, so that the disk fills quickly


def _mount(target: Path, size: str) -> None:
    target.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"a small tmpfs for the data dir needs root (mount failed: {exc})")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    _mount(mount, "24m")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * (1 << 12), b"\0"):
            try:
                while os.write(fd, chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


async def fill_until_refused(small_fs: Path, api: Api, app_id: str) -> Path:
    """Fill the small disk, then ingest until the store refuses a commit (the WAL must grow
    on a full disk); the file filling it, to unlink for space again."""
    filler = fill(small_fs)
    padded = {"event_name": "purchase", "event_data": {"note": PADDING}}
    for n in range(0, 20_000, 100):
        batch = [event(app_id, m, data=padded) for m in range(n, n + 100)]
        status, _ = await api.request("POST", "/track/json", json=batch)
        if status == 503:
            return filler
    raise AssertionError("the store never refused a commit on a full disk")


class Stack:
    def __init__(self, mock: Proc, daemon: Proc, api: Api, app_id: str) -> None:
        self.mock, self.daemon, self.api, self.app_id = mock, daemon, api, app_id
        self.sent = 0

    def batch(self, size: int = 100) -> list[dict[str, Any]]:
        start, self.sent = self.sent, self.sent + size
        return [event(self.app_id, n, data={"event_name": "purchase",
                                            "event_data": {"note": PADDING}})
                for n in range(start, start + size)]  # fmt: skip

    async def ingest(self, events: list[dict[str, Any]]) -> tuple[int, Any]:
        """One ingest call: it must be answered, whatever the store does."""
        timeout = aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S)
        return await self.api.request("POST", "/track/json", json=events, timeout=timeout)

    async def ready(self) -> int:
        status, _ = await self.api.request("GET", "/readyz", auth=False)
        return status


@pytest.fixture
async def stack(small_fs: Path) -> AsyncIterator[Stack]:
    mock = await start_mock("--latency", "fixed:100")
    daemon = None
    try:
        daemon = await start_daemon(small_fs / "data", mock.url, **FAST_RETRY)
        async with client(daemon) as api:
            yield Stack(mock, daemon, api, (await seed_config(api))["app"]["id"])
    finally:
        if daemon is not None:
            await daemon.kill()
        await mock.kill()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))  # fmt: skip


async def test_a_full_disk_is_answered_and_recovered_without_a_restart(
    stack: Stack, small_fs: Path
) -> None:
    accepted: set[str] = set()
    refused: list[list[dict[str, Any]]] = []

    async def send(events: list[dict[str, Any]]) -> int:
        status, body = await stack.ingest(events)
        if status == 202:
            accepted.update(e["event_id"] for e in events)
        else:
            assert status == 503, body
            assert body["error"]["code"] == "store_unavailable", body
            refused.append(events)
        return status

    assert await send(stack.batch()) == 202
    filler = fill(small_fs)
    # Ingest goes on: sooner or later the WAL must grow, and commits fail.
    for _ in range(200):
        if await send(stack.batch()) == 503:
            break
    assert refused, "the store never refused a commit on a full disk"
    assert await stack.ready() == 503
    async with aiohttp.ClientSession() as s, s.get(stack.daemon.url + "/metrics") as r:
        assert metric(await r.text(), 'postbackd_store_errors_total{kind="disk_full"}') >= 1
    # Every call is answered (within the client's timeout), none hangs, all say why.
    for _ in range(5):
        assert await send(stack.batch(10)) == 503
    # Nothing of a refused call was committed.
    for events in refused[:3]:
        status, _ = await stack.api.request("GET", f"/api/v1/events/{events[0]['event_id']}")
        assert status == 404

    filler.unlink()  # the operator frees space: the daemon carries on by itself

    async def recovered() -> bool:
        return await send(stack.batch(10)) == 202

    await wait_for(recovered, timeout_s=20, every_s=0.2)
    assert await stack.ready() == 200
    # What was refused can be sent again, and is accepted now.
    for events in refused:
        assert await send(events) == 202
    await settled(stack.api, len(accepted))
    received = [r["params"]["hashed_device_id"] for r in await conversions(stack.mock)]
    assert len(received) == len(set(received)) == len(accepted), "sent twice, or lost"
    log = stack.daemon.log
    assert "disk is full" in log and "the store writes again" in log
    failures = [line for line in log.splitlines() if "store_unavailable until" in line]
    assert 1 <= len(failures) <= 3, "logged once per interval, not once per request"
