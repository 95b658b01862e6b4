"""The Redis Stream event source (PRODUCT.md 5, "Event streams"), against a real redis-server
and the real daemon and simulated X as an operator runs them.

An entry's `event` field is one Kochava event, as one item of `POST /track/json`: it reaches X
and is acknowledged only once committed; an entry that is not a valid event goes to the
dead-letter stream with its reason and field, acknowledged; a dead member's pending entries
are taken over; Redis lost while running is waited for; a bad `event_stream_url` or an
unreachable Redis at start is one clear line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

import test_store_failures
from conftest import Api, seed_config
from postbackd.stream.config import DEFAULT_CLAIM_IDLE_S, DEFAULT_DEAD_LETTER_MAXLEN, StreamConfig
from procs import Proc, client, conversions, start_daemon, start_mock, wait_for
from redisproc import RedisServer, free_port
from test_delivery import FAST_RETRY, deliveries, event, hashed, idfa, settled
from test_one_daemon import assert_one_clear_line, run_serve
from test_store_failures import fill_until_refused

STREAM = "postbackd:events"
GROUP = "postbackd"
DEAD = f"{STREAM}:dead"
# The data dir on a small tmpfs of its own, to fill (mounting one needs root, as in CI).
small_fs = test_store_failures.small_fs


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    async with redis_server.client() as r:
        yield r


def stream_url(server: RedisServer, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"stream": STREAM, **params}.items())
    return f"{server.url}?{query}"


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, url: str | None, mock: Proc | None = None
) -> AsyncIterator[tuple[Proc, Proc, Api]]:
    """The simulated X (or `mock`) and `postbackd serve` reading the stream at `url`."""
    x = mock or await start_mock()
    settings: dict[str, Any] = dict(FAST_RETRY)
    if url is not None:
        settings["event_stream_url"] = url
    try:
        daemon = await start_daemon(tmp_path / "data", x.url, **settings)
        try:
            async with client(daemon) as api:
                yield x, daemon, api
            # A clean stop: the reader ends with the daemon.
            assert await daemon.stop() == 0, daemon.log
        finally:
            await daemon.kill()
    finally:
        if mock is None:
            await x.kill()


async def add(redis: Redis, *events: dict[str, Any]) -> list[bytes]:
    return [await redis.xadd(STREAM, {"event": json.dumps(e)}) for e in events]


async def pending(redis: Redis) -> int:
    summary = await redis.xpending(STREAM, GROUP)
    return int(summary["pending"])


async def all_acknowledged(redis: Redis) -> None:
    """Until the group has read every entry and acknowledged it."""

    async def done() -> bool:
        (group,) = await redis.xinfo_groups(STREAM)
        return group["lag"] == 0 and await pending(redis) == 0

    await wait_for(done)


async def delivered_to_x(mock: Proc, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = await conversions(mock)
        return found if len(found) >= count else None

    return await wait_for(enough)  # type: ignore[no-any-return]


async def metrics(api: Api) -> dict[str, float]:
    """Each sample of `/metrics` by name and labels: `name{label=value}` or `name`."""
    async with api.session.get(api.base + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_events_added_to_the_stream_reach_x_and_are_acknowledged(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    url = stream_url(redis_server)
    async with running(tmp_path, url) as (mock, daemon, api):
        app_id = (await seed_config(api))["app"]["id"]
        await add(redis, *(event(app_id, n) for n in range(20)))
        # The same event twice (a producer retrying): a duplicate, acknowledged, sent once.
        await add(redis, event(app_id, 3))
        await settled(api, 20)
        await all_acknowledged(redis)
        sent = await delivered_to_x(mock, 20)
        await asyncio.sleep(0.3)
        assert len(await conversions(mock)) == len(sent) == 20
        seen = await metrics(api)
        assert seen["postbackd_stream_read_total"] == 21
        assert seen["postbackd_stream_acked_total"] == 21
        assert seen["postbackd_events_received_total{result=accepted}"] == 20
        assert seen["postbackd_events_received_total{result=duplicate}"] == 1
        assert not await redis.exists(DEAD)
    # A clean stop with nothing pending leaves the group: ended daemons do not pile up in it.
    assert await redis.xinfo_consumers(STREAM, GROUP) == []
    # The daemon says what it reads, without a password.
    assert f"reading events from stream {STREAM} of {redis_server.url}, group {GROUP}" in (
        daemon.log
    )


async def test_entries_that_are_not_valid_events_are_dead_lettered_and_acknowledged(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    async with running(tmp_path, stream_url(redis_server)) as (mock, _, api):
        app_id = (await seed_config(api))["app"]["id"]
        missing_data = {k: v for k, v in event(app_id, 2).items() if k != "data"}
        bad = {
            await redis.xadd(STREAM, {"event": b"{not json", "source": "crm"}): (
                "not_json", "event", "event is not JSON"),
            (await add(redis, missing_data))[0]: ("invalid", "data", "data is required"),
            (await add(redis, event("ko-no-such-app", 3)))[0]: (
                "unknown_app", "kochava_app_id", "'ko-no-such-app' is not a known app"),
            await redis.xadd(STREAM, {"payload": "{}"}): (
                "no_event", "event", "the entry has no event field"),
        }  # fmt: skip
        (good,) = await add(redis, event(app_id, 1))
        await all_acknowledged(redis)
        await settled(api, 1)

        moved = await redis.xrange(DEAD)
        assert len(moved) == 4
        originals = dict(await redis.xrange(STREAM))
        for _, fields in moved:
            entry_id = fields[b"entry_id"]
            reason, field, message = bad[entry_id]
            assert fields[b"field"] == field.encode(), fields
            assert message in fields[b"reason"].decode(), fields
            # The entry as it was, with why it was moved.
            assert {k: v for k, v in fields.items() if k not in (b"reason", b"field",
                    b"entry_id")} == originals[entry_id]  # fmt: skip
        assert good not in {f[b"entry_id"] for _, f in moved}
        seen = await metrics(api)
        for reason, _, _ in bad.values():
            assert seen[f"postbackd_stream_dead_lettered_total{{reason={reason}}}"] == 1
        assert seen["postbackd_stream_acked_total"] == 5
        # Never retried: nothing pending, nothing moved twice.
        await asyncio.sleep(1.0)
        assert await pending(redis) == 0
        assert await redis.xlen(DEAD) == 4
        assert len(await conversions(mock)) == 1


async def test_the_dead_letter_stream_keeps_its_newest_entries_up_to_its_cap(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    url = stream_url(redis_server, dead_letter_maxlen=3)
    async with running(tmp_path, url) as (_, _, api):
        app_id = (await seed_config(api))["app"]["id"]
        bad = [await redis.xadd(STREAM, {"event": f"{{not json {n}".encode()}) for n in range(8)]
        await add(redis, event(app_id, 1))
        await all_acknowledged(redis)
        # The newest three, in order; every one counted and acknowledged all the same.
        assert [f[b"entry_id"] for _, f in await redis.xrange(DEAD)] == bad[-3:]
        seen = await metrics(api)
        assert seen["postbackd_stream_dead_lettered_total{reason=not_json}"] == 8
        assert seen["postbackd_stream_acked_total"] == 9
        await settled(api, 1)


@contextlib.asynccontextmanager
async def seeded_group(tmp_path: Path, redis: Redis) -> AsyncIterator[tuple[Proc, str]]:
    """The simulated X and the app id of a configuration seeded by a daemon that read no
    stream; the group made empty, for members to be made by hand."""
    mock = await start_mock()
    try:
        async with running(tmp_path, None, mock) as (_, _, api):
            app_id = (await seed_config(api))["app"]["id"]
        await redis.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
        yield mock, app_id
    finally:
        await mock.kill()


async def test_a_dead_members_pending_entries_are_taken_over(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    async with seeded_group(tmp_path, redis) as (mock, app_id):
        # A member read five entries and died before acknowledging them.
        await add(redis, *(event(app_id, n) for n in range(5)))
        [[_, read]] = await redis.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=10)
        assert len(read) == 5 and await pending(redis) == 5
        url = stream_url(redis_server, claim_idle_s=0.5)
        async with running(tmp_path, url, mock) as (_, daemon, api):
            await settled(api, 5)
            await all_acknowledged(redis)
            assert len(await delivered_to_x(mock, 5)) == 5
            consumers = {
                c["name"]: c["pending"] for c in await redis.xinfo_consumers(STREAM, GROUP)
            }
            # Nothing left to it (it may be removed from the group already: see below).
            assert consumers.get(b"dead", 0) == 0
        assert "took over 5 event stream entries" in daemon.log


async def test_members_gone_long_since_with_nothing_pending_are_removed_from_the_group(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    async with seeded_group(tmp_path, redis) as (mock, app_id):
        # Two daemons that ended without leaving: "killed" had acknowledged what it read,
        # "stopped" left an entry pending.
        await add(redis, event(app_id, 1), event(app_id, 2))
        [[_, [(first, _)]]] = await redis.xreadgroup(GROUP, "killed", {STREAM: ">"}, count=1)
        await redis.xack(STREAM, GROUP, first)
        await redis.xreadgroup(GROUP, "stopped", {STREAM: ">"}, count=1)
        # Entries taken over after 0.2 s of silence; members removed after 2 s.
        url = stream_url(redis_server, consumer="live", claim_idle_s=0.2)
        async with running(tmp_path, url, mock) as (_, daemon, api):
            await settled(api, 1)  # the entry "stopped" left, taken over and committed

            async def members() -> set[bytes] | None:
                found = {c["name"] for c in await redis.xinfo_consumers(STREAM, GROUP)}
                return found if found == {b"live"} else None

            await wait_for(members, timeout_s=15)
            await all_acknowledged(redis)
            assert len(await delivered_to_x(mock, 1)) == 1
        removed = [line for line in daemon.log.splitlines() if "removed" in line]
        assert any("killed" in line for line in removed), daemon.log
        assert any("stopped" in line for line in removed), daemon.log


async def test_kill_9_while_reading_loses_nothing_and_another_member_goes_on(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    # PRODUCT.md 5: an entry is acknowledged only once its event is committed, and a dead
    # member's pending entries are taken over. A daemon killed mid-stream (entries read and
    # not acknowledged, entries not read yet, requests at X) loses nothing: the next one, a
    # member of another name as on another host, delivers every event.
    mock = await start_mock("--latency", "fixed:5")
    slots = 8
    settings = {**FAST_RETRY, "x_max_connections": slots, "x_account_max_in_flight": slots}
    data_dir = tmp_path / "data"
    daemon = await start_daemon(
        data_dir, mock.url, event_stream_url=stream_url(redis_server, consumer="one"), **settings
    )
    added: list[int] = []
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]

        async def produce() -> None:
            for batch in range(30):
                numbers = range(batch * 100, batch * 100 + 100)
                await add(redis, *(event(app_id, n) for n in numbers))
                added.extend(numbers)
                await asyncio.sleep(0.02)

        producing = asyncio.create_task(produce())
        await wait_for(lambda: _sent_at_least(mock, 300))
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        await producing
        assert len(await conversions(mock)) < len(added), "the kill came too late"

        url = stream_url(redis_server, consumer="two", claim_idle_s=0.5)
        daemon = await start_daemon(data_dir, mock.url, event_stream_url=url, **settings)
        async with client(daemon) as api:
            await all_acknowledged(redis)
            await settled(api, len(added))
            assert await deliveries(api, "dead") == []
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert {hashed(idfa(n).upper()) for n in added} <= set(received), "an event was lost"
        # Entries read again after the kill are duplicates at intake (same event id): only
        # requests in flight at the kill (or answered, not yet recorded) reach X twice.
        assert len(received) - len(set(received)) <= 2 * slots + 32
    finally:
        await daemon.kill()
        await mock.kill()


async def _sent_at_least(mock: Proc, count: int) -> bool:
    return len(await conversions(mock)) >= count


async def test_entries_the_store_refuses_stay_pending_and_are_read_again(
    small_fs: Path, redis_server: RedisServer, redis: Redis
) -> None:
    mock = await start_mock()
    url = stream_url(redis_server)
    daemon = await start_daemon(small_fs / "data", mock.url, event_stream_url=url, **FAST_RETRY)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            filler = await fill_until_refused(small_fs, api, app_id)
            ids = await add(redis, *(event(app_id, 50_000 + n) for n in range(5)))

            # Read, refused by the store, not acknowledged: they stay pending, and the daemon
            # reads its pending ones again rather than new ones (which wait in the stream).
            async def read_and_refused() -> bool:
                return await pending(redis) > 0 and "the store refused them" in daemon.log

            await wait_for(read_and_refused)
            await asyncio.sleep(1.0)
            (group,) = await redis.xinfo_groups(STREAM)
            assert group["pending"] > 0 and group["pending"] + group["lag"] == 5, group
            assert (await metrics(api))["postbackd_stream_acked_total"] == 0
            status, _ = await api.request("GET", "/api/v1/events/ev-50000")
            assert status == 404

            filler.unlink()  # space again: the pending entries are read again and committed
            await all_acknowledged(redis)
            for n in range(5):
                await api.ok("GET", f"/api/v1/events/ev-{50_000 + n}")
            assert (await metrics(api))["postbackd_stream_acked_total"] == len(ids)
    finally:
        await daemon.kill()
        await mock.kill()


async def test_a_clean_stop_with_entries_pending_leaves_them_to_the_next_member(
    small_fs: Path, redis_server: RedisServer, redis: Redis
) -> None:
    # SIGTERM while entries this member read are pending (the store refused them): the stop
    # acknowledges none of them, the member stays in the group with them, and the next
    # daemon (another consumer name, as every run has) takes them over and commits them.
    mock = await start_mock()
    data_dir = small_fs / "data"
    url = stream_url(redis_server, consumer="first")
    daemon = await start_daemon(data_dir, mock.url, event_stream_url=url, **FAST_RETRY)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            filler = await fill_until_refused(small_fs, api, app_id)
            await add(redis, *(event(app_id, 50_000 + n) for n in range(5)))

            async def read_and_refused() -> bool:
                return await pending(redis) > 0 and "the store refused them" in daemon.log

            await wait_for(read_and_refused)
        assert await daemon.stop() == 0, daemon.log
        held = await redis.xpending_range(STREAM, GROUP, min="-", max="+", count=10)
        assert held and {h["consumer"] for h in held} == {b"first"}
        assert "consumer first left as it is" not in daemon.log  # it stayed: nothing failed

        filler.unlink()
        url = stream_url(redis_server, consumer="second", claim_idle_s=0.5)
        daemon = await start_daemon(data_dir, mock.url, event_stream_url=url, **FAST_RETRY)
        async with client(daemon) as api:
            await all_acknowledged(redis)
            for n in range(5):
                await api.ok("GET", f"/api/v1/events/ev-{50_000 + n}")
            assert "took over" in daemon.log
    finally:
        await daemon.kill()
        await mock.kill()


async def test_redis_lost_while_running_is_waited_for_and_reading_resumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with running(tmp_path, stream_url(redis_server)) as (mock, daemon, api):
        app_id = (await seed_config(api))["app"]["id"]
        async with redis_server.client() as redis:
            await add(redis, *(event(app_id, n) for n in range(3)))
            await all_acknowledged(redis)
        redis_server.kill()

        def warnings() -> list[str]:
            return [line for line in daemon.log.splitlines() if "event stream" in line
                    and "reading paused" in line]  # fmt: skip

        async def warned() -> list[str]:
            return warnings()

        await wait_for(warned)
        # The daemon keeps serving, and ingest over HTTP does not need Redis.
        for _ in range(10):
            async with api.session.get(api.base + "/healthz") as r:
                assert r.status == 200
            await asyncio.sleep(0.2)
        await api.ok("POST", "/track/json", 202, json=[event(app_id, 100)])
        # Retried with backoff, logged once per minute.
        assert len(warnings()) == 1, warnings()
        assert redis_server.url in warnings()[0]

        # Back on the same port, empty (no persistence): the group is made again.
        await redis_server.start()
        async with redis_server.client() as redis:
            await add(redis, *(event(app_id, n) for n in range(10, 13)))
            await settled(api, 7)
            await all_acknowledged(redis)
        assert len(await delivered_to_x(mock, 7)) == 7
    assert "reachable again: reading resumes" in daemon.log


async def test_an_unreachable_redis_at_start_is_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    code, stderr = await run_serve({
        "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_EVENT_STREAM_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0?stream=events",
    })  # fmt: skip
    assert code != 0
    assert_one_clear_line(stderr, f"cannot read the event stream at redis://127.0.0.1:{port}/0")
    assert "s3cret-pw" not in stderr


async def test_a_malformed_event_stream_url_is_refused_naming_the_field(tmp_path: Path) -> None:
    code, stderr = await run_serve({
        "POSTBACKD_DATA_DIR": str(tmp_path / "data"),
        "POSTBACKD_LISTEN": "127.0.0.1:0",
        "POSTBACKD_EVENT_STREAM_URL": "redis://:s3cret-pw@127.0.0.1:6379/0?group=g",
    })  # fmt: skip
    assert code == 2
    assert_one_clear_line(stderr, "POSTBACKD_EVENT_STREAM_URL: the stream parameter is required")
    assert "s3cret-pw" not in stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0?stream=s", "expected a redis:// or rediss:// URL, not http://"),
        ("127.0.0.1:6379?stream=s", "expected a redis:// or rediss:// URL"),
        ("localhost:6379?stream=s", "expected a redis:// or rediss:// URL"),
        ("redis:///0?stream=s", "expected a host: redis://host:port/db?stream=NAME"),
        ("redis://h:99999/0?stream=s", "expected redis://host:port/db?stream=NAME"),
        ("redis://h/events?stream=s",
         "the path must be a database number, such as /0, not /events"),
        ("redis://h/0", "the stream parameter is required: ?stream=NAME"),
        ("redis://h/0?stream=", "parameter 'stream' is empty"),
        ("redis://h/0?stream=s&stream=t", "parameter 'stream' given twice"),
        ("redis://h/0?stream=s&grup=g",
         "unknown parameter 'grup' (known: stream, group, consumer, dead_letter, "
         "dead_letter_maxlen, claim_idle_s)"),
        ("redis://h/0?stream=s&dead_letter_maxlen=0",
         "dead_letter_maxlen must be a whole number of entries above 0, not '0'"),
        ("redis://h/0?stream=s&dead_letter_maxlen=1e3",
         "dead_letter_maxlen must be a whole number of entries above 0, not '1e3'"),
        ("redis://h/0?stream=s&dead_letter_maxlen=-5",
         "dead_letter_maxlen must be a whole number of entries above 0, not '-5'"),
        ("redis://h/0?stream=s&dead_letter=s", "dead_letter must name another stream than stream"),
        ("redis://h/0?stream=s&claim_idle_s=0",
         "claim_idle_s must be a number of seconds above 0, not '0'"),
        ("redis://h/0?stream=s&claim_idle_s=soon",
         "claim_idle_s must be a number of seconds above 0, not 'soon'"),
    ],
)  # fmt: skip
def test_stream_url_refusals_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        StreamConfig.from_url(url)


def test_stream_url_defaults_and_the_url_shown_has_no_password() -> None:
    config = StreamConfig.from_url("rediss://app:pw-123@cache.internal:6380/2?stream=ev")
    assert (config.stream, config.group, config.dead_letter) == ("ev", "postbackd", "ev:dead")
    assert config.claim_idle_s == DEFAULT_CLAIM_IDLE_S
    assert config.dead_letter_maxlen == DEFAULT_DEAD_LETTER_MAXLEN
    assert config.consumer == f"{socket.gethostname()}-{os.getpid()}"
    assert config.shown == "rediss://cache.internal:6380/2"
    assert "pw-123" not in repr(config)
    # redis-py gets the connection part only: postbackd's parameters are its own.
    assert config.redis_url == "rediss://app:pw-123@cache.internal:6380/2"
    named = StreamConfig.from_url(
        "redis://[::1]/0?stream=ev&group=g&consumer=host-a&dead_letter=bad&claim_idle_s=2.5"
        "&dead_letter_maxlen=500"
    )
    assert (named.group, named.consumer, named.dead_letter, named.claim_idle_s) == (
        "g", "host-a", "bad", 2.5)  # fmt: skip
    assert named.dead_letter_maxlen == 500
    assert named.shown == "redis://[::1]/0"
