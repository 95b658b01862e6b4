"""Several daemons on one PostgreSQL (PRODUCT.md 5), as processes against the simulated X:
a configuration change made through one daemon acts at the others with no restart
(LISTEN/NOTIFY), and so does a cancel; three daemons sharing the ingest claim every event
exactly once, and lose nothing when one of them is killed under load."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from conftest import Api, seed_config
from pgproc import pg_server, pg_url
from procs import Proc, client, conversions, start_daemon, start_mock, wait_for
from test_delivery import FAST_RETRY, event, hashed, idfa, ingest, settled

__all__ = ["pg_server", "pg_url"]  # fixtures


@dataclass
class Member:
    proc: Proc
    api: Api


@contextlib.asynccontextmanager
async def daemons(
    tmp_path: Path, mock: Proc, url: str, count: int, **settings: Any
) -> AsyncIterator[list[Member]]:
    """`count` daemons on one database, each with its own data dir and a client; those
    still running at the end stop cleanly."""
    procs: list[Proc] = []
    try:
        for n in range(count):
            # One at a time, kept as each starts: a start that fails still stops the others.
            procs.append(  # noqa: PERF401
                await start_daemon(tmp_path / f"d{n}", mock.url, database_url=url, **settings)
            )
        async with contextlib.AsyncExitStack() as stack:
            yield [Member(p, await stack.enter_async_context(client(p))) for p in procs]
        for proc in procs:
            if proc.proc.returncode is None:
                assert await proc.stop() == 0, proc.log
    finally:
        for proc in procs:
            await proc.kill()


async def configured(apis: list[Api]) -> str:
    """The seed's configuration made through the first daemon, once every daemon has it:
    its app's id."""
    app_id = str((await seed_config(apis[0]))["app"]["id"])

    async def all_know() -> bool:
        for api in apis:
            found = await api.ok("GET", "/api/v1/postbacks")
            if not found["items"]:
                return False
        return True

    await wait_for(all_know, timeout_s=20)
    return app_id


async def spread(apis: list[Api], app_id: str, count: int) -> None:
    """Events 0 to count - 1, in batches of 50 given to the daemons in turn (no load
    balancer in front of them)."""

    async def feed(api: Api, first: int) -> None:
        for start in range(first, count, len(apis) * 50):
            batch = [event(app_id, n) for n in range(start, min(start + 50, count))]
            assert (await ingest(api, batch))["accepted"] == len(batch)

    await asyncio.gather(*(feed(api, i * 50) for i, api in enumerate(apis)))


async def test_a_change_through_one_daemon_acts_at_the_other(tmp_path: Path, pg_url: str) -> None:
    mock = await start_mock()
    try:
        async with daemons(tmp_path, mock, pg_url, 2, **FAST_RETRY) as members:
            a, b = (m.api for m in members)
            # Both running: the configuration is made through a only.
            seeded = await seed_config(a)
            app_id, postback_id = seeded["app"]["id"], seeded["postback"]["id"]

            async def b_knows() -> bool:
                status, _ = await b.request("GET", f"/api/v1/postbacks/{postback_id}")
                return status == 200

            await wait_for(b_knows, timeout_s=20)
            answer = await ingest(b, [event(app_id, 1)])
            assert answer["accepted"] == 1
            await settled(b, 1)
            # And back: disabled through b, a makes no delivery for the next event.
            await b.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json={"enabled": False})

            async def a_disabled() -> bool:
                postback = await a.ok("GET", f"/api/v1/postbacks/{postback_id}")
                return postback["enabled"] is False

            await wait_for(a_disabled, timeout_s=20)
            await ingest(a, [event(app_id, 2)])
            details = await a.ok("GET", "/api/v1/events/ev-2")
            assert details["deliveries"] == []
        assert len(await conversions(mock)) == 1
    finally:
        await mock.kill()


async def test_a_cancel_through_one_daemon_drops_what_another_holds_unsent(
    tmp_path: Path, pg_url: str
) -> None:
    # a leases the deliveries and queues them behind its one request at a time to a slow X;
    # b, started afterwards, cancels them. Unless a learns of it, a goes on sending them,
    # and their delivered results override the cancel.
    await cancel_held_elsewhere(tmp_path, pg_url, listening=True)


async def test_a_cancel_noticed_while_a_daemon_was_not_listening_reaches_it_all_the_same(
    tmp_path: Path, pg_url: str
) -> None:
    # The same, with a's LISTEN connection cut just before the cancel (a database that goes
    # away for a moment): the notice is never delivered to a, which checks after reconnecting.
    await cancel_held_elsewhere(tmp_path, pg_url, listening=False)


async def cancel_held_elsewhere(tmp_path: Path, pg_url: str, *, listening: bool) -> None:
    mock = await start_mock("--latency", "fixed:500")
    one_at_a_time = {**FAST_RETRY, "x_account_max_in_flight": 1}
    try:
        async with daemons(tmp_path / "a", mock, pg_url, 1, **one_at_a_time) as (a,):
            seeded = await seed_config(a.api)
            app_id, postback_id = seeded["app"]["id"], seeded["postback"]["id"]
            await ingest(a.api, [event(app_id, n) for n in range(20)])
            async with daemons(tmp_path / "b", mock, pg_url, 1, **one_at_a_time) as (b,):
                if not listening:
                    cut = await asyncpg.connect(pg_url)
                    try:
                        cut_off = await cut.fetchval(
                            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name LIKE '%config-watch'"
                        )
                        assert cut_off == 2  # a's and b's
                    finally:
                        await cut.close()
                answer = await b.api.ok(
                    "POST", "/api/v1/deliveries/cancel", json={"postback_id": postback_id}
                )
                assert answer["cancelled"] > 2
                sent = len(await conversions(mock))
                await asyncio.sleep(4.0)  # a would send eight more meanwhile
                # The one at X when the cancel committed finishes; then, when a was not
                # listening, what it sent before its watch came back (a second or so).
                assert len(await conversions(mock)) <= sent + (1 if listening else 4)
            finished = await settled(a.api, 20 - len(await conversions(mock)), "cancelled")
            assert len(finished) + len(await conversions(mock)) == 20
    finally:
        await mock.kill()


async def test_three_daemons_claim_every_event_exactly_once(tmp_path: Path, pg_url: str) -> None:
    mock = await start_mock("--latency", "fixed:5")
    count = 600
    try:
        async with daemons(tmp_path, mock, pg_url, 3, **FAST_RETRY) as members:
            apis = [m.api for m in members]
            app_id = await configured(apis)
            await spread(apis, app_id, count)
            await settled(apis[2], count)
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert sorted(received) == sorted(hashed(idfa(n).upper()) for n in range(count))
    finally:
        await mock.kill()


SLOTS = 4  # x_max_connections of each daemon: what one can have at X at once
LEASE_S = 3  # database_url's lease_s: a dead daemon's work goes out again after this


async def test_kill_9_of_one_of_three_daemons_under_load_loses_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    # Slow answers: a daemon's results wait for their commit a while on a busy machine, and
    # what it had answered but not committed when killed goes out again (at-least-once).
    mock = await start_mock("--latency", "fixed:100")
    settings = {**FAST_RETRY, "x_max_connections": SLOTS, "x_account_max_in_flight": SLOTS}
    url = f"{pg_url}?lease_s={LEASE_S}"
    accepted: list[int] = []
    try:
        async with daemons(tmp_path, mock, url, 3, **settings) as members:
            apis = [m.api for m in members]
            app_id = (await seed_config(apis[0]))["app"]["id"]

            async def all_know() -> bool:
                return all([(await api.ok("GET", "/api/v1/postbacks"))["items"] for api in apis])

            await wait_for(all_know, timeout_s=20)

            async def feed(member: Member, first: int) -> None:
                for start in range(first, 900, 3 * 50):
                    numbers = list(range(start, start + 50))
                    try:
                        answer = await ingest(member.api, [event(app_id, n) for n in numbers])
                    except (aiohttp.ClientError, AssertionError):
                        return  # the daemon is gone: this batch was never acknowledged
                    assert answer["accepted"] == 50
                    accepted.extend(numbers)
                    await asyncio.sleep(0.02)

            feeding = asyncio.gather(*(feed(m, i * 50) for i, m in enumerate(members)))
            await wait_for(lambda: _at_least(mock, 60), timeout_s=30)
            victim = members[0].proc
            victim.proc.send_signal(signal.SIGKILL)
            await victim.proc.wait()
            await feeding
            assert len(await conversions(mock)) < len(accepted), "the kill came too late"
            # Hang detection only: a busy machine may take long over 900 slow answers.
            await settled(apis[1], len(accepted), timeout_s=120)
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert {hashed(idfa(n).upper()) for n in accepted} <= set(received), (
            "an accepted event never reached X"
        )
        duplicates = len(received) - len(set(received))
        # Only what the dead daemon had at X (or answered, not yet recorded) goes twice.
        assert duplicates <= 2 * SLOTS + 32, duplicates
    finally:
        await mock.kill()


async def _at_least(mock: Proc, n: int) -> bool:
    return len(await conversions(mock)) >= n
