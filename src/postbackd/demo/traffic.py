"""Sending the sample events to `POST /track/json` and waiting until X has answered every
delivery they made."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

import orjson

from postbackd.progress import Progress

from .scenarios import SampleEvent
from .workflow import Api

BATCH_EVENTS: Final = 250
_POLL_S: Final = 0.1
# Without progress for this long, the demo stops waiting and reports what it has.
STALL_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Streamed:
    accepted: int
    rejected: int
    seconds: float


async def stream(api: Api, events: tuple[SampleEvent, ...]) -> Streamed:
    """NDJSON batches, one after the other, each acknowledged once durable (PRODUCT.md 2)."""
    progress = Progress("events")
    accepted = rejected = 0
    started = time.monotonic()
    try:
        for first in range(0, len(events), BATCH_EVENTS):
            batch = events[first : first + BATCH_EVENTS]
            body = b"".join(orjson.dumps(e.body) + b"\n" for e in batch)
            answer = await api.call("POST", "/track/json", ndjson=body, expect=202)
            accepted += answer["accepted"]
            rejected += len(answer["rejected"])
            sent = first + len(batch)
            progress.update(sent, fraction=sent / len(events), detail="ingest")
    finally:
        progress.finish()
    return Streamed(accepted, rejected, time.monotonic() - started)


async def wait_for_deliveries(
    api: Api, app_id: str, expected_claims: int, progress: Progress
) -> int:
    """Until no delivery is ready or scheduled (in flight counts as ready until X's answer
    is stored); the number of claims recorded. Gives up after STALL_S without progress.
    `progress` was made when the first event went out, so that its rate counts from there."""
    claims, last_change = 0, time.monotonic()
    try:
        while True:
            # Pending first: once nothing is, the report read after it is complete.
            busy = await _pending(api)
            report = await api.call("GET", f"/api/v1/reports/trackers?app_id={app_id}")
            now = sum(sum(item["claims"].values()) for item in report["items"])
            if now != claims:
                claims, last_change = now, time.monotonic()
            progress.update(claims, fraction=claims / max(expected_claims, 1), detail="X answers")
            if not busy or time.monotonic() - last_change > STALL_S:
                return claims
            await asyncio.sleep(_POLL_S)
    finally:
        progress.finish()


async def _pending(api: Api) -> bool:
    for state in ("ready", "scheduled"):
        found = await api.call("GET", f"/api/v1/deliveries?state={state}&limit=1")
        if found["count"]:
            return True
    return False
