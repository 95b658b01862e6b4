"""Held deliveries (PRODUCT.md 1, "Claim request"; PRODUCT.md 2, 401): held until the signing
rule yields an authenticated account, released then and only then; a delivery that cannot be
signed yet waits in memory, and a cancel ends that wait. A configuration change
that helps no held delivery moves none of them and counts nothing again; a late 401 about
credentials replaced since does not undo a fresh authentication."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

import test_store_failures
from conftest import ACCOUNT_ID, Api, MockX, Running, daemon_settings, seed_config
from postbackd.daemon import Daemon
from procs import wait_for
from test_delivery import deliveries, event, ingest, settled
from test_store_failures import fill_until_refused

# The data dir on a small tmpfs of its own, to fill (mounting one needs root, as in CI).
small_fs = test_store_failures.small_fs


def held_total(running: Running) -> float:
    # Read as a scrape reads it: the engine's counts reach the metric when it is read.
    value = running.daemon.metrics.registry.get_sample_value(
        "postbackd_deliveries_total", {"outcome": "held"}
    )
    assert value is not None
    return value


async def test_configuration_changes_do_not_rehold_or_recount_held(
    running: Running, mock_x: MockX
) -> None:
    api = running.api
    seeded = await seed_config(api)
    await mock_x.call("PATCH", "/_mock/config", json={"revoke_tokens": [ACCOUNT_ID]})
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(5)])
    held = await settled(api, 5, "held")
    assert held_total(running) == 5
    before = {d["id"]: d["updated_at"] for d in held}
    # Changes that give these deliveries no account: nothing is released, held again, or
    # counted again (each change used to re-release and re-hold every held delivery).
    for n in range(3):
        other = {"name": f"Other {n}", "platform": "ios", "bundle_id": f"9{n}"}
        await api.ok("POST", "/api/v1/apps", 201, json=other)
        await asyncio.sleep(0.3)
    assert held_total(running) == 5
    after = {d["id"]: d["updated_at"] for d in await deliveries(api, "held")}
    assert after == before
    # Authenticated again: released once, delivered, still counted as held once.
    await mock_x.call("PATCH", "/_mock/config", json={"restore_tokens": [ACCOUNT_ID]})
    await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    await settled(api, 5)
    assert held_total(running) == 5


async def test_only_the_groups_the_change_helps_are_released(running: Running) -> None:
    api = running.api
    seeded = await seed_config(api)
    # A second app with a postback and no tracker: no account signs its claims.
    other = await api.ok("POST", "/api/v1/apps", 201,
                         json={"name": "Other", "platform": "ios", "bundle_id": "444"})  # fmt: skip
    await api.ok("POST", "/api/v1/postbacks", 201, json={
        "app_id": other["id"], "network": "x_ios", "event_name": "purchase",
        "conversion_type": "PURCHASE",
    })  # fmt: skip
    await ingest(api, [event(other["id"], 100 + n) for n in range(3)])
    held = await settled(api, 3, "held")
    assert {d["reason"] for d in held} == {"no_x_account"}
    # Delivered deliveries of the first app are untouched by what follows.
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(2)])
    await settled(api, 2)
    # A tracker on the second app names an authenticated account: its group goes out.
    await api.ok("POST", "/api/v1/trackers", 201, json={
        "app_id": other["id"], "campaign_name": "C", "name": "T", "network": "x_ios",
        "x_account_ids": [ACCOUNT_ID], "target_event": "PURCHASE",
        "event_matching_event": "purchase",
    })  # fmt: skip
    await settled(api, 5)
    assert await deliveries(api, "held") == []


async def test_a_late_401_does_not_undo_a_fresh_authentication(
    running: Running, mock_x: MockX
) -> None:
    api = running.api
    await seed_config(api)
    catalog = running.daemon.catalog
    sent_with = catalog.index.accounts[ACCOUNT_ID]
    # The account is authenticated again after a request left with it...
    await asyncio.sleep(0.01)
    fresh: Any = await api.ok("POST", f"/api/v1/x-accounts/{ACCOUNT_ID}/authenticate")
    assert fresh["authenticated"] is True
    # ... then that request's 401 arrives: it is about the earlier authentication.
    marked = await catalog.record_authentication(ACCOUNT_ID, False, "late 401",
                                                 sent_with=sent_with)  # fmt: skip
    assert marked is None
    assert catalog.index.accounts[ACCOUNT_ID].authenticated is True
    # A 401 about the credentials as they are now is recorded.
    current = catalog.index.accounts[ACCOUNT_ID]
    marked = await catalog.record_authentication(ACCOUNT_ID, False, "401", sent_with=current)
    assert marked is not None and marked.authenticated is False
    # New credentials: a 401 about the old ones says nothing of them.
    replaced = dataclasses.replace(current, access_token="old-token")
    assert await catalog.record_authentication(ACCOUNT_ID, True, None, sent_with=replaced) is None


@contextlib.asynccontextmanager
async def keyless(
    data_dir: Path, mock_x: MockX
) -> AsyncIterator[tuple[Daemon, Api, dict[str, Any]]]:
    """A daemon without the HMAC key, so no claim can be built yet: each of the 3 events
    ingested waits in memory to be queued again. The daemon, its client, the configuration
    seeded."""
    daemon = Daemon(daemon_settings(data_dir, mock_x.url, x_hmac_key=None))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{daemon.port}")
            seeded = await seed_config(api)
            await ingest(api, [event(seeded["app"]["id"], n) for n in range(3)])
            yield daemon, api, seeded
    finally:
        await daemon.stop()


async def test_cancel_takes_out_of_memory_deliveries_waiting_to_be_queued_again(
    tmp_path: Path, mock_x: MockX
) -> None:
    # Without an HMAC key no claim can be built yet: each delivery waits to be queued again.
    # A cancel must end that wait too, or the cancelled deliveries keep their places in the
    # account's share of memory for good (and cycle through the lane every few seconds).
    async with keyless(tmp_path / "data", mock_x) as (daemon, api, seeded):
        postback_id = seeded["postback"]["id"]
        engine = daemon.engine
        assert engine is not None

        async def all_waiting() -> bool:
            return engine.loaded == 3 and engine.in_flight == 0

        await wait_for(all_waiting)
        answer = await api.ok(
            "POST", "/api/v1/deliveries/cancel", json={"postback_id": postback_id}
        )
        assert answer["cancelled"] == 3
        assert engine.loaded == 0
        await settled(api, 3, "cancelled")


async def test_a_cancel_committed_during_a_read_is_not_undone_by_that_read(
    running: Running, mock_x: MockX
) -> None:
    # A shared store reads due work on one connection and cancels on another: a read whose
    # snapshot predates the cancel's commit returns the cancelled deliveries as pending.
    # Taken then, they went to X after the cancel had answered, and their delivered result
    # overrode the cancel. The read is made to return only once the cancel has committed.
    api = running.api
    engine, store = running.daemon.engine, running.daemon.store
    assert engine is not None and store is not None
    seeded = await seed_config(api)
    postback_id = seeded["postback"]["id"]
    # Delayed: read from the store when due, not handed over at acceptance.
    await api.ok("PATCH", f"/api/v1/postbacks/{postback_id}", json={"delivery_delay_s": 1})
    original = store.lease_due
    answers: list[int] = []

    async def lease_due(*args: Any) -> Any:
        found = await original(*args)
        if any(rows for _, rows, _ in found) and not answers:
            answers.append(await engine.cancel(None, postback_id))
        return found

    store.lease_due = lease_due  # type: ignore[method-assign]
    await ingest(api, [event(seeded["app"]["id"], n) for n in range(3)])

    async def cancelled() -> bool:
        return bool(answers)

    await wait_for(cancelled, timeout_s=10)
    assert answers == [3]
    await asyncio.sleep(1.0)  # time enough to send them, were they taken
    assert len(await deliveries(api, "cancelled")) == 3
    sent = await mock_x.call("GET", "/_mock/requests?limit=100")
    assert [r for r in sent["requests"] if r["path"].endswith("/conversion_event")] == []
    assert engine.loaded == 0


async def test_a_cancel_the_store_refuses_leaves_the_deliveries_to_go_out(
    small_fs: Path, mock_x: MockX
) -> None:
    # The cancel drops matching deliveries from memory before its commit; when the commit
    # fails (a full disk) they are still pending in the store and must be read again, not
    # stranded behind the loader's position until a restart.
    async with keyless(small_fs / "data", mock_x) as (daemon, api, seeded):
        engine = daemon.engine
        assert engine is not None
        filler = await fill_until_refused(small_fs, api, seeded["app"]["id"])
        ready = len(await deliveries(api, "ready"))  # the 3, and what the filling added

        async def all_loaded() -> bool:
            return engine.loaded == ready

        await wait_for(all_loaded)
        status, body = await api.request(
            "POST", "/api/v1/deliveries/cancel", json={"postback_id": seeded["postback"]["id"]}
        )
        assert status == 503 and body["error"]["code"] == "store_unavailable", body
        filler.unlink()
        await wait_for(all_loaded, timeout_s=5)
        assert len(await deliveries(api, "ready")) == ready
