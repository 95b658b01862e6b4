"""What every process of a benchmark run shares: the credentials the simulated X and the
daemon are given, the events the load generator sends, and the claim requests the reference
clients build from the same events.

The credentials are made up for the benchmark and travel in the environment, under the names
the daemon and `postbackd mock-x` read (POSTBACKD_X_*), so one environment drives every
process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson

CONSUMER_KEY: Final = "bench-consumer-key"
CONSUMER_SECRET: Final = "bench-consumer-secret-7f3a9c"
HMAC_KEY: Final = b"bench-partner-hmac-key-0123456789"
API_TOKEN: Final = "bench-api-token-5f1c2a3b4d5e6f70a1b2"
EVENT_NAME: Final = "purchase"
CONVERSION_TYPE: Final = "PURCHASE"
BUNDLE_ID: Final = "333903271"
# The largest windows of the benchmark's tracker, sent as the claim's windows.
WINDOWS: Final = (14, 1)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    token: str
    secret: str

    @property
    def spec(self) -> str:
        """`ID:TOKEN:SECRET`, the form `postbackd mock-x --account` takes."""
        return f"{self.id}:{self.token}:{self.secret}"


def accounts(count: int) -> list[Account]:
    return [Account(f"bench{i:04d}x", f"{i}-bench-token-{i:06d}", f"bench-secret-{i:06d}")
            for i in range(count)]  # fmt: skip


def environment(**extra: str) -> dict[str, str]:
    """The process environment of the mock, the daemon and the clients."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACKD_")}
    env.update(
        POSTBACKD_X_CONSUMER_KEY=CONSUMER_KEY,
        POSTBACKD_X_CONSUMER_SECRET=CONSUMER_SECRET,
        POSTBACKD_X_HMAC_KEY=base64.b64encode(HMAC_KEY).decode(),
        POSTBACKD_API_TOKEN=API_TOKEN,
    )
    env.update(extra)
    return env


def scattered_id(kind: str, run: int, n: int) -> str:
    """A version 4 UUID that looks random, as the ids real producers send do, yet is the
    same for (kind, run, n) in every process: the store's indexes on event ids and devices
    see inserts scattered over their whole width, not the near-sequence of a counter, which
    would keep their hot pages few and flatter the engine."""
    digest = hashlib.blake2b(f"{kind}:{run}:{n}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def idfa(run: int, n: int) -> str:
    """A distinct IDFA per (run, event number): every event is its own conversion at X."""
    return scattered_id("idfa", run, n).upper()


def event(app_id: str, run: int, n: int, usertime_s: float, event_name: str = EVENT_NAME) -> bytes:
    """One Kochava server-to-server event (PRODUCT.md 3, "Ingest") as an NDJSON line."""
    return orjson.dumps(
        {
            "action": "event",
            "event_id": scattered_id("event", run, n),
            "kochava_app_id": app_id,
            "kochava_device_id": f"KD{run:08x}{n:012x}",
            "device_ids": {"idfa": idfa(run, n)},
            "origination_ip": "203.0.113.7",
            "device_ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
            "device_ver": "iPhone15,2-iOS17.1",
            "app_version": "2.4.1",
            "usertime": round(usertime_s, 3),
            "data": {
                "event_name": event_name,
                "event_data": {"sum": 9.99, "currency": "USD", "quantity": 1},
            },
        }
    )


def hashed_device_id(raw_idfa: str) -> str:
    """The `hashed_device_id` X gets for an IDFA: HMAC-SHA256 with the partner key of the
    upper-cased id, base64; it names the event in the simulated X's request log."""
    digest = hmac.new(HMAC_KEY, raw_idfa.upper().encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def claim_params(raw_idfa: str, conversion_time_s: float) -> list[tuple[str, str]]:
    """The query of the claim request X gets for `event(...)`, built the plain way:
    what the engine sends for the same event, parameter for parameter."""
    moment = datetime.fromtimestamp(conversion_time_s, UTC)
    return [
        ("app_id", BUNDLE_ID),
        ("os_type", "IOS"),
        ("hashed_device_id", hashed_device_id(raw_idfa)),
        ("conversion_type", CONVERSION_TYPE),
        ("conversion_time", f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"),
        ("click_window", str(WINDOWS[0])),
        ("view_through_window", str(WINDOWS[1])),
        ("device_ip_address", "203.0.113.7"),
        ("price_micro", "9990000"),
        ("price_currency", "USD"),
        ("number_items", "1"),
    ]  # fmt: skip


def api_headers() -> Mapping[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}
