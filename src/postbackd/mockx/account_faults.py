"""Per-account faults of the simulated X: one X account slow, throttled, failing or timing out
while the others stay healthy.

`MockConfig.account_faults` maps an account id to an `AccountFaults`; a key left unset falls
back to the global setting of the same name. A request belongs to the account of the OAuth
token that signed it (the token's first account, the one random claims name), so each
per-token rate window of X (reference, "Rate limits") still has a single limit.

Three spellings, one meaning:

    --account-faults acct-b:latency=fixed:40000,rate_limit=1,rate_window_s=120
    [account_faults.acct-b]          (TOML; JSON: {"account_faults": {"acct-b": {...}}})
    latency = "fixed:40000"
    rate_limit = 1
    PATCH /_mock/config {"account_faults": {"acct-b": {"latency": "fixed:40000"}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from postbackd.mockx.latency import Latency

# The injected-fault shares, which together must leave room for plain answers.
RATES: Final = ("error_rate", "timeout_rate", "reset_rate")


@dataclass(frozen=True, slots=True)
class AccountFaults:
    """One account's own fault and rate settings; None means "as the global setting"."""

    latency: Latency | None = None
    error_rate: float | None = None
    timeout_rate: float | None = None
    reset_rate: float | None = None
    rate_limit: int | None = None
    rate_window_s: float | None = None

    def check(self, account_id: str, global_rates: Mapping[str, float]) -> None:
        """Refuse values the global settings would refuse, naming the account and the key;
        the shares must fit in 1 once the unset ones take the global values."""
        where = f"account_faults.{account_id}"
        for name in RATES:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{where}: {name} must be between 0 and 1")
        total = 0.0
        for name in RATES:
            own = getattr(self, name)
            total += global_rates[name] if own is None else own
        if total > 1.0:
            raise ValueError(
                f"{where}: error_rate + timeout_rate + reset_rate must not exceed 1 "
                f"(the unset ones count at their global values; here {total:g})"
            )
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"{where}: rate_limit must be >= 1")
        if self.rate_window_s is not None and not self.rate_window_s > 0:
            raise ValueError(f"{where}: rate_window_s must be > 0")

    def to_json(self) -> dict[str, object]:
        """The keys that are set, in the form a settings file or PATCH body gives them."""
        out: dict[str, object] = {}
        for name in KEYS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.spec if isinstance(value, Latency) else value
        return out


KEYS: Final = tuple(f.name for f in fields(AccountFaults))


def parse_account_faults(value: object) -> dict[str, AccountFaults]:
    """The mapping from a settings file or PATCH body (account id -> table of keys), or the
    list of `--account-faults` flag values."""
    if isinstance(value, Mapping):
        return {
            str(account_id): table
            if isinstance(table, AccountFaults)
            else _from_table(str(account_id), table)
            for account_id, table in value.items()
        }
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        parsed: dict[str, AccountFaults] = {}
        for spec in value:
            account_id, faults = parse_flag(spec)
            if account_id in parsed:
                raise ValueError(f"account_faults.{account_id}: given twice")
            parsed[account_id] = faults
        return parsed
    raise ValueError("account_faults must be a table of account ids, each a table of settings")


def parse_flag(spec: str) -> tuple[str, AccountFaults]:
    """`ID:key=value[,key=value...]`. A latency spec has colons of its own, so the id ends at
    the first colon, an item at the next comma and its key at the item's first '='."""
    account_id, colon, rest = spec.partition(":")
    account_id = account_id.strip()
    if not colon or not account_id or not rest.strip():
        raise ValueError(f"--account-faults {spec!r}: expected ID:key=value[,key=value...]")
    table: dict[str, object] = {}
    for item in rest.split(","):
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"account_faults.{account_id}: {item.strip()!r} is not key=value")
        if key in table:
            raise ValueError(f"account_faults.{account_id}: {key} given twice")
        table[key] = _from_text(account_id, key, text.strip())
    return account_id, _from_table(account_id, table)


def _from_text(account_id: str, key: str, text: str) -> object:
    """A flag's text as the value a settings file would hold (type checks follow)."""
    if key not in KEYS:
        return text  # refused by `_from_table`, with the list of keys
    try:
        if key == "latency":
            return text
        return int(text) if key == "rate_limit" else float(text)
    except ValueError:
        kind = "an integer" if key == "rate_limit" else "a number"
        raise ValueError(f"account_faults.{account_id}: {key} must be {kind}") from None


def _from_table(account_id: str, table: object) -> AccountFaults:
    where = f"account_faults.{account_id}"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table of settings ({', '.join(KEYS)})")
    unknown = sorted(str(key) for key in table if key not in KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KEYS)}"
        )
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if value is None:
            continue  # as if left out: the global setting applies
        try:
            settings[key] = _typed(key, value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return AccountFaults(**settings)


def _typed(key: str, value: object) -> object:
    if key == "latency":
        return value if isinstance(value, Latency) else Latency.parse(str(value))
    if key == "rate_limit":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("rate_limit must be an integer")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)
