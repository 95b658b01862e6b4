"""The `postbackd` command line: its help, `serve` as an operator runs it (the real console
script in a subprocess), the client commands' token lookup and the progress line."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from conftest import API_TOKEN, CONSUMER_KEY, CONSUMER_SECRET, HMAC_KEY
from postbackd.cli import main
from postbackd.client import ClientError, resolve_token
from postbackd.progress import Progress

POSTBACKD = str(Path(sys.executable).with_name("postbackd"))
COMMANDS = ("serve", "demo", "mock-x", "ingest", "replay", "backup")
READY = re.compile(rb"ready: listening on http://127\.0\.0\.1:(\d+)")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without POSTBACKD_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACKD_")}
    return env | extra


def key_env() -> dict[str, str]:
    return clean_env(
        POSTBACKD_X_CONSUMER_KEY=CONSUMER_KEY,
        POSTBACKD_X_CONSUMER_SECRET=CONSUMER_SECRET,
        POSTBACKD_X_HMAC_KEY=base64.b64encode(HMAC_KEY).decode(),
        POSTBACKD_API_TOKEN=API_TOKEN,
    )


async def run(*args: str, env: dict[str, str], timeout_s: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        POSTBACKD, *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_help_lists_every_command() -> None:
    code, out, _ = await run("--help", env=clean_env())
    assert code == 0
    listed = re.findall(r"^    (\S+)\s", out, re.MULTILINE)
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: postbackd {command}")
    example = out.split("\nexample:\n", 1)[1]
    assert f"  postbackd {command}" in example


async def test_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        POSTBACKD, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--x-api-url", "http://127.0.0.1:9", env=key_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log = b""
    try:
        async with asyncio.timeout(30):
            while not (ready := READY.search(log)):
                line = await proc.stderr.readline()
                assert line, f"serve ended before it was ready:\n{log.decode()}"
                log += line
        url = f"http://127.0.0.1:{int(ready.group(1))}"
        async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            log += await proc.stderr.read()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.decode()
    assert code == 0, text
    assert re.search(r"stopped after [\d.]+ s", text), text
    assert API_TOKEN not in text
    assert CONSUMER_SECRET not in text


async def test_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = key_env() | {"POSTBACKD_RATE_LIMIT_REQUESTS": "abc"}
    code, _, err = await run("serve", "--data-dir", str(tmp_path), env=env)
    assert code == 2
    assert "POSTBACKD_RATE_LIMIT_REQUESTS" in err
    assert "expected an integer" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay"], "one of the arguments --id --all-dead is required"),
        (["replay", "--id", "1", "--all-dead"], "not allowed with argument"),
        (["replay", "--id", "zero"], "expected an integer of at least 1"),
        (["ingest", "-", "--batch-size", "10001"], "expected an integer from 1 to 10000"),
        (["ingest", "-", "--concurrency", "0"], "expected an integer from 1 to 64"),
        (["ingest"], "the following arguments are required: FILE"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_client_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.ndjson"
    assert main(["ingest", str(missing), "--token", "t"]) == 2
    assert f"postbackd: error: cannot read {missing}: No such file" in capsys.readouterr().err
    assert main(["replay", "--all-dead", "--token", "t", "--url", "localhost:8080"]) == 2
    assert "--url must be an http or https URL" in capsys.readouterr().err


def test_token_comes_from_flag_then_environment_then_token_file(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text("from-file\n")
    env = {"POSTBACKD_API_TOKEN": "from-env"}
    assert resolve_token("from-flag", env, tmp_path) == "from-flag"
    assert resolve_token(None, env, tmp_path) == "from-env"
    assert resolve_token(None, {"POSTBACKD_API_TOKEN": ""}, tmp_path) == "from-file"
    with pytest.raises(ClientError, match="no API token: give --token") as missing:
        resolve_token(None, {}, tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "api-token") in str(missing.value)


def test_missing_token_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POSTBACKD_API_TOKEN", raising=False)
    monkeypatch.delenv("POSTBACKD_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "--all-dead"]) == 2
    err = capsys.readouterr().err
    assert "no API token" in err
    assert "postbackd-data/api-token" in err


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_into_a_pipe_writes_a_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("events", stream=out, clock=clock, line_every_s=5.0)
    clock.now_s += 1
    progress.update(1000, fraction=0.25)
    assert out.getvalue() == ""
    clock.now_s += 4
    progress.update(5000, fraction=0.5, detail="4990 accepted")
    clock.now_s += 2
    progress.update(7000, fraction=0.75)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines == ["[############............]  50%  5000 events  1000/s  0:05  4990 accepted"]


def test_progress_on_a_terminal_redraws_in_place() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress("events", stream=out, clock=clock)
    for done in (100, 200, 300):
        clock.now_s += 1
        progress.update(done)
    clock.now_s += 0.01
    progress.update(301)  # within the redraw interval: drawn only by finish
    progress.finish()
    text = out.getvalue()
    assert "\n" not in text[:-1]
    assert text.endswith("\x1b[K\n")
    frames = [frame.removesuffix("\x1b[K") for frame in text.rstrip("\n").split("\r")[1:]]
    assert frames[0] == "100 events  100/s  0:01"
    assert frames[-1] == "301 events  100/s  0:03"
    assert len(frames) == 4


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def test_the_mock_x_example_works_as_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["mock-x", "--help"])
    lines = [line.strip() for line in capsys.readouterr().out.split("\nexample:\n")[1].splitlines()]
    exports, mock_line, serve_line, curl_line = lines
    if port_taken(8080) or port_taken(8081):
        pytest.skip("the example's ports 8080 and 8081 are in use on this machine")
    words = shlex.split(exports)
    assert words[0] == "export"
    env = clean_env(**dict(word.split("=", 1) for word in words[1:]))
    assert mock_line.endswith(" &")
    procs = []
    try:
        for line, ready in ((mock_line[:-2], b"mock X listening"), (serve_line, b"ready: ")):
            argv = shlex.split(line)
            assert argv[0] == "postbackd"
            proc = await asyncio.create_subprocess_exec(
                POSTBACKD, *argv[1:], cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stderr is not None
            async with asyncio.timeout(30):
                while ready not in (out := await proc.stderr.readline()):
                    assert out, f"{line} ended before it was ready"
        if shutil.which("curl"):
            done = await asyncio.create_subprocess_exec(
                *shlex.split(curl_line), stdout=asyncio.subprocess.PIPE
            )
            stats, _ = await done.communicate()
            assert b'"requests_total"' in stats
        # The account of the example authenticates against the simulated X.
        account_id, token, secret = mock_line.split("--account ")[1].split()[0].split(":")
        api_token = (tmp_path / "postbackd-data" / "api-token").read_text().strip()
        body = {"id": account_id, "name": "Main", "access_token": token,
                "access_token_secret": secret}  # fmt: skip
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_token}"}) as s,
            s.post("http://127.0.0.1:8080/api/v1/x-accounts", json=body) as r,
        ):
            assert r.status == 201
            assert (await r.json())["authenticated"] is True
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
