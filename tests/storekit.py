"""A real SQLite store in a temporary directory for unit tests of the engine's parts: the
schema by the daemon's own migrations, rows written by the daemon's own SQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from postbackd.delivery.model import NewDelivery
from postbackd.event import Event, parse_event
from postbackd.store import deliveries as sql
from postbackd.store.db import DB_NAME, open_database
from postbackd.store.writer import Writer

APP = "kogame0123456789abcdef"


async def migrated(data_dir: Path) -> Path:
    conn = await open_database(data_dir)
    await conn.close()
    return data_dir / DB_NAME


def event(n: int, received_at_ms: int = 1_000) -> Event:
    return parse_event(
        {
            "action": "event",
            "kochava_app_id": APP,
            "event_id": f"ev-{n}",
            "device_ids": {"idfa": f"{n:08X}-0000-4000-8000-00000000ABCD"},
            "data": {"event_name": "purchase"},
        },
        received_at_ms=received_at_ms,
    )


def delivery(lane: str, due_ms: int, state: str = "ready", **kw: object) -> NewDelivery:
    values: dict[str, object] = {
        "postback_id": "kopb0001",
        "network": "x_ios",
        "x_app_id": "333903271",
        "conversion_type": "PURCHASE",
        "x_account_id": None,
        "retry_attempts": 3,
        "state": state,
        "reason": None,
        "due_ms": due_ms,
        "lane": lane,
    } | kw
    return NewDelivery(**values)  # type: ignore[arg-type]


async def insert(
    writer: Writer, rows: Sequence[tuple[int, NewDelivery]], first_id: int, now_ms: int = 1_000
) -> None:
    """Events numbered as given, received at `now_ms`, each with its one delivery, ids from
    `first_id`."""
    accepted = [(event(n, now_ms), [d]) for n, d in rows]
    await writer.submit(lambda conn: sql.insert_events(conn, accepted, first_id, now_ms))
