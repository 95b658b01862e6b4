"""Configuration entities on PostgreSQL: rows map one-to-one to the dataclasses of `model`
(booleans as BOOLEAN, lists as TEXT[], creation order by `seq`); an X account's tokens are
stored through the `Sealer` (encrypted when `secret_key` is set).

Every change bumps `config_version` in its own transaction and notifies the other daemons
(NOTIFY postbackd_config, delivered at commit): PRODUCT.md 5, "a configuration change made
through any daemon acts on the next event at every daemon".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from postbackd.index import Index
from postbackd.model import App, Campaign, Entity, Postback, Segment, Tracker, XAccount
from postbackd.store.base import Change
from postbackd.store.config import TABLES
from postbackd.store.sealing import SEALED_COLUMNS, SETTING, Sealer

if TYPE_CHECKING:
    from .connect import Conn

log = logging.getLogger(__name__)

CHANNEL: Final = "postbackd_config"
# Parents before children, so that inserts respect the foreign keys.
_LOAD_ORDER: Final = (App, XAccount, Campaign, Segment, Tracker, Postback)


def _columns(cls: type[Entity]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _to_row(entity: Entity, sealer: Sealer) -> list[object]:
    row: list[object] = []
    sealed = isinstance(entity, XAccount)
    for name in _columns(type(entity)):
        value = getattr(entity, name)
        if sealed and name in SEALED_COLUMNS:
            value = sealer.seal(value)
        row.append(list(value) if isinstance(value, tuple) else value)
    return row


def _from_row(cls: type[Entity], row: Sequence[object], sealer: Sealer) -> Entity:
    values: dict[str, Any] = {}
    for f, value in zip(dataclasses.fields(cls), row, strict=True):
        if f.type == "tuple[str, ...]":
            value = tuple(value)  # type: ignore[arg-type]
        elif cls is XAccount and f.name in SEALED_COLUMNS:
            value = sealer.unseal(str(value))
        values[f.name] = value
    return cls(**values)


async def load_index(conn: Conn, sealer: Sealer) -> tuple[Index, int]:
    """The configuration and its version, read in one snapshot."""
    loaded: dict[type[Entity], list[Entity]] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = int(await conn.fetchval("SELECT version FROM config_version"))
        for cls in _LOAD_ORDER:
            sql = f"SELECT {_quoted(_columns(cls))} FROM {TABLES[cls]} ORDER BY seq"
            loaded[cls] = [_from_row(cls, tuple(r), sealer) for r in await conn.fetch(sql)]
    index = Index(
        apps=loaded[App],  # type: ignore[arg-type]
        accounts=loaded[XAccount],  # type: ignore[arg-type]
        campaigns=loaded[Campaign],  # type: ignore[arg-type]
        segments=loaded[Segment],  # type: ignore[arg-type]
        trackers=loaded[Tracker],  # type: ignore[arg-type]
        postbacks=loaded[Postback],  # type: ignore[arg-type]
    )
    return index, version


async def apply(conn: Conn, changes: Sequence[Change], sealer: Sealer, origin: str) -> int:
    """Write the changes in the caller's transaction and bump the version; the new version.
    The notice carries the version and `origin` (the daemon that made it ignores it)."""
    for op, entity in changes:
        table = TABLES[type(entity)]
        cols = _columns(type(entity))
        row = _to_row(entity, sealer)
        if op == "insert":
            marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
            await conn.execute(f"INSERT INTO {table} ({_quoted(cols)}) VALUES ({marks})", *row)
        elif op == "update":
            sets = ", ".join(f'"{c}" = ${i}' for i, c in enumerate(cols[1:], start=2))
            await conn.execute(f"UPDATE {table} SET {sets} WHERE id = $1", *row)
        else:
            await conn.execute(f"DELETE FROM {table} WHERE id = $1", entity.id)
    version = int(
        await conn.fetchval("UPDATE config_version SET version = version + 1 RETURNING version")
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{version} {origin}")
    return version


async def config_version(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT version FROM config_version"))


async def seal_tokens(conn: Conn, sealer: Sealer) -> int:
    """Bring every X account row to the first key (or refuse to start, SecretKeyError);
    how many were rewritten. Every daemon does it at start: the row lock makes the others
    wait, then find nothing left to rewrite."""
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT id, access_token, access_token_secret FROM x_accounts ORDER BY seq FOR UPDATE"
        )
        # Every row must open with the keys given, even one that needs no rewrite.
        plain = [(r[0], sealer.unseal(r[1]), sealer.unseal(r[2])) for r in rows]
        if not sealer.enabled:
            log.warning(
                "%s is not set: X account tokens are stored in plain text in the database "
                "and in every copy or backup of it (docs/operations.md, Secrets at rest)",
                SETTING,
            )
            return 0
        stale = [
            (account_id, sealer.seal(token), sealer.seal(secret))
            for (account_id, token, secret), r in zip(plain, rows, strict=True)
            if sealer.needs_sealing(r[1]) or sealer.needs_sealing(r[2])
        ]
        if stale:
            await conn.executemany(
                "UPDATE x_accounts SET access_token = $2, access_token_secret = $3 WHERE id = $1",
                stale,
            )
    if stale:
        # PostgreSQL keeps the old row versions until VACUUM reuses their space; the plain
        # values stay in those pages (and in the WAL) until then.
        log.info(
            "X account tokens of %d account(s) encrypted with the first key of %s",
            len(stale),
            SETTING,
        )
    return len(stale)
