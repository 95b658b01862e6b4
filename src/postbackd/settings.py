"""The daemon's settings: flag > environment > TOML file > default (PRODUCT.md section 3).

Every setting is one field of `Settings`. Its environment variable is `POSTBACKD_` plus the
upper-cased name, its TOML key is the name itself, and its flag is the name with dashes. Each
value given is converted and checked where it comes from, so an error names that source
(`--listen`, `POSTBACKD_LISTEN`, `config.toml: listen`) and never echoes a secret.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from postbackd.errors import PostbackdError
from postbackd.store.url import DatabaseUrl, redact_url
from postbackd.stream.config import StreamConfig

ENV_PREFIX = "POSTBACKD_"
CONFIG_ENV = "POSTBACKD_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class SettingsError(PostbackdError, ValueError):
    """A setting that cannot be used; the message names its source and key."""


class _Invalid(Exception):
    """A complaint about one value, before the source is known."""


Parse = Callable[[Any], Any]


def _meta(
    help: str,
    parse: Parse | None = None,
    *,
    metavar: str | None = None,
    secret: bool = False,
    shown: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """`shown`: how a secret setting's value appears in the start-up log (its parts that
    are no secret); without it, a secret that is set shows as ***."""
    return {"help": help, "parse": parse, "metavar": metavar, "secret": secret, "shown": shown}


def _split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid("expected HOST:PORT with an IPv6 address in brackets") from None
    elif ":" in host:
        raise _Invalid("expected HOST:PORT (an IPv6 address goes in brackets: [::1]:8080)")
    if not sep or not host or not port.isdigit() or any(c.isspace() for c in host):
        raise _Invalid("expected HOST:PORT")
    if int(port) > 65535:
        raise _Invalid("expected a port from 0 to 65535")
    return host, int(port)


def _listen(value: str) -> str:
    _split_host_port(value)
    return value


def _url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (reading it is what checks the port)
    except ValueError:
        raise _Invalid("expected an http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("expected an http or https URL")
    # Paths are appended to it (`/12/conversion_event`), so a trailing slash would double.
    return value.rstrip("/")


def _api_version(value: str) -> str:
    # It becomes a path segment of every request to X (reference: "/12/...").
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise _Invalid("expected a version such as 12")
    return value


def _base64(value: str) -> str:
    # The partner HMAC key is configured base64-encoded (reference: `hashed_device_id`).
    if value:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _Invalid("expected base64") from None
    return value


def _fernet_keys(value: str) -> str:
    # Several keys for rotation: the first encrypts, every one decrypts (docs/operations.md).
    keys = [k.strip() for k in value.split(",")]
    for n, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            # Never the key itself: the message names its position only.
            raise _Invalid(
                f"key {n} of {len(keys)} is not a Fernet key (32 bytes in URL-safe base64, "
                "44 characters; docs/operations.md shows how to make one)"
            ) from None
    return ",".join(keys)


def _event_stream_url(value: str) -> str:
    try:
        StreamConfig.from_url(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value


def _database_url(value: str) -> str:
    try:
        DatabaseUrl.parse(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value


def _choice(*choices: str) -> Parse:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}")
        return value.lower()

    return parse


def _at_least(minimum: float, *, inclusive: bool = True) -> Parse:
    def parse(value: float) -> float:
        if value < minimum or (value == minimum and not inclusive):
            raise _Invalid(f"must be {'at least' if inclusive else 'greater than'} {minimum:g}")
        return value

    return parse


_positive = _at_least(0, inclusive=False)


def _ratio(value: float) -> float:
    if not 0 < value <= 1:
        raise _Invalid("must be greater than 0 and at most 1")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the daemon; build it with `Settings.load`, which checks the values."""

    listen: str = field(
        default="127.0.0.1:8080",
        metadata=_meta("address the HTTP server listens on", _listen, metavar="HOST:PORT"),
    )
    data_dir: Path = field(
        default=Path("./postbackd-data"),
        metadata=_meta(
            "directory of the SQLite database and the generated API token", metavar="DIR"
        ),
    )
    database_url: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "where the state is kept: unset or sqlite: for the embedded store in data_dir; "
            "postgresql://USER:PASSWORD@HOST:5432/DB for a database many daemons share",
            _database_url,
            metavar="URL",
            # It may hold the database's password: the log shows the URL without it.
            secret=True,
            shown=redact_url,
        ),
    )
    x_api_url: str = field(
        default="https://ads-api.x.com",
        metadata=_meta("base URL of the X Ads API", _url, metavar="URL"),
    )
    x_api_version: str = field(
        default="12",
        metadata=_meta("X Ads API version in request paths", _api_version, metavar="VERSION"),
    )
    x_consumer_key: str = field(default="", metadata=_meta("OAuth 1.0a consumer key of the app"))
    x_consumer_secret: str = field(
        default="",
        repr=False,
        metadata=_meta("OAuth 1.0a consumer secret of the app", secret=True),
    )
    x_hmac_key: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "partner HMAC key for hashed device ids, base64",
            _base64,
            metavar="BASE64",
            secret=True,
        ),
    )
    api_token: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "bearer token of the HTTP API; when unset, one is generated once into the data dir",
            secret=True,
        ),
    )
    secret_key: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "key(s) encrypting X account tokens in the database: comma-separated Fernet "
            "keys, the first encrypts, all decrypt; when unset, tokens are stored in plain text",
            _fernet_keys,
            metavar="KEYS",
            secret=True,
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_meta("debug, info, warning or error", _choice(*LOG_LEVELS), metavar="LEVEL"),
    )
    log_file: Path | None = field(
        default=None,
        metadata=_meta(
            "file the log goes to instead of stderr; reopened on SIGHUP, for logrotate",
            metavar="PATH",
        ),
    )
    log_format: str = field(
        default="text",
        metadata=_meta(
            "text, or json for one object per line", _choice(*LOG_FORMATS), metavar="FORMAT"
        ),
    )
    max_body_bytes: int = field(
        default=10 * 1024 * 1024, metadata=_meta("largest accepted request body", _positive)
    )
    max_batch_items: int = field(
        default=10_000, metadata=_meta("most events in one ingest request", _positive)
    )
    rate_limit_requests: int = field(
        default=60_000, metadata=_meta("requests per X account per window", _positive)
    )
    rate_limit_window_s: float = field(
        default=900.0, metadata=_meta("length of the per-account rate limit window", _positive)
    )
    retry_base_s: float = field(default=1.0, metadata=_meta("first retry delay", _positive))
    retry_factor: float = field(
        default=2.0, metadata=_meta("growth of the retry delay per attempt", _at_least(1))
    )
    retry_cap_s: float = field(default=300.0, metadata=_meta("longest retry delay", _positive))
    x_timeout_s: float = field(default=10.0, metadata=_meta("timeout of one X request", _positive))
    x_max_connections: int = field(
        default=64, metadata=_meta("most open connections to X", _positive)
    )
    x_account_max_in_flight: int = field(
        default=0,
        metadata=_meta(
            "most requests of one X account in flight, below x_max_connections so that a "
            "slow account cannot take every connection; 0: a quarter of x_max_connections",
            _at_least(0),
        ),
    )
    x_pool_timeout_s: float = field(
        default=5.0,
        metadata=_meta(
            "longest wait for a free connection to X; the request then waits in its queue "
            "(X saw nothing: no retry is used)",
            _positive,
        ),
    )
    circuit_min_requests: int = field(
        default=20, metadata=_meta("requests in the window before the circuit may open", _positive)
    )
    circuit_window_s: float = field(
        default=30.0, metadata=_meta("window over which X failures are counted", _positive)
    )
    circuit_failure_ratio: float = field(
        default=0.5,
        metadata=_meta(
            "share of an account's failed deliveries that opens its circuit, and share of "
            "failing accounts that opens the broad one",
            _ratio,
        ),
    )
    circuit_probe_interval_s: float = field(
        # One request a second costs X nothing during an outage and ends it within a second.
        default=1.0,
        metadata=_meta("time between probes while the circuit is open", _positive),
    )
    retention_days: int = field(
        default=30,
        metadata=_meta(
            "days events are kept once every delivery of theirs is final (delivered, "
            "skipped, dead, cancelled); deleted with their deliveries and claims",
            _at_least(1),
        ),
    )
    attribution_retention_days: int = field(
        default=400,
        metadata=_meta("days attributions and device state are kept", _at_least(1)),
    )
    retention_s: float | None = field(
        default=None,
        metadata=_meta(
            "retention_days in seconds, overriding it (for tests and benchmarks)", _positive
        ),
    )
    attribution_retention_s: float | None = field(
        default=None,
        metadata=_meta(
            "attribution_retention_days in seconds, overriding it (for tests and benchmarks)",
            _positive,
        ),
    )
    shutdown_delay_s: float = field(
        default=0.0,
        metadata=_meta(
            "time /readyz answers 503 before the listener closes at shutdown, so that a load "
            "balancer stops sending first (set it to the balancer's check interval)",
            _at_least(0),
        ),
    )
    shutdown_grace_s: float = field(
        default=10.0, metadata=_meta("time in-flight requests get to finish", _at_least(0))
    )
    event_stream_url: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "Redis Stream to read events from as a member of a consumer group: "
            "redis://[:PASSWORD@]HOST:PORT/DB?stream=NAME, optionally &group= (default "
            "postbackd), &consumer= (default HOST-PID), &dead_letter= (default NAME:dead), "
            "&dead_letter_maxlen= (its newest entries kept, default 100000), "
            "&claim_idle_s= (default 60); unset: no stream is read",
            _event_stream_url,
            metavar="URL",
            # It may hold the password of Redis.
            secret=True,
        ),
    )
    workers: int = field(
        default=1,
        metadata=_meta(
            "processes of `serve` sharing the listen socket, each a whole daemon on the shared "
            "store, under one supervising parent; more than 1 needs a PostgreSQL database_url",
            _at_least(1),
        ),
    )
    metrics_listen: str | None = field(
        default=None,
        metadata=_meta(
            "address of a listener of its own for /metrics, /healthz and /readyz (this "
            "process's figures alone); with workers, worker N (from 0) takes its port + N",
            _listen,
            metavar="HOST:PORT",
        ),
    )

    @property
    def account_max_in_flight(self) -> int:
        """The per-account cap in effect (PRODUCT.md 2, "Isolation")."""
        return self.x_account_max_in_flight or max(1, self.x_max_connections // 4)

    @property
    def event_retention_s(self) -> float:
        """How long finished events are kept (PRODUCT.md 2, "Retention")."""
        return self.retention_s or self.retention_days * 86_400.0

    @property
    def attribution_keep_s(self) -> float:
        """How long attributions and device state are kept."""
        return self.attribution_retention_s or self.attribution_retention_days * 86_400.0

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """`secret_key` split: the encrypting key first; empty when unset."""
        return tuple(self.secret_key.split(",")) if self.secret_key else ()

    @property
    def database(self) -> DatabaseUrl:
        """`database_url` parsed (checked when the settings were loaded)."""
        return DatabaseUrl.parse(self.database_url)

    @property
    def event_stream(self) -> StreamConfig | None:
        """`event_stream_url` parsed (checked when the settings were loaded); None when unset."""
        return StreamConfig.from_url(self.event_stream_url) if self.event_stream_url else None

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        """`metrics_listen` split; None when unset."""
        return _split_host_port(self.metrics_listen) if self.metrics_listen else None

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """`listen` split; the host without IPv6 brackets."""
        return _split_host_port(self.listen)

    @classmethod
    def load(
        cls,
        *,
        flags: Mapping[str, object | None] | None = None,
        environ: Mapping[str, str] | None = None,
        config_path: Path | None = None,
    ) -> Settings:
        """Merge the sources, highest first: flags, environment, TOML file, defaults.

        `flags` is keyed by setting name, None meaning "not given"; other keys (argparse's
        own, such as the subcommand) are ignored, so `vars(args)` can be passed as it is.
        Every value given is checked, even one a higher source overrides.
        """
        flags = flags or {}
        environ = os.environ if environ is None else environ
        path = config_path if config_path is not None else config_file(flags, environ)

        values: dict[str, Any] = {}
        if path is not None:
            values |= _parse_layer(_read_toml(path), lambda name: f"{path}: {name}")
        env = {f.name: environ[_env_name(f.name)] for f in _FIELDS if _env_name(f.name) in environ}
        values |= _parse_layer(env, _env_name)
        given_flags = {f.name: flags[f.name] for f in _FIELDS if flags.get(f.name) is not None}
        values |= _parse_layer(given_flags, _flag_name)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Rules between settings."""
        if self.workers > 1 and self.database.kind == "sqlite":
            raise SettingsError(
                f"--workers {self.workers}: more than one worker needs a PostgreSQL "
                "database_url; the embedded SQLite store (database_url unset or sqlite:) is "
                "held by one process"
            )
        if self.metrics_listen is not None:
            _, port = _split_host_port(self.metrics_listen)
            if port and port + self.workers - 1 > 65535:
                raise SettingsError(
                    f"metrics_listen: port {port} + {self.workers - 1} (one port per worker) "
                    "is beyond 65535"
                )
        if self.x_account_max_in_flight > self.x_max_connections:
            raise SettingsError(
                f"x_account_max_in_flight ({self.x_account_max_in_flight}) must not exceed "
                f"x_max_connections ({self.x_max_connections}): one account could take every "
                "connection to X"
            )


def config_file(
    flags: Mapping[str, object | None], environ: Mapping[str, str] | None = None
) -> Path | None:
    """The TOML file named by `--config`, else by POSTBACKD_CONFIG; None when neither."""
    environ = os.environ if environ is None else environ
    given = flags.get("config") or environ.get(CONFIG_ENV)
    return Path(str(given)).expanduser() if given else None


def exposed_secrets_warning(path: Path) -> str | None:
    """A warning when the settings file holds a secret and others than its owner may read
    it (mode & 0o077); None otherwise. Names the secret settings, never their values."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # Settings.load has already said what is wrong with it
    held = [f.name for f in _FIELDS if f.metadata["secret"] and document.get(f.name)]
    if not held or not mode & 0o077:
        return None
    return (
        f"{path} holds secrets ({', '.join(held)}) and is readable by users other than its "
        f"owner (mode {mode:04o}): chmod 600 {path}, or give the secrets through the "
        "environment"
    )


def redacted(settings: Settings) -> dict[str, str]:
    """Every setting's effective value as text, in declaration order; a secret that is set
    shows as *** (so the line says whether it is set, never what it is)."""
    out: dict[str, str] = {}
    for f in _FIELDS:
        value = getattr(settings, f.name)
        if value is None or value == "":
            out[f.name] = "unset"
        elif f.metadata["secret"]:
            shown = f.metadata["shown"]
            out[f.name] = "***" if shown is None else shown(str(value))
        elif isinstance(value, float):
            out[f.name] = f"{value:g}"
        else:
            out[f.name] = str(value)
    return out


def render(settings: Settings) -> str:
    """The effective settings on one line, secrets redacted: for the start-up log."""
    return " ".join(f"{name}={value}" for name, value in redacted(settings).items())


_FIELDS: tuple[Field[Any], ...] = fields(Settings)
_KINDS: dict[str, Any] = {
    name: next((a for a in get_args(hint) if a is not type(None)), hint)
    for name, hint in get_type_hints(Settings).items()
}


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, never the text found there.
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    known = [f.name for f in _FIELDS]
    for key in document:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{path}: unknown setting {key!r}{hint}")
    return document


def _parse_layer(raw: Mapping[str, object], source: Callable[[str], str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for f in _FIELDS:
        if f.name not in raw:
            continue
        value = raw[f.name]
        try:
            parsed[f.name] = _parse_value(f, value)
        except _Invalid as exc:
            got = "" if f.metadata["secret"] else f", got {value!r}"
            raise SettingsError(f"{source(f.name)}: {exc}{got}") from None
    return parsed


def _parse_value(f: Field[Any], raw: object) -> object:
    kind = _KINDS[f.name]
    value: object
    if kind is int:
        value = _to_int(raw)
    elif kind is float:
        value = _to_float(raw)
    elif kind is Path:
        if not isinstance(raw, str | Path) or not str(raw):
            raise _Invalid("expected a path")
        value = Path(raw).expanduser()
    elif isinstance(raw, str):
        if not raw and f.default is None:
            return None  # an empty optional string is the same as leaving it unset
        value = raw
    else:
        raise _Invalid("expected a string")
    parse: Parse | None = f.metadata["parse"]
    return value if parse is None else parse(value)


def _to_int(raw: object) -> int:
    # bool is an int subclass, but `true` in TOML is not a count.
    if isinstance(raw, int | str) and not isinstance(raw, bool):
        try:
            return int(raw)
        except ValueError:
            pass
    raise _Invalid("expected an integer")


def _to_float(raw: object) -> float:
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    raise _Invalid("expected a number")


def _default_text(f: Field[Any]) -> str:
    default = f.default
    if default is MISSING or default is None or default == "":
        return "unset"
    if isinstance(default, Path):
        return str(default) if default.is_absolute() else f"./{default}"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def describe() -> list[tuple[str, str, str]]:
    """(name, environment variable, default) of every setting, for the documentation."""
    return [(f.name, _env_name(f.name), _default_text(f)) for f in _FIELDS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config` and one flag per setting, each defaulting to None ("not given")."""
    group = parser.add_argument_group("settings (flag > environment > --config file > default)")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"TOML file of settings, keys as the flag names with underscores (env {CONFIG_ENV})",
    )
    for f in _FIELDS:
        help_text = f"{f.metadata['help']} (env {_env_name(f.name)}; default: {_default_text(f)})"
        if f.metadata["secret"]:
            # Command lines are readable by every user of the machine (ps, /proc).
            help_text += "; prefer the environment: flags are visible in ps"
        group.add_argument(
            _flag_name(f.name),
            dest=f.name,
            default=None,
            metavar=_metavar(f),
            help=help_text.replace("%", "%%"),
        )


def _metavar(f: Field[Any]) -> str:
    if f.metadata["metavar"]:
        return str(f.metadata["metavar"])
    kind = _KINDS[f.name]
    if kind is int:
        return "N"
    if kind is float:
        return "SECONDS" if f.name.endswith("_s") else "NUMBER"
    return "TEXT"
