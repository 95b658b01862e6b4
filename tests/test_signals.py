"""Signals and logs of an operator's daemon (PRODUCT.md 2, "Shutdown"): SIGHUP does not stop
it but reopens `log_file` (for logrotate); at SIGTERM `/readyz` answers 503 before the
listener closes, so a load balancer stops sending first; `--log-level debug` shows X's
answers, sampled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp

from conftest import API_TOKEN, seed_config
from procs import START_TIMEOUT_S, Api, client, key_env, postbackd, start_daemon, start_mock
from test_delivery import FAST_RETRY, event, ingest, settled

_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


async def serve_logging_to(
    log_file: Path, x_url: str, **settings: object
) -> tuple[asyncio.subprocess.Process, str]:
    """`postbackd serve` with its log in `log_file`; the process and its URL."""
    env = {
        **os.environ,
        **key_env(),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_DATA_DIR": str(log_file.parent / "data"),
        "POSTBACKD_X_API_URL": x_url,
        "POSTBACKD_API_TOKEN": API_TOKEN,
        "POSTBACKD_LOG_FILE": str(log_file),
        **{f"POSTBACKD_{k.upper()}": str(v) for k, v in settings.items()},
    }
    proc = await asyncio.create_subprocess_exec(
        *postbackd("serve"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            text = log_file.read_text() if log_file.exists() else ""
            if found := _URL.search(text.split("ready: listening", 1)[-1] if "ready: listening"
                                    in text else ""):  # fmt: skip
                return proc, found.group(1)
            assert proc.returncode is None, text
            await asyncio.sleep(0.05)


async def test_sighup_reopens_the_log_file_and_sigterm_drains_readiness_first(
    tmp_path: Path,
) -> None:
    mock = await start_mock()
    log_file = tmp_path / "postbackd.log"
    proc, url = await serve_logging_to(log_file, mock.url, shutdown_delay_s=3)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, url)
            app_id = (await seed_config(api))["app"]["id"]
            # logrotate moves the file away, then sends SIGHUP: the daemon stays up and
            # writes to a new file of the same name.
            rotated = tmp_path / "postbackd.log.1"
            log_file.rename(rotated)
            proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(5):
                while not (log_file.exists() and "log file reopened" in log_file.read_text()):
                    await asyncio.sleep(0.05)
            assert proc.returncode is None
            assert "ready: listening" in rotated.read_text()
            await ingest(api, [event(app_id, 1)])
            await settled(api, 1)
            # SIGTERM: readiness goes first, while requests are still served.
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(2):
                while (await api.request("GET", "/readyz", auth=False))[0] != 503:
                    await asyncio.sleep(0.02)
            answer = await ingest(api, [event(app_id, 2)])  # still answered meanwhile
            assert answer["accepted"] == 1
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        text = log_file.read_text()
        assert "/readyz answers 503" in text
        assert text.index("/readyz answers 503") < text.index("no new requests are accepted")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await mock.kill()


async def test_sighup_without_a_log_file_keeps_the_daemon_up(tmp_path: Path) -> None:
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url)
    try:
        daemon.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(5):
            while "SIGHUP" not in daemon.log:
                await asyncio.sleep(0.05)
        async with client(daemon) as api:
            assert (await api.request("GET", "/readyz", auth=False))[0] == 200
        assert daemon.proc.returncode is None
    finally:
        await daemon.kill()
        await mock.kill()


async def test_debug_logs_x_answers_sampled(tmp_path: Path) -> None:
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url, log_level="debug", **FAST_RETRY)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            await ingest(api, [event(app_id, n) for n in range(200)])
            await settled(api, 200)
        answers = [line for line in daemon.log.splitlines() if "X answered 200 in" in line]
        assert 1 <= len(answers) < 200, "one line per kind and second, not one per request"
        assert "X account" in answers[0] and "ms" in answers[0]
    finally:
        await daemon.kill()
        await mock.kill()
