"""What the simulated X saw: counters (`GET /_mock/stats`), the request log
(`GET /_mock/requests`) and, when asked for, the receipts (`GET /_mock/receipts`).

The log keeps every X call by default, since tests count them; one entry holds the raw query
string and interned path and token, about 0.4 kB for a claim request. A receipt is two items
of two flat lists: a benchmark keeps hundreds of thousands of them at little cost to X.
"""

from __future__ import annotations

import sys
from collections import Counter, deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal
from urllib.parse import parse_qsl

# Why an answer is not X's plain answer: injected by the fault settings or the outage switch.
Fault = Literal["reset", "timeout", "error", "outage"]


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    ts: float
    method: str
    path: str
    query: str
    token: str | None
    # None when the connection was reset without an answer.
    status: int | None
    fault: Fault | None

    def to_json(self) -> dict[str, object]:
        return {
            "ts": self.ts,
            "method": self.method,
            "path": self.path,
            "params": dict(parse_qsl(self.query, keep_blank_values=True)),
            "token": self.token,
            "status": self.status,
            "fault": self.fault,
        }


class Recorder:
    def __init__(self, log_max: int | None, *, receipts: bool = False) -> None:
        self.log: deque[LoggedRequest] = deque(maxlen=log_max)
        self.receipts = receipts
        # Per claim answered 200, in order: when X received it (`time.monotonic()`, one
        # clock for every process of the machine on Linux) and its hashed_device_id.
        self._received_s: list[float] = []
        self._received_devices: list[str] = []
        self._by_status: Counter[tuple[str, str]] = Counter()
        self._faults: Counter[str] = Counter()
        self._claims: Counter[str] = Counter()
        self._tokens: Counter[tuple[str, str]] = Counter()
        # (account id, answer) of claim requests, for `by_account`.
        self._accounts: Counter[tuple[str, str]] = Counter()
        # Python hashes of (hashed_device_id, conversion_type, conversion_time): 64-bit keys
        # keep a million conversions in tens of MB, and a collision at that size is ~1e-7.
        self._conversions: set[int] = set()
        self._recorded = 0

    def record(
        self,
        endpoint: str,
        ts: float,
        method: str,
        path: str,
        query: str,
        token: str | None,
        status: int | None,
        fault: Fault | None = None,
        account: str | None = None,
    ) -> None:
        token = sys.intern(token) if token is not None else None
        self.log.append(LoggedRequest(ts, method, sys.intern(path), query, token, status, fault))
        answer = "reset" if status is None else str(status)
        self._by_status[endpoint, answer] += 1
        if fault is not None and fault != "timeout":  # counted when the hold starts
            self._faults[fault] += 1
        if token is not None:
            self._tokens[token, answer] += 1
        if account is not None:
            self._accounts[account, answer] += 1

    def record_hold(self) -> None:
        """A request starts being held (timeout fault): its answer comes after the client
        gave up, or never when the mock stops first."""
        self._faults["timeout"] += 1

    def record_conversion(
        self, key: tuple[str, str, str], claimed_by: tuple[str, ...], received_s: float
    ) -> None:
        """A conversion X answered with 200, i.e. recorded on its side; `key` starts with its
        hashed_device_id, and `received_s` is when its request reached X (monotonic)."""
        if self.receipts:
            self._received_s.append(received_s)
            self._received_devices.append(key[0])
        self._recorded += 1
        self._conversions.add(hash(key))
        for node in claimed_by:
            self._claims[node] += 1

    def clear(self) -> None:
        self.log.clear()
        for counter in (
            self._by_status,
            self._faults,
            self._claims,
            self._tokens,
            self._accounts,
        ):
            counter.clear()
        self._conversions.clear()
        self._recorded = 0
        self._received_s.clear()
        self._received_devices.clear()

    def stats(self) -> dict[str, object]:
        requests: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in sorted(self._by_status.items()):
            requests.setdefault(endpoint, {})[status] = count
        tokens: Counter[str] = Counter()
        by_token: dict[str, dict[str, int]] = {}
        for (token, answer), count in self._tokens.items():
            tokens[token] += count
            by_token.setdefault(token, {})[answer] = count
        # Per account: its claim requests and their answers, so a benchmark can watch one
        # account without paging through the request log.
        by_account: dict[str, dict[str, Any]] = {}
        for (account, answer), count in sorted(self._accounts.items()):
            entry = by_account.setdefault(account, {"requests": 0, "status": {}})
            entry["requests"] += count
            entry["status"][answer] = count
        return {
            "requests_total": self._by_status.total(),
            "requests": requests,
            "too_many_requests": sum(
                n for (_, status), n in self._by_status.items() if status == "429"
            ),
            "resets": self._faults["reset"],
            "timeouts": self._faults["timeout"],
            "errors": self._faults["error"],
            "outage_answers": self._faults["outage"],
            "claims": {"twitter": self._claims["twitter"], "tpn": self._claims["tpn"]},
            "tokens": dict(tokens),
            "tokens_by_status": by_token,
            "conversions": {
                "recorded": self._recorded,
                "distinct": len(self._conversions),
                "duplicates": self._recorded - len(self._conversions),
            },
            "by_account": by_account,
        }

    def requests(self, limit: int, offset: int) -> dict[str, object]:
        page = islice(self.log, offset, offset + limit)
        return {"total": len(self.log), "requests": [entry.to_json() for entry in page]}

    def receipts_page(self, limit: int, offset: int) -> dict[str, object]:
        """Receipts from `offset` on, oldest first, as two lists of the same length."""
        end = offset + limit
        return {
            "enabled": self.receipts,
            "clock": "monotonic",
            "total": len(self._received_s),
            "received_s": self._received_s[offset:end],
            "hashed_device_id": self._received_devices[offset:end],
        }
