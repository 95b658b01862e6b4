"""Retention (PRODUCT.md 2): what has aged out is deleted in small batches, and nothing
accepted is lost: an event goes only when every delivery of it is final; a held, scheduled
or ready delivery of any age keeps its event. Attributions and device state have their own,
longer retention. The space goes back to the file system."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conftest import ACCOUNT_ID, Api, seed_config
from postbackd.delivery.model import Attribution, Claim, Result
from postbackd.janitor import Janitor
from postbackd.metrics import Metrics
from postbackd.settings import Settings, SettingsError
from postbackd.store.embedded import EmbeddedStore, store_bytes
from procs import client, mock_patch, start_daemon, start_mock, wait_for
from storekit import delivery, insert
from test_delivery import FAST_RETRY, deliveries, event, ingest, settled

DAY_MS = 86_400_000


@pytest.fixture
def store(embedded_store: EmbeddedStore) -> EmbeddedStore:
    return embedded_store


def claim(n: int) -> Claim:
    return Claim(f"ev-{n}", "app", "x_ios", None, "not_claimed", None, None, None, None, b"[]")


def attribution(n: int) -> Attribution:
    return Attribution("app", f"dev-{n}", "x_ios", "kotracker", "CLICK",
                       "2026-11-20T08:00:00.000Z", f"ev-{n}")  # fmt: skip


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = ("events", "deliveries", "claims", "attributions", "devices")
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def janitor(store: EmbeddedStore, now_ms: int, metrics: Metrics | None = None) -> Janitor:
    return Janitor(store, metrics or Metrics(), event_retention_s=30 * 86_400,
                   attribution_retention_s=400 * 86_400, now_ms=lambda: now_ms)  # fmt: skip


async def test_old_final_events_go_and_unfinished_ones_of_any_age_stay(
    store: EmbeddedStore,
) -> None:
    writer = store.writer
    old, young = 1_000, 100 * DAY_MS
    now = 100 * DAY_MS + 1_000
    # 1,200 old delivered events (more than one batch), their claims; old events whose
    # delivery is held, scheduled, ready; young delivered ones.
    rows = [(n, delivery("a", old, state="delivered")) for n in range(1_200)]
    rows += [(2_000, delivery("a", old, state="held", reason="no_x_account"))]
    rows += [(2_001, delivery("a", old, state="scheduled"))]
    rows += [(2_002, delivery("a", old, state="ready"))]
    await insert(writer, rows, first_id=1, now_ms=old)
    young_rows = [(3_000 + n, delivery("a", young, state="delivered")) for n in range(5)]
    await insert(writer, young_rows, first_id=5_000, now_ms=young)
    # Delivery i is event i - 1's.
    results = [Result(i, "delivered", None, 1, old, "a", 200, None, claim(i - 1))
               for i in range(1, 1_201)]  # fmt: skip
    await store.write_results(results, old)
    metrics = Metrics()
    deleted = await janitor(store, now, metrics).sweep()
    assert (deleted.events, deleted.deliveries, deleted.claims) == (1_200, 1_200, 1_200)
    left = await writer.call(counts)
    assert left["events"] == 3 + 5 and left["deliveries"] == 3 + 5 and left["claims"] == 0
    states = await writer.call(
        lambda c: sorted(r[0] for r in c.execute("SELECT state FROM deliveries"))
    )
    assert states == ["delivered"] * 5 + ["held", "ready", "scheduled"]
    assert metrics.retention_deleted.labels("events")._value.get() == 1_200
    # A second sweep finds nothing more.
    again = await janitor(store, now).sweep()
    assert again.events == 0


async def test_attributions_and_device_state_have_their_own_retention(
    store: EmbeddedStore,
) -> None:
    writer = store.writer
    recorded = 1_000
    await insert(writer, [(n, delivery("a", recorded)) for n in range(3)], first_id=1)
    results = [Result(n + 1, "delivered", None, 1, recorded, "a", 200, None, claim(n),
                      attribution(n)) for n in range(3)]  # fmt: skip
    await store.write_results(results, recorded)
    # 31 days later: events go (30 days), attributions stay (400 days).
    deleted = await janitor(store, recorded + 31 * DAY_MS).sweep()
    assert deleted.events == 3 and deleted.attributions == 0
    assert (await writer.call(counts))["devices"] == 3
    deleted = await janitor(store, recorded + 401 * DAY_MS).sweep()
    assert (deleted.attributions, deleted.devices) == (3, 3)


async def test_space_goes_back_to_the_file_system(store: EmbeddedStore) -> None:
    writer = store.writer
    rows = [(n, delivery("a", 1_000, state="delivered")) for n in range(3_000)]
    await insert(writer, rows, first_id=1)
    await writer.call(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    before = (await writer.call(lambda c: c.execute("PRAGMA page_count").fetchone()))[0]
    await janitor(store, 40 * DAY_MS).sweep()
    after = (await writer.call(lambda c: c.execute("PRAGMA page_count").fetchone()))[0]
    free = (await writer.call(lambda c: c.execute("PRAGMA freelist_count").fetchone()))[0]
    assert after < before / 2 and free == 0
    assert await store.size_bytes() == store_bytes(store.path) > 0


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"POSTBACKD_RETENTION_DAYS": "0"}, "POSTBACKD_RETENTION_DAYS"),
        ({"POSTBACKD_RETENTION_DAYS": "-3"}, "POSTBACKD_RETENTION_DAYS"),
        ({"POSTBACKD_ATTRIBUTION_RETENTION_DAYS": "0"}, "POSTBACKD_ATTRIBUTION_RETENTION_DAYS"),
        ({"POSTBACKD_RETENTION_S": "0"}, "POSTBACKD_RETENTION_S"),
        ({"POSTBACKD_RETENTION_S": "-1"}, "POSTBACKD_RETENTION_S"),
        ({"POSTBACKD_RETENTION_DAYS": "a month"}, "POSTBACKD_RETENTION_DAYS"),
    ],
)
def test_a_retention_of_zero_or_less_is_refused(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        Settings.load(environ=env)


async def test_the_daemon_deletes_what_aged_out_and_keeps_what_is_held(tmp_path: Path) -> None:
    mock = await start_mock()
    daemon = await start_daemon(tmp_path / "data", mock.url, retention_s=2, **FAST_RETRY)
    try:
        async with client(daemon) as api:
            seeded = await seed_config(api)
            app_id = seeded["app"]["id"]
            answer = await ingest(api, [event(app_id, n) for n in range(20)])
            await settled(api, 20)
            await mock_patch(mock, {"revoke_tokens": [ACCOUNT_ID]})
            held_answer = await ingest(api, [event(app_id, 100 + n) for n in range(3)])
            await settled(api, 3, "held")
            first = answer["event_ids"][0]

            async def gone() -> bool:
                status, _ = await api.request("GET", f"/api/v1/events/{first}")
                return status == 404

            await wait_for(gone, timeout_s=20)
            assert await deliveries(api, "delivered") == []
            # Held for longer than the retention: kept, and they go out once authenticated.
            await asyncio.sleep(2.5)
            for event_id in held_answer["event_ids"]:
                await api.ok("GET", f"/api/v1/events/{event_id}")
            await mock_patch(mock, {"restore_tokens": [ACCOUNT_ID]})
            await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
            await settled(api, 3)
            metrics = await _metrics(api)
            assert 'postbackd_retention_deleted_total{kind="events"} 2' in metrics
            assert "postbackd_store_bytes " in metrics
        assert "retention: deleted" in daemon.log
    finally:
        await daemon.kill()
        await mock.kill()


async def _metrics(api: Api) -> str:
    async with api.session.get(api.base + "/metrics") as answer:
        return await answer.text()
