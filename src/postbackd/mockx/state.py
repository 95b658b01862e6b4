"""The simulated X's state: settings (changeable at runtime), token grants, rate budgets,
counters and the request log."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from postbackd.mockx.claims import ClaimMaker
from postbackd.mockx.config import MockConfig, coerce_setting
from postbackd.mockx.faults import FaultProfile, fault_profiles
from postbackd.mockx.oauth import OAuthVerifier
from postbackd.mockx.ratelimit import FixedWindowLimiter
from postbackd.mockx.records import Recorder
from postbackd.mockx.script import load_script

# What `PATCH /_mock/config` may change; credentials, accounts and the script stay fixed.
RUNTIME_SETTINGS: Final = frozenset(
    {
        "latency",
        "error_rate",
        "timeout_rate",
        "timeout_hold_s",
        "reset_rate",
        "outage",
        "rate_limit",
        "rate_window_s",
        # Replaced as a whole: `{}` clears every account's own settings.
        "account_faults",
        "claim_rate",
        "campaign_names",
        "claim_max_age_days",
    }
)
_TOKEN_SWITCHES: Final = ("revoke_tokens", "restore_tokens")


class MockState:
    _config: MockConfig
    # Set with `config` (its setter): the global fault profile, and the accounts' own.
    profile: FaultProfile
    account_profiles: dict[str, FaultProfile]

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.verifier = OAuthVerifier(
            config.consumer_key,
            config.consumer_secret,
            config.accounts,
            timestamp_skew_s=config.timestamp_skew_s,
        )
        self.limiter = FixedWindowLimiter()
        self.recorder = Recorder(config.request_log_max, receipts=config.receipt_log)
        self.claims = ClaimMaker(
            load_script(config.script, config.hmac_key) if config.script else {}
        )
        self.fault_rng = random.Random(config.seed)
        # Tokens that answer 401 although they are known (X revoked the user's access).
        self.revoked: set[str] = set()

    @property
    def config(self) -> MockConfig:
        return self._config

    @config.setter
    def config(self, config: MockConfig) -> None:
        self._config = config
        self.profile, self.account_profiles = fault_profiles(config)

    def profile_of(self, account_id: str) -> FaultProfile:
        """The faults and rate budget of an account's requests: one dict lookup, none at
        all while no account has settings of its own."""
        profiles = self.account_profiles
        return profiles.get(account_id, self.profile) if profiles else self.profile

    def reconfigure(self, changes: Mapping[str, object]) -> None:
        """Apply a `PATCH /_mock/config` body, all of it or (on ValueError) none of it.

        `revoke_tokens` / `restore_tokens` name accounts: every token of those accounts then
        answers 401 UNAUTHORIZED_ACCESS, or works again."""
        unknown = sorted(set(changes) - RUNTIME_SETTINGS - set(_TOKEN_SWITCHES))
        if unknown:
            raise ValueError(f"cannot change at runtime: {', '.join(unknown)}")
        settings = {
            name: coerce_setting(name, value)
            for name, value in changes.items()
            if name in RUNTIME_SETTINGS
        }
        revoke, restore = (self._tokens_of(changes.get(name, [])) for name in _TOKEN_SWITCHES)
        self.config = dataclasses.replace(self.config, **settings)  # type: ignore[arg-type]
        self.revoked = (self.revoked | revoke) - restore

    def _tokens_of(self, account_ids: object) -> set[str]:
        if not isinstance(account_ids, list) or not all(isinstance(a, str) for a in account_ids):
            raise ValueError("revoke_tokens / restore_tokens take a list of account ids")
        known = {account.id for account in self.config.accounts}
        missing = sorted(set(account_ids) - known)
        if missing:
            raise ValueError(f"unknown account(s): {', '.join(missing)}")
        return {a.token for a in self.config.accounts if a.id in account_ids}

    def view(self) -> dict[str, object]:
        """The settings without credentials."""
        config = self.config
        return {
            "api_version": config.api_version,
            "accounts": [
                {"id": a.id, "name": a.name, "revoked": a.token in self.revoked}
                for a in config.accounts
            ],
            "apps": None if config.apps is None else list(config.apps),
            "script": config.script,
            "claim_rate": config.claim_rate,
            "campaign_names": list(config.campaign_names),
            "claim_max_age_days": config.claim_max_age_days,
            "seed": config.seed,
            "latency": config.latency.spec,
            "error_rate": config.error_rate,
            "timeout_rate": config.timeout_rate,
            "timeout_hold_s": config.timeout_hold_s,
            "reset_rate": config.reset_rate,
            "outage": config.outage,
            "rate_limit": config.rate_limit,
            "rate_window_s": config.rate_window_s,
            "account_faults": {
                account_id: faults.to_json() for account_id, faults in config.account_faults.items()
            },
            "request_log_max": config.request_log_max,
            "receipt_log": config.receipt_log,
        }


STATE: Final = web.AppKey("postbackd_mockx_state", MockState)
