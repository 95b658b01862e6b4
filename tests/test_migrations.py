"""Migrations are append-only: a released one never changes (a database made by it would
never get the change), so each released migration's text is pinned here by its checksum.
A change to the schema is a new migration at the end of the list, with a new line here."""

from __future__ import annotations

import hashlib

from postbackd.store.migrations import MIGRATIONS

RELEASED = {
    1: "6555b69bcaa1a2e2e81438dc4cc8b229d813557cc9a90868553e3ded24b0e03a",
    2: "790656287fbedc1e1ff63686b33c8cebaaef6478216c68800defd811e4fca4c8",
    3: "6f1860a231de3276d3ab9376bc9797825100a9ead5089a71ae8c9bd72935ffc7",
}


def checksum(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()


def test_released_migrations_never_change() -> None:
    for version, expected in RELEASED.items():
        assert checksum(MIGRATIONS[version - 1]) == expected, (
            f"migration {version} was released and must not change: append a new one"
        )


def test_every_migration_is_pinned() -> None:
    assert len(MIGRATIONS) == len(RELEASED), "a new migration needs its checksum in RELEASED"
