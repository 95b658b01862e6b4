"""Injected faults: latency, 5xx answers, held (timed-out) requests, connection resets.

One generator seeded with `seed` draws them in arrival order, so a sequential run repeats.
What a request draws from is its account's `FaultProfile`: the global settings, or for an
account in `account_faults` its own where set.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass
from typing import Final, Literal

from postbackd.mockx.account_faults import AccountFaults
from postbackd.mockx.config import MockConfig
from postbackd.mockx.latency import Latency

FaultKind = Literal["reset", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    delay_s: float
    kind: FaultKind | None
    # For `error`: 500 INTERNAL_ERROR or 503 SERVICE_UNAVAILABLE (reference, "Errors").
    error_status: int = 500


# An account without settings of its own.
_NOT_OWN: Final = AccountFaults()


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """The faults and rate budget of one account's requests, every fallback resolved when
    the settings change, so that a request only looks its profile up."""

    latency: Latency
    error_rate: float
    timeout_rate: float
    reset_rate: float
    rate_limit: int
    rate_window_s: float
    # Nothing to draw: no latency and no fault share.
    quiet: bool

    @classmethod
    def of(cls, config: MockConfig, own: AccountFaults = _NOT_OWN) -> FaultProfile:
        """The account's own settings where set, else the global ones."""
        latency = config.latency if own.latency is None else own.latency
        error_rate = config.error_rate if own.error_rate is None else own.error_rate
        timeout_rate = config.timeout_rate if own.timeout_rate is None else own.timeout_rate
        reset_rate = config.reset_rate if own.reset_rate is None else own.reset_rate
        return cls(
            latency=latency,
            error_rate=error_rate,
            timeout_rate=timeout_rate,
            reset_rate=reset_rate,
            rate_limit=config.rate_limit if own.rate_limit is None else own.rate_limit,
            rate_window_s=config.rate_window_s if own.rate_window_s is None else own.rate_window_s,
            quiet=not (error_rate or timeout_rate or reset_rate) and latency.kind == "none",
        )


def fault_profiles(config: MockConfig) -> tuple[FaultProfile, dict[str, FaultProfile]]:
    """The global profile, and one per account that has settings of its own."""
    own = config.account_faults
    return FaultProfile.of(config), {
        account_id: FaultProfile.of(config, own[account_id]) for account_id in own
    }


_NO_FAULT = FaultPlan(0.0, None)


def draw(profile: FaultProfile, rng: random.Random) -> FaultPlan:
    if profile.quiet:
        return _NO_FAULT  # nothing to draw: the plain answer, at once
    delay_s = profile.latency.delay_s(rng)
    x = rng.random()
    if x < profile.reset_rate:
        return FaultPlan(delay_s, "reset")
    x -= profile.reset_rate
    if x < profile.timeout_rate:
        return FaultPlan(delay_s, "timeout")
    x -= profile.timeout_rate
    if x < profile.error_rate:
        return FaultPlan(delay_s, "error", rng.choice((500, 503)))
    return FaultPlan(delay_s, None)


def reset_connection(transport: asyncio.Transport | None) -> None:
    """Drop the connection without an answer; a zero linger makes the kernel send a TCP RST,
    so the client sees a reset rather than a clean close."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
