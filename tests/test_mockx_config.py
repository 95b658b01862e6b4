"""The simulated X's settings (per-account faults included), command line, latency model,
rate windows and script file."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import signal
import statistics
import sys
from pathlib import Path

import aiohttp
import pytest

from postbackd.cli import main
from postbackd.mockx import cli
from postbackd.mockx.account_faults import AccountFaults
from postbackd.mockx.config import MockAccount, MockConfig
from postbackd.mockx.latency import Latency
from postbackd.mockx.ratelimit import FixedWindowLimiter
from postbackd.mockx.script import hash_device_id, load_script
from procs import OTHER_ACCOUNT, mock_get, start_mock

KEY_B64 = base64.b64encode(bytes(range(32))).decode()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_toml_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "mock.toml"
    path.write_text(
        'consumer_key = "from-file"\nrate_limit = 10\nlatency = "uniform:1:5"\n'
        'claim_rate = 0.25\n[[accounts]]\nid = "a1"\ntoken = "t1"\nsecret = "s1"\nname = "A"\n',
        encoding="utf-8",
    )
    environ = {"POSTBACKD_X_CONSUMER_KEY": "from-env", "POSTBACKD_X_HMAC_KEY": KEY_B64}

    from_env = cli.config_from_args(parse(["--config", str(path)]), environ)
    from_flags = cli.config_from_args(
        parse(["--config", str(path), "--consumer-key", "flag", "--account", "a2:t2:s:2"]),
        environ,
    )

    assert from_env.consumer_key == "from-env"
    assert from_env.hmac_key == bytes(range(32))
    assert from_env.rate_limit == 10 and from_env.claim_rate == 0.25
    assert from_env.latency == Latency("uniform", 1, 5)
    assert from_env.accounts == (MockAccount("a1", "t1", "s1", "A"),)
    assert from_flags.consumer_key == "flag"
    assert from_flags.accounts == (MockAccount("a2", "t2", "s:2"),)
    assert from_flags.rate_window_s == 900.0  # default kept


def test_json_file_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mock.json"
    path.write_text(json.dumps({"apps": ["333903271"], "outage": True}), encoding="utf-8")

    config = MockConfig.from_file(path)

    assert config.apps == ("333903271",) and config.outage is True
    assert config.receipt_log is False  # off unless asked for
    assert config.host_port == ("127.0.0.1", 8081)
    assert config.api_version == "12"
    assert (config.rate_limit, config.rate_window_s) == (60_000, 900.0)


@pytest.mark.parametrize(
    "values",
    [
        {"error_rate": 1.5},
        {"error_rate": 0.6, "reset_rate": 0.6},
        {"rate_limit": 0},
        {"rate_limit": "10"},
        {"hmac_key": "not base64!"},
        {"latency": "gaussian:1:2"},
        {"latency": "uniform:5:1"},
        {"script": "engagements.json"},  # no HMAC key to hash its device ids
        {"accounts": [{"id": "a", "token": "t"}]},
        {"accounts": ["a:t:s1", "b:t:s2"]},  # one token, two secrets
        {"unknown_setting": 1},
        {"receipt_log": "yes"},
    ],
)
def test_bad_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MockConfig.from_mapping(values)


def test_secrets_stay_out_of_reprs() -> None:
    config = MockConfig.from_mapping(
        {"consumer_secret": "cs-123456", "hmac_key": KEY_B64, "accounts": ["a:tok-9876:sec-5432"]}
    )

    assert "cs-123456" not in repr(config)
    assert "tok-9876" not in repr(config) and "sec-5432" not in repr(config)
    assert repr(bytes(range(32))) not in repr(config)


def test_latency_distributions() -> None:
    rng = random.Random(1)
    fixed = Latency.parse("20")
    uniform = Latency.parse("uniform:10:30")
    lognormal = Latency.parse("lognormal:20:200")

    samples = sorted(lognormal.delay_s(rng) for _ in range(20_000))

    assert fixed.delay_s(rng) == 0.02 and fixed.spec == "fixed:20"
    assert all(0.01 <= uniform.delay_s(rng) <= 0.03 for _ in range(100))
    assert statistics.median(samples) == pytest.approx(0.020, rel=0.1)
    assert samples[int(len(samples) * 0.99)] == pytest.approx(0.200, rel=0.15)
    assert Latency.parse("none").delay_s(rng) == 0.0


def test_fixed_window_limiter() -> None:
    now = [1000.2]
    limiter = FixedWindowLimiter(clock=lambda: now[0])

    first = [limiter.take("t", 2, 10) for _ in range(3)]
    other = limiter.take("u", 2, 10)
    now[0] = 1010.3
    renewed = limiter.take("t", 2, 10)

    assert [s.allowed for s in first] == [True, True, False]
    assert [s.remaining for s in first] == [1, 0, 0]
    assert first[0].reset_epoch_s == 1011  # epoch seconds, rounded up
    assert other.allowed and other.remaining == 1
    assert renewed.allowed and renewed.remaining == 1 and renewed.reset_epoch_s == 1021
    assert limiter.peek("t", 2, 10).remaining == 1  # peeking spends nothing


def test_fixed_windows_follow_each_other_without_drift() -> None:
    now = [1000.2]
    limiter = FixedWindowLimiter(clock=lambda: now[0])
    assert limiter.take("t", 1, 10).reset_epoch_s == 1011

    # A client that waits for the reported reset finds the next window open since 1010.2,
    # with its whole budget, and is told that window's end: windows do not drift.
    now[0] = 1011.05
    second = [limiter.take("t", 1, 10) for _ in range(2)]
    now[0] = 1045.0  # idle for windows: the request counts in the window it falls in
    later = limiter.take("t", 1, 10)

    assert [(s.allowed, s.reset_epoch_s) for s in second] == [(True, 1021), (False, 1021)]
    assert later.allowed and later.reset_epoch_s == 1051


def test_device_hash_follows_the_reference() -> None:
    key = bytes(range(32))
    # base64(HMAC-SHA256(key, upper-cased IDFA)), computed once outside postbackd.
    expected = "3nPoKlOUQH4bl1ROzTKDQLnVxq2lxRsxY4klvDv2KnY="

    assert hash_device_id(key, "6d92078a-8246-4ba4-ae5b-76104861e7dc", "IOS") == expected
    assert hash_device_id(key, "6D92078A-8246-4BA4-AE5B-76104861E7DC", "IOS") == expected
    assert hash_device_id(key, "ABC", "ANDROID") == hash_device_id(key, "abc", "ANDROID")


def test_script_file_errors_name_the_entry(tmp_path: Path) -> None:
    good = {"device_id": "x", "node": "twitter", "engagement_type": "CLICK",
            "engagement_time": "2026-11-20T08:15:00Z"}  # fmt: skip
    path = tmp_path / "engagements.json"
    path.write_text(json.dumps([good, good | {"node": "x"}]), encoding="utf-8")

    with pytest.raises(ValueError, match=r"engagement 1: node must be one of tpn, twitter"):
        load_script(path, b"k")


async def test_command_serves_until_sigterm() -> None:
    env = os.environ | {
        "POSTBACKD_X_CONSUMER_KEY": "ck",
        "POSTBACKD_X_CONSUMER_SECRET": "cs-secret",
        "POSTBACKD_X_HMAC_KEY": KEY_B64,
    }
    command = [sys.executable, "-m", "postbackd", "mock-x", "--listen", "127.0.0.1:0"]
    process = await asyncio.create_subprocess_exec(
        *command, "--account", "a1:tok-1234:sec-1234", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    match = re.search(r"mock X listening on (http://127\.0\.0\.1:\d+)", line)
    assert match, line
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{match.group(1)}/_mock/config") as response,
    ):
        assert (await response.json())["accounts"] == [{"id": "a1", "name": "", "revoked": False}]

    process.send_signal(signal.SIGTERM)
    rest = (await asyncio.wait_for(process.stderr.read(), 20)).decode()
    assert await process.wait() == 0
    assert "sec-1234" not in line + rest and "cs-secret" not in line + rest


TWO_ACCOUNTS = ["acct-a:tok-a:sec-a", "acct-b:tok-b:sec-b"]


def test_account_faults_from_flags_with_latency_colons() -> None:
    argv = [
        *("--account", TWO_ACCOUNTS[0], "--account", TWO_ACCOUNTS[1]),
        *("--account-faults", "acct-b:latency=fixed:40000,rate_limit=1,rate_window_s=120"),
        *("--account-faults", "acct-a: latency = uniform:1:5 , error_rate=0.25"),
    ]

    config = cli.config_from_args(parse(argv), {})

    assert config.account_faults == {
        "acct-b": AccountFaults(latency=Latency("fixed", 40_000), rate_limit=1, rate_window_s=120),
        "acct-a": AccountFaults(latency=Latency("uniform", 1, 5), error_rate=0.25),
    }
    assert config.latency == Latency() and config.rate_limit == 60_000  # globals untouched


def test_account_faults_from_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "mock.toml"
    toml.write_text(
        f"accounts = {json.dumps(TWO_ACCOUNTS)}\nerror_rate = 0.1\n"
        '[account_faults.acct-b]\nlatency = "lognormal:20:200"\nreset_rate = 0.5\n'
        "rate_limit = 3\n",
        encoding="utf-8",
    )
    as_json = tmp_path / "mock.json"
    as_json.write_text(
        json.dumps({"accounts": TWO_ACCOUNTS, "account_faults": {"acct-a": {"timeout_rate": 1}}}),
        encoding="utf-8",
    )

    from_toml = MockConfig.from_file(toml)
    from_json = MockConfig.from_file(as_json)
    flag_over_file = cli.config_from_args(
        parse(["--config", str(toml), "--account-faults", "acct-a:rate_window_s=5"]), {}
    )

    assert from_toml.account_faults == {
        "acct-b": AccountFaults(latency=Latency("lognormal", 20, 200), reset_rate=0.5, rate_limit=3)
    }
    assert from_json.account_faults == {"acct-a": AccountFaults(timeout_rate=1.0)}
    # Like --account, the flags replace the file's setting as a whole.
    assert flag_over_file.account_faults == {"acct-a": AccountFaults(rate_window_s=5.0)}


@pytest.mark.parametrize(
    ("faults", "named"),
    [
        (["acct-b:error_rate=1.5"], ("acct-b", "error_rate", "between 0 and 1")),
        (["acct-b:timeout_rate=-0.1"], ("acct-b", "timeout_rate")),
        (["acct-b:rate_limit=0"], ("acct-b", "rate_limit", ">= 1")),
        (["acct-b:rate_limit=2.5"], ("acct-b", "rate_limit", "integer")),
        (["acct-b:rate_window_s=0"], ("acct-b", "rate_window_s", "> 0")),
        (["acct-b:latency=uniform:5:1"], ("acct-b", "latency")),
        (["acct-b:latncy=fixed:5"], ("acct-b", "latncy", "unknown key")),
        (["acct-c:rate_limit=1"], ("acct-c", "no such account")),
        (["acct-b:rate_limit"], ("acct-b", "rate_limit", "key=value")),
        (["acct-b:rate_limit=1,rate_limit=2"], ("acct-b", "rate_limit", "twice")),
        (["acct-b:rate_limit=1", "acct-b:error_rate=0.1"], ("acct-b", "twice")),
        (["rate_limit=1"], ("rate_limit=1", "ID:key=value")),
        # After fallback: the global error_rate (0.5) and the account's reset_rate.
        (["acct-b:reset_rate=0.6"], ("acct-b", "reset_rate", "must not exceed 1")),
        ({"acct-b": {"rate_limit": "1"}}, ("acct-b", "rate_limit", "integer")),
        ({"acct-b": {"error_rate": True}}, ("acct-b", "error_rate", "number")),
        ({"acct-b": "rate_limit=1"}, ("acct-b", "table")),
    ],
)
def test_bad_account_faults_name_the_account_and_the_key(
    faults: object, named: tuple[str, ...]
) -> None:
    values = {"accounts": TWO_ACCOUNTS, "error_rate": 0.5, "account_faults": faults}

    with pytest.raises(ValueError) as refused:
        MockConfig.from_mapping(values)

    assert all(word in str(refused.value) for word in named), str(refused.value)


def test_help_example_of_account_faults_works(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mock-x", "--help"])
    out = capsys.readouterr().out
    example = re.search(r"postbackd mock-x (--account [^\n]*\\\n[^\n]*)", out)
    assert example, out

    argv = example.group(1).replace("\\\n", " ").split()
    config = cli.config_from_args(parse(argv), {})

    assert config.account_faults == {
        "acct-b": AccountFaults(latency=Latency("fixed", 40_000), rate_limit=1, rate_window_s=120)
    }


async def test_command_takes_account_faults_and_shows_them() -> None:
    slow = f"{OTHER_ACCOUNT[0]}:latency=fixed:40000,rate_limit=1,rate_window_s=120"
    mock = await start_mock("--account-faults", slow)
    try:
        config = await mock_get(mock, "/_mock/config")
        stats = await mock_get(mock, "/_mock/stats")
    finally:
        assert await mock.stop() == 0

    assert config["account_faults"] == {
        OTHER_ACCOUNT[0]: {"latency": "fixed:40000", "rate_limit": 1, "rate_window_s": 120.0}
    }
    assert stats["by_account"] == {}
