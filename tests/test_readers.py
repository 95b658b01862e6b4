"""Reads never wait for the writer (issue: results reads ran on the writer's thread and held
up ingest commits): the results API and the queue-depth gauge read through their own
connections, which WAL lets work beside a commit in progress."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from conftest import Running, seed_config
from postbackd.store.embedded import EmbeddedStore
from test_delivery import event, ingest, settled


async def test_results_answer_while_a_commit_is_in_progress(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(3)])
    await settled(api, 3)
    store = running.daemon.store
    engine = running.daemon.engine
    assert isinstance(store, EmbeddedStore) and engine is not None
    writer = store.writer
    release = threading.Event()

    def long_commit(conn: sqlite3.Connection) -> None:
        release.wait(10)  # the writer's thread is busy with this commit

    held = writer.submit(long_commit)
    try:
        async with asyncio.timeout(3):
            for path in (
                "/api/v1/deliveries?state=delivered",
                "/api/v1/deliveries?state=ready",
                f"/api/v1/reports/trackers?app_id={seeded['app']['id']}",
                "/api/v1/attributions",
                "/api/v1/events/ev-1",
            ):
                await api.ok("GET", path)
            counts = await engine.refresh_queue_depth()
            assert counts["ready"] == 0
    finally:
        release.set()
        await held
