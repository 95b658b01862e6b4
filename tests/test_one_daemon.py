"""One daemon per data dir, and start-up failures as one clear line (PRODUCT.md 2).

A second `postbackd serve` on the data dir of a running one (a supervisor restarting while
the old process drains does exactly this) would send every claim again; it refuses to start,
naming the holder's pid. Port in use, a data dir that cannot be made: one line, exit != 0,
never a traceback nor a misleading "draining ... stopped"."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

from conftest import seed_config
from procs import START_TIMEOUT_S, client, key_env, postbackd, start_daemon, start_mock
from test_delivery import deliveries, event, ingest, settled


async def run_serve(env: dict[str, str]) -> tuple[int, str]:
    """`postbackd serve` that is expected to fail: its exit code and its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *postbackd("serve"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **key_env(), "POSTBACKD_API_TOKEN": "t" * 32, **env},
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def assert_one_clear_line(stderr: str, *expected: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "draining" not in stderr and "stopped after" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, stderr
    for text in expected:
        assert text in errors[0], stderr


async def test_a_second_daemon_on_the_same_data_dir_refuses(tmp_path: Path) -> None:
    mock = await start_mock()
    first = await start_daemon(tmp_path / "data", mock.url)
    try:
        async with client(first) as api:
            app_id = (await seed_config(api))["app"]["id"]
            code, stderr = await run_serve({
                "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
                "POSTBACKD_LISTEN": "127.0.0.1:0",
                "POSTBACKD_X_API_URL": mock.url,
            })  # fmt: skip
            assert code != 0
            assert_one_clear_line(stderr, "in use", f"pid {first.proc.pid}")
            # The first daemon is untouched and still the only one sending.
            await ingest(api, [event(app_id, n) for n in range(5)])
            await settled(api, 5)
        # Once it is gone (even by kill -9), the data dir is free again.
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        second = await start_daemon(tmp_path / "data", mock.url)
        try:
            async with client(second) as api:
                assert len(await deliveries(api, "delivered")) == 5
        finally:
            await second.kill()
    finally:
        await first.kill()
        await mock.kill()


async def test_a_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = await run_serve({
            "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
            "POSTBACKD_LISTEN": f"127.0.0.1:{port}",
        })  # fmt: skip
    assert code != 0
    assert_one_clear_line(stderr, f"127.0.0.1:{port}", "in use")


async def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, stderr = await run_serve({
        "POSTBACKD_DATA_DIR": str(blocker / "data"),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
    })  # fmt: skip
    assert code != 0
    assert_one_clear_line(stderr, str(blocker / "data"))


async def test_a_log_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    log_file = tmp_path / "missing" / "postbackd.log"
    code, stderr = await run_serve({
        "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_LOG_FILE": str(log_file),
    })  # fmt: skip
    assert code == 2
    assert_one_clear_line(stderr, "log_file", str(log_file), "No such file or directory")


async def test_a_malformed_database_url_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    code, stderr = await run_serve({
        "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_DATABASE_URL": "mysql://root:pw-Secret-42@db/pb",
    })  # fmt: skip
    assert code != 0
    assert_one_clear_line(stderr, "POSTBACKD_DATABASE_URL", "unknown scheme 'mysql'")
    assert "pw-Secret-42" not in stderr
