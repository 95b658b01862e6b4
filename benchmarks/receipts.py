"""Latency from outside the daemon: from the load generator's ingest call to the simulated X's
receipt of the event's claim.

The load generator writes when it sent each batch answered 202 (`loadgen --sends`): its
first event number and size, `time.monotonic()` taken just before the call. The simulated X,
with `receipt_log` on, keeps every claim it answered 200: its `hashed_device_id` and
`time.monotonic()` taken as the request reached it (`GET /_mock/receipts`). On Linux the
monotonic clock is one clock for every process of the machine, so the two subtract. Each
benchmark event has its own IDFA, so an event's claim is the receipt of its hashed IDFA; a
claim sent twice counts at its first receipt.

Every event of a batch sent within the measured span counts; `matched_pct` is the share of
them whose claim X received (100 % when none is lost or still on its way).
"""

from __future__ import annotations

import math
from pathlib import Path

import aiohttp
import orjson

from benchmarks import workload

_PAGE = 100_000


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(sorted_values) - 1, math.ceil(share * len(sorted_values)) - 1))
    return sorted_values[rank]


async def read_receipts(session: aiohttp.ClientSession, x_url: str) -> dict[str, float]:
    """hashed_device_id -> when X first received its claim (monotonic seconds)."""
    first: dict[str, float] = {}
    offset = 0
    while True:
        query = {"offset": str(offset), "limit": str(_PAGE)}
        async with session.get(f"{x_url}/_mock/receipts", params=query) as answer:
            page = await answer.json()
        if not page["enabled"]:
            raise RuntimeError("the simulated X keeps no receipts: start it with receipt_log")
        for device, received_s in zip(page["hashed_device_id"], page["received_s"], strict=True):
            first.setdefault(device, received_s)
        offset += len(page["received_s"])
        if offset >= int(page["total"]):
            return first


def read_sends(path: Path) -> list[tuple[int, int, float]]:
    """The load generator's batches answered 202: (first event number, size, sent at)."""
    return [(int(f), int(n), float(t)) for f, n, t in orjson.loads(path.read_bytes())]


def ingest_to_x(
    sends: list[tuple[int, int, float]],
    receipts: dict[str, float],
    run: int,
    from_s: float,
    to_s: float,
) -> dict[str, float]:
    """Figures of the events sent (monotonic) within [from_s, to_s] by load generator run
    `run`: percentiles of the time from their ingest call to X's receipt of their claim, in
    ms, and the share of them measured."""
    lags: list[float] = []
    sent = 0
    for first, size, sent_s in sends:
        if not from_s <= sent_s <= to_s:
            continue
        sent += size
        for n in range(first, first + size):
            received_s = receipts.get(workload.hashed_device_id(workload.idfa(run, n)))
            if received_s is not None:
                lags.append((received_s - sent_s) * 1000)
    if not lags:
        raise RuntimeError("no claim of an event sent in the measured span reached X")
    lags.sort()
    return {
        "ingest_to_x_p50_ms": percentile(lags, 0.50),
        "ingest_to_x_p99_ms": percentile(lags, 0.99),
        "ingest_to_x_p99_9_ms": percentile(lags, 0.999),
        "ingest_to_x_max_ms": lags[-1],
        "events_sent_in_span": float(sent),
        "matched_pct": 100 * len(lags) / sent,
    }
