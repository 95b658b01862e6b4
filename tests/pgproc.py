"""The real PostgreSQL server of the tests (benchmarks/pgserver.py, shared with the
benchmarks): one for the whole test run (`pg_server`), and a fresh database per test
(`pg_url`): a test sees no rows of another, and CREATE DATABASE from the template costs a few
milliseconds.
Where PostgreSQL is not installed the tests that need it are skipped, and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from benchmarks import pgserver
from benchmarks.pgserver import PASSWORD

__all__ = ["PASSWORD", "PostgresServer", "own_server", "pg_server", "pg_url"]


class PostgresServer(pgserver.PostgresServer):
    """The shared server, or the test skipped (failed in CI) where PostgreSQL is missing."""

    def __init__(self, port: int | None = None) -> None:
        try:
            super().__init__(port)
        except pgserver.PostgresMissing as missing:
            if os.environ.get("CI") == "true":
                pytest.fail(str(missing))
            pytest.skip(str(missing))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
        server.stop()
    finally:
        server.remove()


@pytest.fixture
async def pg_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database on the test run's server, dropped after the test."""
    url = await pg_server.create_database()
    try:
        yield url
    finally:
        await pg_server.drop_database(url)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start again."""
    server = PostgresServer()
    try:
        server.start()
        yield server
        server.stop("immediate")
    finally:
        server.remove()
