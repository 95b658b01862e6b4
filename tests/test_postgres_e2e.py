"""The real daemon on PostgreSQL (PRODUCT.md 5), as separate processes against the simulated
X: delivery end to end; kill -9 of a daemon that holds leases, after which another daemon
delivers its work once the leases ran out; the database lost and back while running; a
database that cannot be reached at start."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from conftest import seed_config
from pgproc import PASSWORD, PostgresServer, own_server, pg_server, pg_url
from postbackd.store.postgres.migrations import MIGRATIONS
from procs import (
    Proc,
    client,
    conversions,
    daemon_env,
    key_env,
    postbackd,
    start_daemon,
    start_mock,
    wait_for,
)
from redisproc import free_port
from test_delivery import FAST_RETRY, event, hashed, idfa, ingest, settled
from test_postgres_store import schema_3_store

__all__ = ["own_server", "pg_server", "pg_url"]  # fixtures

SLOTS = 4  # x_max_connections of the daemon killed: what it can have at X at once
LEASE_S = 3  # database_url's lease_s: the dead daemon's work goes out again after this


async def test_a_daemon_on_postgresql_delivers_and_records_each_claim(
    tmp_path: Path, pg_url: str
) -> None:
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url, database_url=pg_url, **FAST_RETRY)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            answer = await ingest(api, [event(app_id, n) for n in range(20)])
            assert answer["accepted"] == 20
            # A repeat is a duplicate: stored (and sent) once.
            assert (await ingest(api, [event(app_id, 3)]))["accepted"] == 0
            done = await settled(api, 20)
            assert {d["state"] for d in done} == {"delivered"}
            details = await api.ok("GET", "/api/v1/events/ev-3")
            assert [d["state"] for d in details["deliveries"]] == ["delivered"]
            assert len(details["claims"]) == 1
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert sorted(received) == sorted(hashed(idfa(n).upper()) for n in range(20))
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
        await mock.kill()


async def test_kill_9_during_an_upgrade_keeps_the_old_schema_and_the_next_start_finishes_it(
    tmp_path: Path, pg_url: str
) -> None:
    # Migration 4 rewrites every delivery; a daemon killed meanwhile must leave the database
    # at schema 3, whole, and the next start must upgrade it.
    rows = 300_000
    await schema_3_store(pg_url, rows)
    mock = await start_mock()
    env = daemon_env(tmp_path / "data", mock.url, database_url=pg_url)
    daemon = await Proc.spawn(postbackd("serve"), env)
    try:
        await wait_for(lambda: daemon.said("migrating the database schema to version 4"), 30)
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        conn = await asyncpg.connect(pg_url)
        try:
            version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
            assert version == 3, "the kill came too late to test anything"
            assert not await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_name = 'deliveries' AND column_name = 'event_ref'"
            )
        finally:
            await conn.close()

        daemon = await start_daemon(tmp_path / "data", mock.url, database_url=pg_url)
        async with client(daemon) as api:
            details = await api.ok("GET", "/api/v1/events/ev-1")
            assert [d["id"] for d in details["deliveries"]] == [rows]
        assert await daemon.stop() == 0
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == len(
                MIGRATIONS
            )
            matched = await conn.fetchval(
                "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_ref"
                " WHERE e.event_id = d.event_id"
            )
            assert matched == rows
        finally:
            await conn.close()
    finally:
        await daemon.kill()
        await mock.kill()


async def test_kill_9_of_a_daemon_with_leases_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    # Slow answers and few connections: the daemon holds far more leased deliveries than it
    # has at X when it dies.
    mock = await start_mock("--latency", "fixed:100")
    url = f"{pg_url}?lease_s={LEASE_S}"
    settings = {**FAST_RETRY, "x_max_connections": SLOTS, "x_account_max_in_flight": SLOTS}
    first = await start_daemon(tmp_path / "a", mock.url, database_url=url, **settings)
    second = None
    count = 400
    try:
        await feed_then_kill(first, mock, count)
        sent_before = len(await conversions(mock))
        assert sent_before < count, "the kill came too late to test anything"

        second = await start_daemon(tmp_path / "b", mock.url, database_url=url, **settings)
        async with client(second) as api:
            await settled(api, count, timeout_s=120)
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert {hashed(idfa(n).upper()) for n in range(count)} <= set(received), (
            "an accepted event never reached X"
        )
        duplicates = len(received) - len(set(received))
        # Only what the dead daemon had at X (or answered, not yet recorded) goes twice.
        assert duplicates <= 2 * SLOTS + 32, duplicates
    finally:
        await first.kill()
        if second is not None:
            await second.kill()
        await mock.kill()


async def test_a_running_daemon_takes_over_an_account_it_never_saw(
    tmp_path: Path, pg_url: str
) -> None:
    # The second daemon runs before any event exists: it learns the account's lane from the
    # store's rescan (once per lease length), not from its own start or its own ingest.
    mock = await start_mock("--latency", "fixed:100")
    url = f"{pg_url}?lease_s={LEASE_S}"
    settings = {**FAST_RETRY, "x_max_connections": SLOTS, "x_account_max_in_flight": SLOTS}
    second = await start_daemon(tmp_path / "b", mock.url, database_url=url, **settings)
    first = await start_daemon(tmp_path / "a", mock.url, database_url=url, **settings)
    count = 400
    try:
        await feed_then_kill(first, mock, count)
        assert len(await conversions(mock)) < count, "the kill came too late to test anything"
        async with client(second) as api:
            await settled(api, count, timeout_s=120)
        received = {r["params"]["hashed_device_id"] for r in await conversions(mock)}
        assert {hashed(idfa(n).upper()) for n in range(count)} <= received
    finally:
        await first.kill()
        await second.kill()
        await mock.kill()


async def feed_then_kill(daemon: Any, mock: Any, count: int) -> None:
    """The seed's configuration and `count` events through `daemon`, killed with -9 once X
    has its first claims."""
    async with client(daemon) as api:
        app_id = (await seed_config(api))["app"]["id"]
        for start in range(0, count, 100):
            batch = [event(app_id, n) for n in range(start, start + 100)]
            assert (await ingest(api, batch))["accepted"] == 100
        await wait_for(lambda: _at_least(mock, 20), timeout_s=30)
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()


async def _at_least(mock: Any, n: int) -> bool:
    return len(await conversions(mock)) >= n


async def test_a_lost_database_is_503_and_readyz_until_it_returns(
    tmp_path: Path, own_server: PostgresServer
) -> None:
    url = await own_server.create_database()
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url, database_url=url, **FAST_RETRY)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            assert (await ingest(api, [event(app_id, 1)]))["accepted"] == 1
            await settled(api, 1)
            await asyncio.to_thread(own_server.stop, "immediate")
            timeout = aiohttp.ClientTimeout(total=60)
            status, body = await api.request(
                "POST", "/track/json", json=[event(app_id, 2)], timeout=timeout
            )
            assert status == 503, body
            assert body["error"]["code"] == "store_unavailable"

            async def readyz() -> int:
                status, _ = await api.request("GET", "/readyz", auth=False, timeout=timeout)
                return status

            await wait_for(lambda: _is(readyz, 503), timeout_s=30)
            await asyncio.to_thread(own_server.start)
            await wait_for(lambda: _is(readyz, 200), timeout_s=60)
            assert (await ingest(api, [event(app_id, 2)]))["accepted"] == 1
            await settled(api, 2)
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
        await mock.kill()


async def _is(probe: Any, status: int) -> bool:
    return bool(await probe() == status)


async def test_an_unreachable_database_at_start_is_one_line_and_a_non_zero_exit(
    tmp_path: Path,
) -> None:
    url = f"postgresql://postbackd:{PASSWORD}@127.0.0.1:{free_port()}/postbackd"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postbackd", "serve",
        env={**key_env(), "PATH": "/usr/bin:/bin", "POSTBACKD_LISTEN": "127.0.0.1:0",
             "POSTBACKD_DATA_DIR": str(tmp_path / "data"), "POSTBACKD_DATABASE_URL": url},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode != 0
    text = (out + err).decode()
    assert PASSWORD not in text
    assert "Traceback" not in text
    [line] = [ln for ln in text.splitlines() if "cannot reach the database" in ln]
    assert "postgresql://postbackd:***@127.0.0.1:" in line
