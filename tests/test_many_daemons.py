"""Many daemons on one PostgreSQL (PRODUCT.md 5), as an operator runs them: three `postbackd
serve` processes, each with its own data dir and port, on one database and against the
simulated X, behind no load balancer (the test spreads the ingest over them); and
`postbackd serve --workers`, several daemons on one port.

- every accepted event is claimed at X exactly once, whichever daemon took it, over HTTP or
  from a Redis Stream;
- a tracker created through one daemon attributes the next event ingested through another;
- two workers of `serve --workers 2` answer on one port; kill -9 of one under load loses
  nothing, and another worker takes its place; more than one worker on the embedded store
  is refused.

kill -9 of one of three separate daemons under load is in test_postgres_daemons.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from conftest import ACCOUNT_ID, Api, seed_config
from pgproc import pg_server, pg_url
from procs import (
    Proc,
    client,
    conversions,
    mock_patch,
    postbackd,
    start_daemon,
    start_mock,
    wait_for,
)
from redisproc import RedisServer
from test_delivery import FAST_RETRY, event, hashed, idfa, ingest
from test_one_daemon import START_TIMEOUT_S, assert_one_clear_line
from test_stream import add, all_acknowledged, metrics, redis, redis_server, stream_url

__all__ = ["pg_server", "pg_url", "redis", "redis_server"]  # fixtures

# x_max_connections and x_account_max_in_flight of a worker killed: what it can have at X
# at once.
SLOTS = 4
# database_url's lease_s: a dead worker's leased work goes out again after this.
LEASE_S = 3
# Hang detection only: three daemons, PostgreSQL and the simulated X share two cores.
SETTLE_S = 90.0


@contextlib.asynccontextmanager
async def daemons(
    tmp_path: Path, mock: Proc, url: str, *each: dict[str, Any], **common: Any
) -> AsyncIterator[list[Proc]]:
    """One daemon per `each` (its own settings beside `common`), on database `url`, each
    with a data dir of its own; killed afterwards whatever happened."""
    procs: list[Proc] = []
    try:
        for n, own in enumerate(each):
            procs.append(
                await start_daemon(tmp_path / f"d{n}", mock.url, database_url=url, **common, **own)
            )
        yield procs
    finally:
        for proc in procs:
            await proc.kill()


@contextlib.asynccontextmanager
async def clients(procs: Sequence[Proc]) -> AsyncIterator[list[Api]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(p)) for p in procs]


async def knows(api: Api, path: str, **fields: Any) -> None:
    """Until this daemon's configuration has the object at `path`, with `fields` (it reads
    its in-memory index: the change reached it)."""

    async def found() -> bool:
        status, body = await api.request("GET", path)
        return status == 200 and all(body.get(k) == v for k, v in fields.items())

    await wait_for(found, timeout_s=30)


async def delivered(api: Api, count: int) -> None:
    async def done() -> bool:
        return len(await settled_now(api)) >= count

    await wait_for(done, timeout_s=SETTLE_S, every_s=0.2)


async def settled_now(api: Api) -> list[dict[str, Any]]:
    page = await api.ok("GET", "/api/v1/deliveries?state=delivered&limit=10000")
    return page["items"]  # type: ignore[no-any-return]


async def received_at_x(mock: Proc) -> Counter[str]:
    return Counter(r["params"]["hashed_device_id"] for r in await conversions(mock))


def devices(numbers: Sequence[int]) -> Counter[str]:
    return Counter(hashed(idfa(n).upper()) for n in numbers)


@pytest.mark.timeout(300)
async def test_three_daemons_one_on_a_stream_claim_every_event_exactly_once(
    tmp_path: Path, pg_url: str, redis_server: RedisServer, redis: Redis
) -> None:
    mock = await start_mock()
    reader = {"event_stream_url": stream_url(redis_server)}
    try:
        async with (
            daemons(tmp_path, mock, pg_url, {}, {}, reader, **FAST_RETRY) as procs,
            clients(procs) as (a, b, c),
        ):
            seeded = await seed_config(a)
            app_id, postback_id = seeded["app"]["id"], seeded["postback"]["id"]
            for api in (b, c):
                await knows(api, f"/api/v1/postbacks/{postback_id}")
            count, batch = 300, 25
            # Round robin in batches: one to a, one to b, one onto the stream c reads.
            for start in range(0, count, batch):
                events = [event(app_id, n) for n in range(start, start + batch)]
                turn = start // batch % 3
                if turn == 2:
                    await add(redis, *events)
                else:
                    answer = await ingest((a, b)[turn], events)
                    assert answer["accepted"] == batch, answer
            await all_acknowledged(redis)
            await delivered(b, count)
            # Each daemon reads the same store: the same answer from every one of them.
            for api in (a, c):
                assert len(await settled_now(api)) == count
            sent = await received_at_x(mock)
            assert sent == devices(range(count)), "an event missing at X, or sent twice"
            for proc in procs:
                assert await proc.stop() == 0, proc.log
    finally:
        await mock.kill()


@pytest.mark.timeout(300)
async def test_a_tracker_created_through_one_daemon_attributes_at_another(
    tmp_path: Path, pg_url: str
) -> None:
    # X claims every conversion, engaged within the last day, in the campaigns named below.
    # Its engagements are CLICKs or VIEWs at random: the trackers' post-view window of a day
    # makes either attribute.
    mock = await start_mock("--claim-rate", "1", "--claim-max-age-days", "1")
    try:
        async with (
            daemons(tmp_path, mock, pg_url, {}, {}, **FAST_RETRY) as procs,
            clients(procs) as (a, b),
        ):
            seeded = await seed_config(a)
            app_id, first = seeded["app"]["id"], seeded["tracker"]
            await a.ok(
                "PATCH", f"/api/v1/trackers/{first['id']}", json={"post_view_window_days": 1}
            )
            await knows(b, f"/api/v1/trackers/{first['id']}", post_view_window_days=1)
            await mock_patch(mock, {"campaign_names": [f"Winter {first['id']}"]})
            assert (await ingest(b, [event(app_id, 1)]))["accepted"] == 1
            assert await attributed_to(b, "ev-1") == first["id"]

            # A new tracker, through a only; X's campaign names it from now on.
            second = await a.ok("POST", "/api/v1/trackers", 201, json={
                "app_id": app_id, "campaign_name": "Spring", "segment_name": "All",
                "name": "Spring reengagement", "network": "x_ios",
                "x_account_ids": [ACCOUNT_ID], "target_event": "PURCHASE",
                "event_matching_event": "purchase", "post_view_window_days": 1,
            })  # fmt: skip
            await mock_patch(mock, {"campaign_names": [f"Spring {second['id']}"]})
            await knows(b, f"/api/v1/trackers/{second['id']}")
            assert (await ingest(b, [event(app_id, 2)]))["accepted"] == 1
            assert await attributed_to(b, "ev-2") == second["id"]
            for proc in procs:
                assert await proc.stop() == 0, proc.log
    finally:
        await mock.kill()


async def attributed_to(api: Api, event_id: str) -> str:
    """The tracker the event's claim was attributed to, once its claim is recorded."""

    async def claim() -> dict[str, Any] | None:
        claims = (await api.ok("GET", f"/api/v1/events/{event_id}"))["claims"]
        return claims[0] if claims else None

    found = await wait_for(claim, timeout_s=SETTLE_S)
    assert found["outcome"] == "attributed", found
    return str(found["tracker_id"])


_METRICS_AT = re.compile(
    r"metrics of this process on (http://127\.0\.0\.1:\d+)/metrics worker=(\d)"
)


@pytest.mark.timeout(300)  # a busy machine: let the waits below name what did not happen
async def test_two_workers_answer_on_one_port_and_one_killed_loses_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    # Answers slow enough that each worker has requests at X, and leases on more.
    mock = await start_mock("--latency", "fixed:50")
    url = f"{pg_url}?lease_s={LEASE_S}"
    # The configuration first, through a daemon of its own: both workers load it at start.
    # (Made through one worker, it would reach the other a moment later, and an event that
    # worker took meanwhile would rightly have no delivery.)
    seeder = await start_daemon(tmp_path / "seed", mock.url, database_url=url)
    try:
        async with client(seeder) as api:
            app_id = (await seed_config(api))["app"]["id"]
        assert await seeder.stop() == 0, seeder.log
    finally:
        await seeder.kill()
    daemon = await start_daemon(
        tmp_path / "data", mock.url, database_url=url, workers=2,
        metrics_listen="127.0.0.1:0", x_max_connections=SLOTS, x_account_max_in_flight=SLOTS,
        **FAST_RETRY,
    )  # fmt: skip
    try:
        # Each worker's own metrics port, from its start-up line.
        ports = await wait_for(lambda: _metrics_ports(daemon), timeout_s=START_TIMEOUT_S)
        async with client(daemon) as api, aiohttp.ClientSession() as session:
            own = [Api(session, ports[n]) for n in (0, 1)]
            # Requests at once, each on a connection of its own: the kernel gives each
            # connection to one worker, whichever accepts it first.
            sent = 0

            async def one(n: int) -> None:
                async with aiohttp.ClientSession() as fresh:
                    answer = await ingest(Api(fresh, daemon.url), [event(app_id, n)])
                    assert answer["accepted"] == 1

            async def both_took_some() -> bool:
                nonlocal sent
                await asyncio.gather(*(one(n) for n in range(sent, sent + 8)))
                sent += 8
                taken = [await _accepted(worker) for worker in own]
                return all(taken) and sum(taken) == sent

            await wait_for(both_took_some, timeout_s=SETTLE_S, every_s=0)
            await delivered(api, sent)
            assert await received_at_x(mock) == devices(range(sent))

            # kill -9 of a worker under load: another takes its place on the same port, and
            # every accepted event still reaches X.
            count = sent + 400
            for start in range(sent, count, 50):
                batch = [event(app_id, n) for n in range(start, min(start + 50, count))]
                assert (await ingest(api, batch))["accepted"] == len(batch)
            await wait_for(lambda: _sent_at_least(mock, sent + 40), timeout_s=SETTLE_S)
        (victim, *_) = _children(daemon.proc.pid)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: daemon.said("a new worker takes its place"), SETTLE_S)
        await wait_for(lambda: daemon.said("ready: listening", times=3), SETTLE_S)
        async with client(daemon) as api:
            await delivered(api, count)
        received = await received_at_x(mock)
        expected = devices(range(count))
        assert not expected - received, "an accepted event never reached X"
        # Only what the dead worker had at X (at most SLOTS, its in-flight cap) or had
        # answered and not yet committed (what X answers it at that cap during one group
        # commit) is sent again once its leases ran out: the bound of test_crash.py.
        duplicates = sum((received - expected).values())
        assert duplicates <= 2 * SLOTS + 32, duplicates
        assert await daemon.stop() == 0, daemon.log
        assert "every worker has ended; exit status 0" in daemon.log
    finally:
        await daemon.kill()
        await mock.kill()


async def _sent_at_least(mock: Proc, count: int) -> bool:
    return len(await conversions(mock)) >= count


async def _metrics_ports(daemon: Proc) -> dict[int, str] | None:
    found = {int(m[2]): m[1] for m in _METRICS_AT.finditer(daemon.log)}
    return found if len(found) == 2 else None


async def _accepted(api: Api) -> float:
    return (await metrics(api)).get("postbackd_events_received_total{result=accepted}", 0.0)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(p) for p in f.read().split()]


async def test_more_than_one_worker_on_the_embedded_store_is_refused(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *postbackd("serve", "--workers", "2", "--listen", "127.0.0.1:0",
                   "--data-dir", str(tmp_path / "data")),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT_S)
    assert proc.returncode == 2
    assert_one_clear_line(err.decode(), "--workers 2", "PostgreSQL", "SQLite")
    # Nothing was started: no data dir, no token.
    assert not (tmp_path / "data").exists()
