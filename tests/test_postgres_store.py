"""The PostgreSQL store's own rules, against a real PostgreSQL 15 (tests/pgproc.py): its
migrations, a database that cannot be reached, leases shared by daemons, fairness per lane,
a server lost and back, and configuration notices. What both stores share is in the store
contract tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from factories import account, app
from pgproc import PASSWORD, PostgresServer, own_server, pg_server, pg_url
from postbackd.delivery.model import Attribution, Claim, Result
from postbackd.errors import StoreUnavailable
from postbackd.store.base import STORE_ERROR_KINDS, LaneRows
from postbackd.store.postgres import DEFAULT_LEASE_S, BadDatabaseUrl, connect, own_parameters
from postbackd.store.postgres.connect import DatabaseUnreachable
from postbackd.store.postgres.leases import split_fairly
from postbackd.store.postgres.migrations import MIGRATIONS, MigrationError, checksum, migrate
from postbackd.store.postgres.store import PostgresStore
from postbackd.store.url import DatabaseUrl
from redisproc import free_port
from storekit import APP, delivery, event

__all__ = ["own_server", "pg_server", "pg_url"]  # fixtures

RELEASED = {
    1: "ce6341a58d4f2bdd8ae9505c7aa778687cc3f4b357f4368c07388afb029367b1",
    2: "ed35b9f9ceae8f885f531cb891ca226d1e7f3052e41548621f7d29c25d732264",  # rate budgets
    3: "a663f137af3439a0de116c8d402f8e18c7f482c94010973d8b2af043d1962599",  # lease indexes
    4: "d44ac05c922eb46cc555bd661aa49164155bd428fd95a3c1fe3c1a7ebc47bae1",  # event_ref
}

LEASE_S = 5.0
# A lane position past every row: what a daemon passes once it read everything.
END = (2**62, 0)


def test_released_migrations_never_change() -> None:
    for version, expected in RELEASED.items():
        assert checksum(MIGRATIONS[version - 1]) == expected, (
            f"PostgreSQL migration {version} was released and must not change: append one"
        )
    assert len(MIGRATIONS) == len(RELEASED), "a new migration needs its checksum in RELEASED"


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Opens PostgresStores on the test's database (each one a daemon); closes them all."""
    opened: list[PostgresStore] = []

    async def open_store(**kw: Any) -> PostgresStore:
        store = PostgresStore(DatabaseUrl.parse(pg_url), lease_s=LEASE_S, **kw)
        await store.open()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def test_migrations_apply_once_and_refuse_an_edited_one(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await migrate(conn) == len(MIGRATIONS)
        assert await migrate(conn) == len(MIGRATIONS)  # nothing left to do
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        assert [(r[0], r[1]) for r in rows] == [
            (v, checksum(s)) for v, s in enumerate(MIGRATIONS, start=1)
        ]
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match=r"migration 1 .* differs"):
            await migrate(conn)
        await conn.execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = 1",
            checksum(MIGRATIONS[0]),
        )
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, 'later')",
            len(MIGRATIONS) + 1,
        )
        with pytest.raises(MigrationError, match="newer than this postbackd"):
            await migrate(conn)
    finally:
        await conn.close()


async def at_schema(conn: asyncpg.Connection, version: int) -> None:
    """An empty database as the migrations up to `version` left it, recorded as applied."""
    await conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
        " checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        await conn.execute(script)
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
            number,
            checksum(script),
        )


async def schema_3_store(pg_url: str, rows: int) -> None:
    """A database at schema 3 (before deliveries named their events' rows) holding `rows`
    young events, each with a delivered delivery; delivery n belongs to the event numbered
    from the other end, so that ids alone cannot pair them."""
    now_ms = int(time.time() * 1000)  # young: retention keeps them
    body = b'{"received_at_ms": %d, "conversion_time_ms": %d}' % (now_ms, now_ms)
    conn = await asyncpg.connect(pg_url)
    try:
        await at_schema(conn, 3)
        await conn.execute(
            "INSERT INTO events (event_id, app_id, event_name, received_at_ms, body)"
            " SELECT 'ev-' || n, 'a', 'purchase', $2, $3 FROM generate_series(1, $1) n",
            rows,
            now_ms,
            body,
        )
        await conn.execute(
            "INSERT INTO deliveries (id, event_id, postback_id, app_id, network, event_name,"
            " x_app_id, conversion_type, x_account_id, retry_attempts, state, first_due_ms,"
            " due_ms, updated_ms, lane) SELECT n, 'ev-' || ($1 + 1 - n), 'p', 'a', 'x_ios',"
            " 'purchase', '1', 'PURCHASE', 'acct', 3, 'delivered', 1, 1, 1, 'acct'"
            " FROM generate_series(1, $1) n",
            rows,
        )
    finally:
        await conn.close()


async def test_deliveries_of_a_database_before_event_refs_name_their_events_rows(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbackd.store.postgres.migrations")
    # A database at schema 3 (before deliveries carried event_ref): migration 4 fills it in.
    conn = await asyncpg.connect(pg_url)
    try:
        await at_schema(conn, 3)
        refs = [
            await conn.fetchval(
                "INSERT INTO events (event_id, app_id, event_name, received_at_ms, body)"
                " VALUES ($1, 'a', 'purchase', 1, '{}') RETURNING id",
                name,
            )
            for name in ("e1", "e2")
        ]
        await conn.executemany(
            "INSERT INTO deliveries (id, event_id, postback_id, app_id, network, event_name,"
            " x_app_id, conversion_type, x_account_id, retry_attempts, state, first_due_ms,"
            " due_ms, updated_ms) VALUES ($1, $2, 'p', 'a', 'x_ios', 'purchase', '1',"
            " 'PURCHASE', 'acct', 3, 'ready', 1, 1, 1)",
            [(1, "e2"), (2, "e1")],
        )
        assert await migrate(conn) == len(MIGRATIONS)
        rows = await conn.fetch("SELECT event_ref FROM deliveries ORDER BY id")
        assert [r[0] for r in rows] == [refs[1], refs[0]]
        assert "migrating the database schema to version 4" in caplog.text
    finally:
        await conn.close()


async def test_an_upgrade_longer_than_the_command_timeout_finishes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool's command timeout is for requests; migration 4 rewrites every delivery and
    # takes as long as the table is big. With the timeout far below that, it still finishes.
    monkeypatch.setattr(connect, "COMMAND_TIMEOUT_S", 0.05)
    rows = 200_000
    await schema_3_store(pg_url, rows)
    await (await connect.open_pool(DatabaseUrl.parse(pg_url))).close()
    conn = await asyncpg.connect(pg_url)  # the checks with no such timeout
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == len(MIGRATIONS)
        assert await conn.fetchval("SELECT count(event_ref) FROM deliveries") == rows
    finally:
        await conn.close()


async def test_daemons_starting_together_migrate_once(pg_url: str) -> None:
    connections = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(c) for c in connections))
        count = await connections[0].fetchval("SELECT COUNT(*) FROM schema_migrations")
        assert count == len(MIGRATIONS)
    finally:
        for c in connections:
            await c.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://postbackd:{pw}@127.0.0.1:{free}/postbackd", "connect"),
        ("postgresql://postbackd:wrong-{pw}@127.0.0.1:{port}/postgres", "password"),
        ("postgresql://postbackd:{pw}@127.0.0.1:{port}/no_such_database", "does not exist"),
    ],
)
async def test_an_unreachable_database_is_one_line_without_the_password(
    pg_server: PostgresServer, url: str, reason: str
) -> None:
    given = url.format(pw=PASSWORD, free=free_port(), port=pg_server.port)
    store = PostgresStore(DatabaseUrl.parse(given))
    with pytest.raises(DatabaseUnreachable) as caught:
        await store.open()
    message = str(caught.value)
    assert "cannot reach the database postgresql://postbackd:***@127.0.0.1:" in message
    assert "database_url" in message
    assert reason in message.lower()
    assert PASSWORD not in message
    assert "\n" not in message
    await store.close()


def accepted_rows(n: int, lane: str, due_ms: int, first: int = 0) -> list[Any]:
    return [(event(first + i), [delivery(lane, due_ms)]) for i in range(n)]


def ids_of(found: list[LaneRows]) -> dict[str, list[int]]:
    return {lane: [r[0] for r in rows] for lane, rows, _ in found}


async def test_accept_stores_each_event_once(stores: Callable[..., Any]) -> None:
    a, b = await stores(), await stores()
    batch = accepted_rows(3, "acct", 1_000)
    stored = await a.accept([*batch, batch[0]], 1_000)
    assert stored.fresh == [True, True, True, False]
    # The same events through another daemon: duplicates, stored once.
    assert (await b.accept(batch, 2_000)).fresh == [False, False, False]
    assert await a.count_by_state(1_000) == {"held": 0, "dead": 0, "scheduled": 0, "ready": 3}


async def test_a_lease_keeps_a_delivery_from_other_daemons_until_it_runs_out(
    stores: Callable[..., Any],
) -> None:
    a, b = await stores(), await stores()
    await a.accept(accepted_rows(10, "acct", 1_000), 1_000)
    now = 2_000
    first = ids_of(await a.lease_due([("acct", (0, 0), 4)], now, 100))["acct"]
    assert len(first) == 4
    rest = ids_of(await b.lease_due([("acct", (0, 0), 100)], now, 100))["acct"]
    assert sorted(rest) == sorted(set(range(1, 11)) - set(first))
    # Everything is leased: nothing for anyone past what it read, until a lease runs out.
    assert ids_of(await b.lease_due([("acct", END, 100)], now, 100)) == {"acct": []}
    assert ids_of(await a.lease_due([("acct", END, 100)], now, 100)) == {"acct": []}
    # Its own rows a daemon reads again only from before them, as from the embedded store.
    assert ids_of(await b.lease_due([("acct", (0, 0), 100)], now, 100))["acct"] == rest
    # a renews; b does not: only b's leases run out.
    await a.renew_leases(now + 4_000)
    later = now + int(LEASE_S * 1000) + 1
    taken = ids_of(await a.lease_due([("acct", END, 100)], later, 100))["acct"]
    assert sorted(taken) == sorted(rest)
    # A result ends the lease; a release gives the delivery back at once.
    await a.write_results([result(first[0], "delivered")], later)
    await a.release_leases([first[1]])
    again = ids_of(await b.lease_due([("acct", END, 100)], later, 100))["acct"]
    assert again == [first[1]]


async def test_a_row_read_again_by_its_holder_is_not_written_again(
    stores: Callable[..., Any], pg_url: str
) -> None:
    """A rewind makes the loader read rows it holds once more: they come back as they are,
    without a new row version each (their lease runs on, renewed with the others)."""
    a = await stores()
    await a.accept(accepted_rows(3, "acct", 1_000), 1_000)
    first = ids_of(await a.lease_due([("acct", (0, 0), 100)], 2_000, 100))["acct"]
    conn = await asyncpg.connect(pg_url)
    try:
        versions = "SELECT id, xmin::text, lease_expires_ms FROM deliveries ORDER BY id"
        before = await conn.fetch(versions)
        again = ids_of(await a.lease_due([("acct", (0, 0), 100)], 3_000, 100))["acct"]
        assert sorted(again) == sorted(first)
        assert await conn.fetch(versions) == before
    finally:
        await conn.close()


async def test_the_next_due_time_of_a_lane_includes_when_a_lease_runs_out(
    stores: Callable[..., Any],
) -> None:
    a, b = await stores(), await stores()
    await a.accept(accepted_rows(2, "acct", 1_000), 1_000)
    await a.accept(accepted_rows(1, "acct", 50_000, first=10), 1_000)
    await a.lease_due([("acct", (0, 0), 100)], 2_000, 100)
    ((_, rows, next_due),) = await b.lease_due([("acct", (0, 0), 100)], 2_000, 100)
    assert rows == []
    assert next_due == 2_000 + int(LEASE_S * 1000)  # a's leases, before the row due at 50 s


async def test_each_lane_gets_its_share_of_a_batch(stores: Callable[..., Any]) -> None:
    a = await stores()
    await a.accept(accepted_rows(300, "big", 1_000), 1_000)
    await a.accept(accepted_rows(5, "small", 1_000, first=1_000), 1_000)
    await a.accept(accepted_rows(40, "mid", 1_000, first=2_000), 1_000)
    reads = [("big", (0, 0), 300), ("small", (0, 0), 300), ("mid", (0, 0), 300)]
    found = {lane: len(rows) for lane, rows, _ in await a.lease_due(reads, 2_000, 100)}
    assert found == {"big": 55, "small": 5, "mid": 40}


def test_split_fairly() -> None:
    assert split_fairly([300, 5, 40], 100) == [55, 5, 40]
    assert split_fairly([10, 10, 10], 100) == [10, 10, 10]
    assert split_fairly([50, 50, 50], 100) == [34, 33, 33]
    assert split_fairly([0, 7], 3) == [0, 3]
    assert sum(split_fairly([1000] * 7, 100)) == 100


def result(delivery_id: int, state: str, **kw: Any) -> Result:
    values: dict[str, Any] = {
        "delivery_id": delivery_id,
        "state": state,
        "reason": None,
        "attempts": 1,
        "due_ms": 0,
        "account_id": "acct",
        "last_status": 200,
        "last_error": None,
    } | kw
    return Result(**values)


async def test_results_queued_together_are_written_as_one_after_the_other(
    stores: Callable[..., Any],
) -> None:
    """Jobs queued while a commit runs go in one transaction, in one statement per table:
    what they leave is what writing them one after the other leaves."""
    a = await stores()
    await a.accept(accepted_rows(2, "acct", 1_000), 1_000)
    late, early = "2026-11-21T08:00:00.000Z", "2026-11-20T08:00:00.000Z"

    def seen(event_id: str, network: str, tracker: str, when: str) -> Attribution:
        return Attribution(APP, "dev-1", network, tracker, "CLICK", when, event_id)

    claim = Claim("ev-0", APP, "x_ios", "kotr1", "attributed", "click", "CLICK", late,
                  "Winter", b"[]")  # fmt: skip
    # Submitted back to back: the writer takes them in one commit.
    first = a.write_results(
        [result(1, "scheduled", due_ms=9_000, claim=claim,
                attribution=seen("ev-0", "x_ios", "kotr1", late))],
        2_000,
    )  # fmt: skip
    second = a.write_results(
        [result(1, "delivered", attempts=2, attribution=seen("ev-0", "x_and", "kotr2", early)),
         result(2, "delivered", attribution=seen("ev-1", "x_and", "kotr3", late))],
        3_000,
    )  # fmt: skip
    await asyncio.gather(first, second)
    details = await a.event_details("ev-0", 3_000)
    assert [(d["state"], d["attempts"]) for d in details["deliveries"]] == [("delivered", 2)]
    assert [c["tracker_id"] for c in details["claims"]] == ["kotr1"]
    # The latest engagement wins; of two equally late, the later result.
    assert await a.device_attributions(APP, ["dev-1"]) == {"dev-1": ("x_and", late, 3_000)}
    assert len(await a.list_attributions(APP, None, None, 10)) == 3


async def test_a_configuration_change_reaches_the_other_daemon(
    stores: Callable[..., Any],
) -> None:
    a, b = await stores(), await stores()
    await b.load_index()
    seen: asyncio.Queue[int] = asyncio.Queue()
    b.watch_config(seen.put_nowait)
    mine: list[int] = []
    a.watch_config(mine.append)
    await asyncio.sleep(0.2)  # b listening
    version = await a.apply([("insert", app()), ("insert", account())])
    assert await asyncio.wait_for(seen.get(), timeout=10) == version
    assert (await b.load_index()).apps.keys() == {app().id}
    assert mine == []  # a made it: no notice to itself


async def test_a_lost_server_is_store_unavailable_until_it_returns(
    own_server: PostgresServer,
) -> None:
    url = await own_server.create_database()
    errors: list[str] = []
    store = PostgresStore(DatabaseUrl.parse(url), on_error=errors.append)
    await store.open()
    try:
        await store.accept(accepted_rows(2, "acct", 1_000), 1_000)
        assert store.healthy
        await asyncio.to_thread(own_server.stop, "immediate")
        with pytest.raises(StoreUnavailable) as caught:
            await store.accept(accepted_rows(1, "acct", 1_000, first=5), 1_000)
        assert caught.value.kind == "io_error"
        assert caught.value.status == 503
        assert not store.healthy
        failed = store.write_results([result(1, "delivered")], 2_000)
        with pytest.raises(StoreUnavailable):
            await failed
        assert set(errors) == {"io_error"}
        assert set(errors) <= set(STORE_ERROR_KINDS)
        await asyncio.to_thread(own_server.start)
        # The pool connects again by itself: the next write succeeds, and nothing of the
        # failed ones was stored.
        for _ in range(100):
            try:
                stored = await store.accept(accepted_rows(1, "acct", 1_000, first=5), 1_000)
                assert stored.fresh == [True]
                break
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        assert store.healthy
        counts = await store.count_by_state(1_000)
        assert counts["ready"] == 3
    finally:
        await store.close()


async def test_configuration_notices_resume_after_the_server_returns(
    own_server: PostgresServer,
) -> None:
    database = DatabaseUrl.parse(await own_server.create_database())
    a, b = PostgresStore(database), PostgresStore(database)
    await a.open()
    await b.open()
    try:
        await b.load_index()
        seen: asyncio.Queue[int] = asyncio.Queue()
        b.watch_config(seen.put_nowait)
        await asyncio.to_thread(own_server.stop, "immediate")
        await asyncio.to_thread(own_server.start)
        # Made while b may not be listening yet: b finds it by the version check after it
        # connects again, or by the notice.
        for _ in range(100):
            try:
                version = await a.apply([("insert", app())])
                break
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        assert await asyncio.wait_for(seen.get(), timeout=30) == version
    finally:
        await a.close()
        await b.close()


def test_lease_s_is_taken_off_the_url_and_checked() -> None:
    given = DatabaseUrl.parse(f"postgresql://u:{PASSWORD}@db:5432/pb?lease_s=12&sslmode=disable")
    database, lease_s = own_parameters(given)
    assert lease_s == 12.0
    assert database.url == f"postgresql://u:{PASSWORD}@db:5432/pb?sslmode=disable"
    assert own_parameters(DatabaseUrl.parse("postgresql://db/pb"))[1] == DEFAULT_LEASE_S
    for bad in ("0.5", "soon", "nan"):
        with pytest.raises(BadDatabaseUrl, match="database_url: lease_s") as caught:
            own_parameters(DatabaseUrl.parse(f"postgresql://u:{PASSWORD}@db/pb?lease_s={bad}"))
        assert PASSWORD not in str(caught.value)
