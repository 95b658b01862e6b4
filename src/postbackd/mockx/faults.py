"""Injected faults: latency, 5xx answers, held (timed-out) requests, connection resets.

One generator seeded with `seed` draws them in arrival order, so a sequential run repeats.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass
from typing import Literal

from postbackd.mockx.config import MockConfig

FaultKind = Literal["reset", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    delay_s: float
    kind: FaultKind | None
    # For `error`: 500 INTERNAL_ERROR or 503 SERVICE_UNAVAILABLE (reference, "Errors").
    error_status: int = 500


_NO_FAULT = FaultPlan(0.0, None)


def draw(config: MockConfig, rng: random.Random) -> FaultPlan:
    if not (config.reset_rate or config.timeout_rate or config.error_rate) and (
        config.latency.kind == "none"
    ):
        return _NO_FAULT  # nothing to draw: the plain answer, at once
    delay_s = config.latency.delay_s(rng)
    x = rng.random()
    if x < config.reset_rate:
        return FaultPlan(delay_s, "reset")
    x -= config.reset_rate
    if x < config.timeout_rate:
        return FaultPlan(delay_s, "timeout")
    x -= config.timeout_rate
    if x < config.error_rate:
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
