from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from postbackd.errors import PostbackdError
from postbackd.settings import (
    Settings,
    SettingsError,
    add_arguments,
    describe,
    exposed_secrets_warning,
    redacted,
    render,
)

SECRET = "s3cr3t-Value-that-must-not-leak"
HMAC_KEY = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw=="


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_product_contract() -> None:
    s = Settings.load(environ={})
    assert s == Settings()
    assert s.listen == "127.0.0.1:8080"
    assert s.listen_host_port == ("127.0.0.1", 8080)
    assert s.data_dir == Path("./postbackd-data")
    assert s.x_api_url == "https://ads-api.x.com"
    assert s.x_api_version == "12"
    assert s.api_token is None
    assert s.max_body_bytes == 10 * 1024 * 1024
    assert (s.rate_limit_requests, s.rate_limit_window_s) == (60_000, 900)
    assert s.circuit_min_requests == 20


@pytest.mark.parametrize(
    ("name", "file_value", "env_value", "flag_value", "expected"),
    [
        ("listen", '"10.0.0.1:1"', "10.0.0.2:2", "10.0.0.3:3", "10.0.0.3:3"),
        ("data_dir", '"/from/file"', "/from/env", "/from/flag", Path("/from/flag")),
        ("max_body_bytes", "100", "200", "300", 300),
        ("retry_cap_s", "1.5", "2.5", "3.5", 3.5),
        ("api_token", '"file-token"', "env-token", "flag-token", "flag-token"),
    ],
)
def test_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path, name: str, file_value: str, env_value: str, flag_value: str, expected: object
) -> None:
    config = write_toml(tmp_path, f"{name} = {file_value}\n")
    env_name = "POSTBACKD_" + name.upper()
    default = getattr(Settings(), name)

    assert getattr(Settings.load(environ={}), name) == default
    from_file = getattr(Settings.load(environ={}, config_path=config), name)
    assert from_file not in (default, expected)
    from_env = getattr(Settings.load(environ={env_name: env_value}, config_path=config), name)
    assert from_env not in (default, expected, from_file)
    from_flag = Settings.load(
        flags={name: flag_value}, environ={env_name: env_value}, config_path=config
    )
    assert getattr(from_flag, name) == expected


def test_values_convert_to_the_field_types(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path, 'x_timeout_s = 3\nmax_batch_items = 7\nlog_level = "debug"\ndata_dir = "d"\n'
    )
    s = Settings.load(
        environ={"POSTBACKD_RATE_LIMIT_WINDOW_S": "60", "POSTBACKD_X_MAX_CONNECTIONS": " 8 "},
        config_path=config,
    )
    assert s.x_timeout_s == 3.0 and isinstance(s.x_timeout_s, float)
    assert s.max_batch_items == 7
    assert s.rate_limit_window_s == 60.0 and isinstance(s.rate_limit_window_s, float)
    assert s.x_max_connections == 8
    assert s.log_level == "debug"
    assert s.data_dir == Path("d")


def test_config_path_comes_from_flag_or_environment(tmp_path: Path) -> None:
    by_env = write_toml(tmp_path, 'listen = "127.0.0.1:1"\n')
    by_flag = tmp_path / "other.toml"
    by_flag.write_text('listen = "127.0.0.1:2"\n')
    env = {"POSTBACKD_CONFIG": str(by_env)}
    assert Settings.load(environ=env).listen == "127.0.0.1:1"
    assert Settings.load(flags={"config": str(by_flag)}, environ=env).listen == "127.0.0.1:2"


def test_argparse_flags_feed_load_and_unknown_keys_are_ignored() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--listen", "[::1]:9000", "--x-api-version", "13"])
    assert args.max_body_bytes is None  # "not given" stays visible
    flags = vars(args) | {"command": "serve"}
    s = Settings.load(flags=flags, environ={"POSTBACKD_LISTEN": "127.0.0.1:1"})
    assert s.listen_host_port == ("::1", 9000)
    assert s.x_api_version == "13"
    assert s.max_body_bytes == Settings().max_body_bytes


def test_help_names_every_flag_environment_variable_and_default() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=1000)
    )
    add_arguments(parser)
    text = parser.format_help()
    assert "--config PATH" in text
    for name, env, default in describe():
        assert f"--{name.replace('_', '-')} " in text
        assert f"(env {env}; default: {default})" in text
    assert "POSTBACKD_X_HMAC_KEY; default: unset); prefer the environment" in text


def test_describe_lists_every_setting() -> None:
    rows = describe()
    assert [row[0] for row in rows] == [f.name for f in fields(Settings)]
    assert ("listen", "POSTBACKD_LISTEN", "127.0.0.1:8080") in rows
    assert ("data_dir", "POSTBACKD_DATA_DIR", "./postbackd-data") in rows
    assert ("x_api_version", "POSTBACKD_X_API_VERSION", "12") in rows
    assert ("rate_limit_window_s", "POSTBACKD_RATE_LIMIT_WINDOW_S", "900") in rows
    assert all(f.metadata["help"] for f in fields(Settings))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"POSTBACKD_RATE_LIMIT_REQUESTS": "abc"},
            "POSTBACKD_RATE_LIMIT_REQUESTS: expected an integer, got 'abc'",
        ),
        ({"POSTBACKD_MAX_BODY_BYTES": "1.5"}, "POSTBACKD_MAX_BODY_BYTES: expected an integer"),
        ({"POSTBACKD_MAX_BATCH_ITEMS": "0"}, "POSTBACKD_MAX_BATCH_ITEMS: must be greater than 0"),
        ({"POSTBACKD_X_TIMEOUT_S": "-1"}, "POSTBACKD_X_TIMEOUT_S: must be greater than 0"),
        ({"POSTBACKD_X_TIMEOUT_S": "inf"}, "POSTBACKD_X_TIMEOUT_S: expected a number"),
        ({"POSTBACKD_RETRY_FACTOR": "0.9"}, "POSTBACKD_RETRY_FACTOR: must be at least 1"),
        ({"POSTBACKD_CIRCUIT_FAILURE_RATIO": "0"}, "POSTBACKD_CIRCUIT_FAILURE_RATIO: must be"),
        ({"POSTBACKD_CIRCUIT_FAILURE_RATIO": "1.01"}, "POSTBACKD_CIRCUIT_FAILURE_RATIO: must be"),
        ({"POSTBACKD_SHUTDOWN_GRACE_S": "-0.1"}, "POSTBACKD_SHUTDOWN_GRACE_S: must be at least 0"),
        ({"POSTBACKD_LOG_LEVEL": "verbose"}, "POSTBACKD_LOG_LEVEL: expected one of debug, info"),
        ({"POSTBACKD_LOG_FORMAT": "xml"}, "POSTBACKD_LOG_FORMAT: expected one of text, json"),
        ({"POSTBACKD_X_API_URL": "ads-api.x.com"}, "POSTBACKD_X_API_URL: expected an http"),
        ({"POSTBACKD_X_API_URL": "ftp://ads-api.x.com"}, "POSTBACKD_X_API_URL: expected an http"),
        ({"POSTBACKD_X_API_URL": "https://x.com:70000"}, "POSTBACKD_X_API_URL: expected an http"),
        ({"POSTBACKD_X_API_VERSION": "12/../13"}, "POSTBACKD_X_API_VERSION: expected a version"),
        ({"POSTBACKD_DATA_DIR": ""}, "POSTBACKD_DATA_DIR: expected a path"),
    ],
)
def test_environment_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.load(environ=env)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    "listen",
    [
        "localhost",
        "127.0.0.1:",
        ":8080",
        "127.0.0.1:http",
        "127.0.0.1:65536",
        "::1:80",
        "[::1",
        "[not-v6]:80",
        "127.0.0.1:-1",
        "bad host:80",
    ],
)
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(SettingsError, match=r"^--listen: expected (HOST:PORT|a port)"):
        Settings.load(flags={"listen": listen}, environ={})


@pytest.mark.parametrize(
    ("listen", "host_port"),
    [
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::]:65535", ("::", 65535)),
        ("example.org:80", ("example.org", 80)),
    ],
)
def test_good_listen_addresses_split(listen: str, host_port: tuple[str, int]) -> None:
    assert Settings.load(flags={"listen": listen}, environ={}).listen_host_port == host_port


def test_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'listen = "127.0.0.1:1"\nlissten = "127.0.0.1:2"\n')
    with pytest.raises(
        SettingsError, match=r"config\.toml: unknown setting 'lissten' \(did you mean 'listen'\?\)"
    ):
        Settings.load(environ={}, config_path=config)

    config.write_text("max_batch_items = true\n")
    with pytest.raises(
        SettingsError, match=r"config\.toml: max_batch_items: expected an integer, got True"
    ):
        Settings.load(environ={}, config_path=config)

    config.write_text("x_api_url = 5\n")
    with pytest.raises(SettingsError, match=r"config\.toml: x_api_url: expected a string"):
        Settings.load(environ={}, config_path=config)

    config.write_text("POSTBACKD_LISTEN = '127.0.0.1:1'\n")
    with pytest.raises(SettingsError, match=r"config\.toml: unknown setting 'POSTBACKD_LISTEN'"):
        Settings.load(environ={}, config_path=config)


def test_unreadable_or_invalid_toml_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError, match=r"missing\.toml: cannot read"):
        Settings.load(environ={}, config_path=missing)
    with pytest.raises(SettingsError, match=r"missing\.toml: cannot read"):
        Settings.load(environ={"POSTBACKD_CONFIG": str(missing)})

    broken = write_toml(tmp_path, f'x_consumer_secret = "{SECRET}\n')
    with pytest.raises(SettingsError, match=r"config\.toml: invalid TOML") as raised:
        Settings.load(environ={}, config_path=broken)
    assert SECRET not in str(raised.value)


def test_an_overridden_bad_value_is_still_refused(tmp_path: Path) -> None:
    # A broken file is a mistake even when the environment happens to cover it today.
    config = write_toml(tmp_path, "x_max_connections = 0\n")
    with pytest.raises(SettingsError, match="x_max_connections"):
        Settings.load(environ={"POSTBACKD_X_MAX_CONNECTIONS": "4"}, config_path=config)


def test_settings_error_is_a_value_error_the_cli_reports() -> None:
    assert issubclass(SettingsError, ValueError)
    assert issubclass(SettingsError, PostbackdError)


def test_hmac_key_must_be_base64_and_empty_is_allowed() -> None:
    assert Settings.load(environ={"POSTBACKD_X_HMAC_KEY": HMAC_KEY}).x_hmac_key == HMAC_KEY
    assert Settings.load(environ={"POSTBACKD_X_HMAC_KEY": ""}).x_hmac_key == ""
    with pytest.raises(SettingsError, match=r"^POSTBACKD_X_HMAC_KEY: expected base64$"):
        Settings.load(environ={"POSTBACKD_X_HMAC_KEY": SECRET})


def test_empty_api_token_means_unset() -> None:
    assert Settings.load(environ={"POSTBACKD_API_TOKEN": ""}).api_token is None


def test_normalisations() -> None:
    s = Settings.load(
        environ={"POSTBACKD_X_API_URL": "http://127.0.0.1:9000/", "POSTBACKD_LOG_LEVEL": "WARNING"}
    )
    assert s.x_api_url == "http://127.0.0.1:9000"
    assert s.log_level == "warning"


def test_secrets_are_absent_from_repr() -> None:
    s = Settings.load(
        environ={
            "POSTBACKD_X_CONSUMER_SECRET": SECRET,
            "POSTBACKD_X_HMAC_KEY": HMAC_KEY,
            "POSTBACKD_API_TOKEN": SECRET + "-token",
            "POSTBACKD_X_CONSUMER_KEY": "public-key",
        }
    )
    assert (s.x_consumer_secret, s.x_hmac_key) == (SECRET, HMAC_KEY)
    assert "public-key" in repr(s)
    for value in (SECRET, HMAC_KEY, "x_consumer_secret", "x_hmac_key", "api_token"):
        assert value not in repr(s)
        assert value not in str(s)


@pytest.mark.parametrize("name", ["x_consumer_secret", "x_hmac_key", "api_token", "secret_key"])
def test_secrets_are_absent_from_error_messages(tmp_path: Path, name: str) -> None:
    config = write_toml(tmp_path, f"{name} = 12345678\n")
    with pytest.raises(SettingsError) as raised:
        Settings.load(environ={}, config_path=config)
    assert str(raised.value).endswith(f"config.toml: {name}: expected a string")
    assert "12345678" not in str(raised.value)

    with pytest.raises(SettingsError) as raised:
        Settings.load(flags={name: 12345678}, environ={})
    assert "12345678" not in str(raised.value)


def test_secret_key_takes_comma_separated_fernet_keys_and_never_echoes_one() -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    s = Settings.load(environ={"POSTBACKD_SECRET_KEY": f"{new}, {old}"})
    assert s.secret_keys == (new, old)
    assert Settings.load(environ={"POSTBACKD_SECRET_KEY": ""}).secret_keys == ()
    assert new not in repr(s)
    for bad in (f"{new},{new[:-2]}", f"{new},", "not-a-key"):
        with pytest.raises(SettingsError) as raised:
            Settings.load(environ={"POSTBACKD_SECRET_KEY": bad})
        message = str(raised.value)
        assert message.startswith("POSTBACKD_SECRET_KEY: key "), message
        assert "is not a Fernet key" in message
        assert new[:20] not in message and "not-a-key" not in message


def test_effective_settings_render_on_one_line_with_secrets_redacted() -> None:
    key = Fernet.generate_key().decode()
    s = Settings.load(
        environ={
            "POSTBACKD_X_CONSUMER_SECRET": SECRET,
            "POSTBACKD_X_CONSUMER_KEY": "public-key",
            "POSTBACKD_SECRET_KEY": key,
            "POSTBACKD_RETRY_BASE_S": "0.5",
        }
    )
    shown = redacted(s)
    assert list(shown) == [f.name for f in fields(Settings)]
    assert shown["x_consumer_secret"] == shown["secret_key"] == "***"
    assert shown["api_token"] == shown["x_hmac_key"] == "unset"
    assert shown["x_consumer_key"] == "public-key"
    assert (shown["retry_base_s"], shown["max_body_bytes"]) == ("0.5", "10485760")
    line = render(s)
    assert "\n" not in line
    assert line.startswith("listen=127.0.0.1:8080 data_dir=postbackd-data ")
    assert "x_consumer_secret=*** " in line and "api_token=unset " in line
    assert SECRET not in line and key not in line


def test_a_settings_file_with_secrets_readable_by_others_is_named(tmp_path: Path) -> None:
    config = write_toml(tmp_path, f'listen = "127.0.0.1:1"\napi_token = "{SECRET}"\n')
    os.chmod(config, 0o644)
    warning = exposed_secrets_warning(config)
    assert warning is not None
    assert warning.startswith(f"{config} holds secrets (api_token) and is readable by users ")
    assert "(mode 0644)" in warning and f"chmod 600 {config}" in warning
    assert SECRET not in warning
    os.chmod(config, 0o600)
    assert exposed_secrets_warning(config) is None
    # Readable by others but holding no secret: nothing to say.
    plain = write_toml(tmp_path, 'listen = "127.0.0.1:1"\n')
    os.chmod(plain, 0o644)
    assert exposed_secrets_warning(plain) is None


def test_database_url_chooses_the_store() -> None:
    assert Settings.load(environ={}).database.kind == "sqlite"
    for given in ("", "sqlite:"):
        assert Settings.load(environ={"POSTBACKD_DATABASE_URL": given}).database.kind == "sqlite"
    for scheme in ("postgresql", "postgres"):
        url = f"{scheme}://postbackd:{SECRET}@db.internal:5432/postbackd"
        database = Settings.load(environ={"POSTBACKD_DATABASE_URL": url}).database
        assert (database.kind, database.url, database.password) == ("postgresql", url, SECRET)
        assert database.shown == f"{scheme}://postbackd:***@db.internal:5432/postbackd"
        assert SECRET not in repr(database)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://root:{SECRET}@db/postbackd", "unknown scheme 'mysql'"),
        ("sqlite:///var/lib/postbackd.db", "give sqlite: alone"),
        (f"postgresql://u:{SECRET}@db:port/postbackd", "the host or port cannot be read"),
        (f"postgresql:u:{SECRET}@db/postbackd", "expected postgresql://user:password@host"),
        (f"postgresql://u:{SECRET}@db/postbackd/extra", "the path is the database name"),
        ("db.internal:5432", "unknown scheme"),
        ("postbackd", "expected sqlite: or postgresql://"),
    ],
)
def test_a_bad_database_url_is_refused_naming_the_setting(url: str, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.load(environ={"POSTBACKD_DATABASE_URL": url})
    message = str(raised.value)
    assert message.startswith("POSTBACKD_DATABASE_URL: "), message
    assert reason in message
    assert SECRET not in message


def test_the_settings_log_shows_the_database_url_without_its_password() -> None:
    for url, shown in (
        (f"postgresql://app:{SECRET}@db:5432/pb", "postgresql://app:***@db:5432/pb"),
        (f"postgresql://app@db/pb?password={SECRET}&sslmode=require",
         "postgresql://app@db/pb?password=***&sslmode=require"),
        ("postgresql://db/pb", "postgresql://db/pb"),
    ):  # fmt: skip
        s = Settings.load(environ={"POSTBACKD_DATABASE_URL": url})
        assert redacted(s)["database_url"] == shown
        assert SECRET not in render(s)
    assert redacted(Settings.load(environ={}))["database_url"] == "unset"
