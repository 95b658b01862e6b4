from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from postbackd.logs import RateLimitedLog, configure_logging, log_fields, redact, register_secret
from procs import start_daemon, start_mock

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<rest>.*)$"
)


@pytest.fixture(autouse=True)
def _restore_postbackd_logger() -> Iterator[None]:
    logger = logging.getLogger("postbackd")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    handlers, level, logger.propagate = saved
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)


def configured(fmt: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_format_is_one_readable_line_with_fields() -> None:
    stream = configured("text")
    logging.getLogger("postbackd.daemon").info(
        "sent %d claims",
        3,
        extra=log_fields(account="18ce54d4x5t", status=200, note="two words", ok=True, none=None),
    )
    [line] = lines(stream)
    match = TEXT_LINE.match(line)
    assert match, line
    assert (match["level"], match["logger"]) == ("INFO", "postbackd.daemon")
    assert match["rest"] == (
        'sent 3 claims account=18ce54d4x5t status=200 note="two words" ok=true none=null'
    )


def test_json_format_is_one_object_per_line() -> None:
    stream = configured("json")
    log = logging.getLogger("postbackd.delivery.sender")
    log.warning("X answered %s", 503, extra=log_fields(account="a1", attempt=2, ids=[1, 2]))
    log.info("line\nbreak", extra=log_fields(msg="a field named msg"))
    first, second = (orjson.loads(line) for line in lines(stream))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {
        "level": "WARNING",
        "logger": "postbackd.delivery.sender",
        "msg": "X answered 503",
        "account": "a1",
        "attempt": 2,
        "ids": [1, 2],
    }
    assert second["msg"] == "line\nbreak"
    assert second["field_msg"] == "a field named msg"


def test_json_keeps_the_traceback() -> None:
    stream = configured("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("postbackd.x").exception("request failed")
    [line] = lines(stream)
    record = orjson.loads(line)
    assert record["level"] == "ERROR"
    assert "Traceback" in record["exc"] and "RuntimeError: boom" in record["exc"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_level_filters_lower_records(fmt: str) -> None:
    stream = configured(fmt, level="warning")
    log = logging.getLogger("postbackd.api")
    log.debug("debug message")
    log.info("info message")
    log.warning("warning message")
    log.error("error message")
    output = stream.getvalue()
    assert "debug message" not in output and "info message" not in output
    assert "warning message" in output and "error message" in output


def test_configuring_again_replaces_the_handler_and_does_not_propagate() -> None:
    first = configured("text")
    second = configured("json")
    logging.getLogger("postbackd").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert logging.getLogger("postbackd").propagate is False


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "text", io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml", io.StringIO())


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_registered_secrets_never_reach_the_output(fmt: str) -> None:
    secret = f"tok-{fmt}-Zq9/+x=="  # characters that regex and JSON treat specially
    register_secret(secret)
    stream = configured(fmt)
    log = logging.getLogger("postbackd.x.client")
    log.info("signed with %s", secret)
    log.info(f"header OAuth oauth_token_secret={secret}")
    caller_fields = {"token": secret, "nested": {"list": [secret, 1]}, "obj": ValueError(secret)}
    log.info("fields", extra=log_fields(**caller_fields))
    try:
        raise RuntimeError(f"bad credentials {secret}")
    except RuntimeError:
        log.exception("failed")
    log.info("stack", stack_info=True, extra=log_fields(why=secret))

    output = stream.getvalue()
    assert secret not in output
    assert secret.replace("/", "\\/") not in output
    assert output.count("***") >= 7
    assert caller_fields["token"] == secret  # the caller's dict is left as it was


def test_short_values_are_not_treated_as_secrets() -> None:
    register_secret("")
    register_secret("abc")
    stream = configured("text")
    logging.getLogger("postbackd").info("abc and empty")
    assert "abc and empty" in stream.getvalue()


def test_the_longest_secret_is_replaced_whole() -> None:
    register_secret("inner-secret")
    register_secret("outer-inner-secret-value")
    stream = configured("text")
    logging.getLogger("postbackd").info("outer-inner-secret-value")
    assert stream.getvalue().rstrip().endswith("postbackd: ***")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_reports_suppressed_repeats() -> None:
    stream = configured("text")
    clock = FakeClock()
    repeated = RateLimitedLog(logging.getLogger("postbackd.delivery"), clock=clock)

    repeated.warning("x-5xx", "X answered 503", account="a1")
    for _ in range(41):
        clock.now += 1
        repeated.warning("x-5xx", "X answered 503", account="a1")
    assert len(lines(stream)) == 1
    clock.now += 19  # 60 s after the first line
    repeated.warning("x-5xx", "X answered 503 again", account="a1")
    clock.now += 60
    repeated.warning("x-5xx", "X answered 503 later", account="a1")

    first, second, third = (TEXT_LINE.match(line) for line in lines(stream))
    assert first and second and third
    assert first["level"] == "WARNING"
    assert first["rest"] == "X answered 503 account=a1"
    assert second["rest"] == "X answered 503 again (repeated 41 times in the last 60 s) account=a1"
    assert third["rest"] == "X answered 503 later account=a1"


def test_rate_limited_log_keeps_keys_apart() -> None:
    stream = configured("json")
    clock = FakeClock()
    repeated = RateLimitedLog(logging.getLogger("postbackd.delivery"), interval_s=10, clock=clock)
    for key in ("a", "b", "a", "b", "c"):
        repeated.warning(key, f"failure {key} 100%")
    assert [orjson.loads(line)["msg"] for line in lines(stream)] == [
        "failure a 100%",
        "failure b 100%",
        "failure c 100%",
    ]
    clock.now += 10
    repeated.warning("a", "failure a")
    assert orjson.loads(lines(stream)[-1])["msg"] == "failure a (repeated 1 time in the last 10 s)"


def test_many_secrets_registered_at_once_are_all_redacted() -> None:
    # The simulated X registers every account's token and secret in one call (500
    # accounts in a benchmark): each is kept out of the log.
    tokens = [f"{i}-many-token-{i:06d}" for i in range(500)]
    register_secret(*tokens)
    assert redact(f"a {tokens[0]} b {tokens[499]} c") == "a *** b *** c"


async def test_a_malformed_request_is_answered_400_without_a_traceback(tmp_path: Path) -> None:
    # Found by schemathesis: a NUL byte in a header made aiohttp log a traceback at ERROR,
    # so any client could fill the daemon's log with them.
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url)
    try:
        host, port = daemon.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        assert status_line.split()[1] == b"400", status_line
        async with aiohttp.ClientSession() as s, s.get(f"{daemon.url}/healthz") as r:
            assert r.status == 200
    finally:
        await daemon.stop()
        await mock.stop()
    assert "Traceback" not in daemon.log, daemon.log
