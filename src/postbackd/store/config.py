"""Configuration entities in SQLite: rows map one-to-one to the dataclasses of `model`; an X
account's tokens are stored through the `Sealer` (encrypted when `secret_key` is set)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import aiosqlite
import orjson

from postbackd.index import Index
from postbackd.model import App, Campaign, Entity, Postback, Segment, Tracker, XAccount
from postbackd.store.base import Change
from postbackd.store.sealing import SEALED_COLUMNS, Sealer

TABLES: Final[dict[type[Entity], str]] = {
    App: "apps",
    XAccount: "x_accounts",
    Campaign: "campaigns",
    Segment: "segments",
    Tracker: "trackers",
    Postback: "postbacks",
}
# Parents before children, so that inserts and deletes respect the foreign keys.
_LOAD_ORDER: Final = (App, XAccount, Campaign, Segment, Tracker, Postback)


def _columns(cls: type[Entity]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_row(entity: Entity, sealer: Sealer) -> list[object]:
    row: list[object] = []
    sealed = isinstance(entity, XAccount)
    for name in _columns(type(entity)):
        value = getattr(entity, name)
        if sealed and name in SEALED_COLUMNS:
            value = sealer.seal(value)
        row.append(orjson.dumps(list(value)).decode() if isinstance(value, tuple) else value)
    return row


def _from_row(cls: type[Entity], row: Sequence[object], sealer: Sealer) -> Entity:
    values: dict[str, Any] = {}
    for f, value in zip(dataclasses.fields(cls), row, strict=True):
        if f.type == "bool":
            value = bool(value)
        elif f.type == "tuple[str, ...]":
            value = tuple(orjson.loads(str(value)))
        elif cls is XAccount and f.name in SEALED_COLUMNS:
            value = sealer.unseal(str(value))
        values[f.name] = value
    return cls(**values)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


async def load_index(conn: aiosqlite.Connection, sealer: Sealer) -> Index:
    loaded: dict[type[Entity], list[Entity]] = {}
    for cls in _LOAD_ORDER:
        sql = f"SELECT {_quoted(_columns(cls))} FROM {TABLES[cls]} ORDER BY rowid"
        async with conn.execute(sql) as cur:
            loaded[cls] = [_from_row(cls, row, sealer) for row in await cur.fetchall()]
    return Index(
        apps=loaded[App],  # type: ignore[arg-type]
        accounts=loaded[XAccount],  # type: ignore[arg-type]
        campaigns=loaded[Campaign],  # type: ignore[arg-type]
        segments=loaded[Segment],  # type: ignore[arg-type]
        trackers=loaded[Tracker],  # type: ignore[arg-type]
        postbacks=loaded[Postback],  # type: ignore[arg-type]
    )


async def apply(conn: aiosqlite.Connection, changes: Sequence[Change], sealer: Sealer) -> None:
    """Write the changes in one transaction: all of them or none."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for op, entity in changes:
            table = TABLES[type(entity)]
            cols = _columns(type(entity))
            if op == "insert":
                marks = ", ".join("?" for _ in cols)
                await conn.execute(
                    f"INSERT INTO {table} ({_quoted(cols)}) VALUES ({marks})",
                    _to_row(entity, sealer),
                )
            elif op == "update":
                sets = ", ".join(f'"{c}" = ?' for c in cols[1:])
                row = _to_row(entity, sealer)
                await conn.execute(f"UPDATE {table} SET {sets} WHERE id = ?", [*row[1:], row[0]])
            else:
                await conn.execute(f"DELETE FROM {table} WHERE id = ?", (entity.id,))
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
