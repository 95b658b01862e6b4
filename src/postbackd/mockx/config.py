"""Settings of the simulated X: credentials it accepts, faults it injects, claims it makes.

`MockConfig` is frozen: a runtime change (`PATCH /_mock/config`) builds a new one with
`dataclasses.replace`, so `__post_init__` checks every value again.
"""

from __future__ import annotations

import binascii
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from postbackd.mockx.account_faults import RATES, AccountFaults, parse_account_faults
from postbackd.mockx.latency import NO_LATENCY, Latency


@dataclass(frozen=True, slots=True)
class MockAccount:
    """An X ads account and one OAuth token (of an X user) that may act on it."""

    id: str
    token: str = field(repr=False)
    secret: str = field(repr=False)
    name: str = ""

    @classmethod
    def parse(cls, spec: str) -> MockAccount:
        """`ID:TOKEN:SECRET` (the secret may itself contain colons)."""
        parts = spec.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError("an account is ID:TOKEN:SECRET")
        return cls(id=parts[0], token=parts[1], secret=parts[2])


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Every setting of `postbackd mock-x`; field names are also the settings-file keys."""

    listen: str = "127.0.0.1:8081"
    # Reference, "The call": the version is the first path segment, 12 today.
    api_version: str = "12"
    consumer_key: str = ""
    consumer_secret: str = field(default="", repr=False)
    # The partner HMAC key (raw bytes; base64 in files, flags and environment).
    hmac_key: bytes = field(default=b"", repr=False)
    accounts: tuple[MockAccount, ...] = ()
    # App allow-list: when set, any other app_id answers 404 MACT_APP_NOT_FOUND.
    apps: tuple[str, ...] | None = None
    script: str | None = None
    claim_rate: float = 0.0
    campaign_names: tuple[str, ...] = ("Re-engagement promo",)
    claim_max_age_days: float = 7.0
    seed: int = 0
    latency: Latency = NO_LATENCY
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_hold_s: float = 30.0
    reset_rate: float = 0.0
    outage: bool = False
    # Reference, "Rate limits": 60,000 conversion requests per 15-minute window, per token.
    rate_limit: int = 60_000
    rate_window_s: float = 900.0
    # Account id -> its own faults and rate limit (account_faults.py); empty: none. Left out
    # of the hash: a mapping (made read-only in `__post_init__`) has none.
    account_faults: Mapping[str, AccountFaults] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # OAuth 1.0a timestamps further than this from the mock's clock are refused.
    timestamp_skew_s: float = 300.0
    # None keeps every X request in the log (tests count them); a number keeps the latest.
    request_log_max: int | None = None
    # Every claim answered 200 with its hashed_device_id and when X received it
    # (`GET /_mock/receipts`), for a benchmark's latency from outside; off, nothing is kept.
    receipt_log: bool = False

    def __post_init__(self) -> None:
        for name in ("claim_rate", "error_rate", "timeout_rate", "reset_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate + self.timeout_rate + self.reset_rate > 1.0:
            raise ValueError("error_rate + timeout_rate + reset_rate must not exceed 1")
        if self.rate_limit < 1 or self.rate_window_s <= 0:
            raise ValueError("rate_limit must be >= 1 and rate_window_s > 0")
        if self.timeout_hold_s < 0 or self.claim_max_age_days < 0 or self.timestamp_skew_s <= 0:
            raise ValueError("timeout_hold_s, claim_max_age_days, timestamp_skew_s out of range")
        if self.request_log_max is not None and self.request_log_max < 0:
            raise ValueError("request_log_max must be >= 0")
        if self.claim_rate > 0 and not self.campaign_names:
            raise ValueError("random claims need at least one campaign name")
        if self.script is not None and not self.hmac_key:
            raise ValueError("a script needs the partner HMAC key to hash its device ids")
        secrets: dict[str, str] = {}
        for account in self.accounts:
            if secrets.setdefault(account.token, account.secret) != account.secret:
                raise ValueError(f"account {account.id}: one token cannot have two secrets")
        self._check_account_faults()

    def _check_account_faults(self) -> None:
        # A copy the caller cannot change behind the frozen config's back.
        object.__setattr__(self, "account_faults", MappingProxyType(dict(self.account_faults)))
        if not self.account_faults:
            return
        known = {account.id for account in self.accounts}
        global_rates = {name: getattr(self, name) for name in RATES}
        for account_id, faults in self.account_faults.items():
            if not isinstance(faults, AccountFaults):
                raise ValueError(f"account_faults.{account_id} must be an AccountFaults")
            if account_id not in known:
                raise ValueError(
                    f"account_faults.{account_id}: no such account "
                    f"(not among the {len(known)} given with accounts)"
                )
            faults.check(account_id, global_rates)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"listen {self.listen!r}: expected HOST:PORT")
        return host.strip("[]"), int(port)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> MockConfig:
        """Build from the names of the fields (file keys); `hmac_key` is base64 text."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown mock setting(s): {', '.join(unknown)}")
        settings: dict[str, Any] = {n: coerce_setting(n, v) for n, v in values.items()}
        return cls(**settings)

    @classmethod
    def from_file(cls, path: str | Path) -> MockConfig:
        return cls.from_mapping(read_settings_file(path))


def read_settings_file(path: str | Path) -> dict[str, object]:
    """A TOML file, or JSON when the name ends in `.json`."""
    path = Path(path)
    data: object
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the settings must be an object")
    return data


def decode_hmac_key(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("hmac_key must be base64") from None


_INTEGERS: Final = frozenset({"rate_limit", "seed", "request_log_max"})
_NUMBERS: Final = frozenset(
    {
        "claim_rate",
        "claim_max_age_days",
        "error_rate",
        "timeout_rate",
        "timeout_hold_s",
        "reset_rate",
        "rate_window_s",
        "timestamp_skew_s",
    }
)
_OPTIONAL: Final = frozenset({"apps", "script", "request_log_max"})


def coerce_setting(name: str, value: object) -> object:
    """Turn a JSON/TOML/flag value into the field's type; a wrong type is a ValueError."""
    if value is None and name in _OPTIONAL:
        return None
    if name == "hmac_key":
        return decode_hmac_key(_text(name, value))
    if name == "latency":
        return value if isinstance(value, Latency) else Latency.parse(str(value))
    if name == "accounts":
        return tuple(_account(item) for item in _items(name, value))
    if name == "account_faults":
        return parse_account_faults(value)
    if name in ("apps", "campaign_names"):
        return tuple(str(item) for item in _items(name, value))
    if name in ("outage", "receipt_log"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        return value
    if name in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        return float(value)
    return _text(name, value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _items(name: str, value: object) -> list[object] | tuple[object, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list")
    return value


def _account(item: object) -> MockAccount:
    if isinstance(item, MockAccount):
        return item
    if isinstance(item, str):
        return MockAccount.parse(item)
    if isinstance(item, Mapping):
        try:
            return MockAccount(
                id=str(item["id"]),
                token=str(item["token"]),
                secret=str(item["secret"]),
                name=str(item.get("name", "")),
            )
        except KeyError as exc:
            raise ValueError(f"an account needs id, token and secret (missing {exc})") from None
    raise ValueError("an account is ID:TOKEN:SECRET or {id, token, secret, name}")
