"""Crash safety and shutdown: kill -9 under load loses nothing accepted; SIGTERM lets the
requests in flight finish and keeps the rest for the next start (PRODUCT.md 2)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from conftest import seed_config
from procs import client, conversions, start_daemon, start_mock, wait_for
from test_delivery import FAST_RETRY, deliveries, event, hashed, idfa, ingest, settled

SLOTS = 8  # x_max_connections; the engine keeps at most twice this many requests in flight


async def test_kill_9_under_load_then_restart_loses_nothing(tmp_path: Path) -> None:
    mock = await start_mock("--latency", "fixed:5")
    # One account here: its cap may take the whole (small) pool.
    settings = {**FAST_RETRY, "x_max_connections": SLOTS, "x_account_max_in_flight": SLOTS}
    daemon = await start_daemon(tmp_path / "data", mock.url, **settings)
    accepted: list[int] = []
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]

            async def feed() -> None:
                for batch in range(40):
                    numbers = list(range(batch * 100, batch * 100 + 100))
                    try:
                        answer = await ingest(api, [event(app_id, n) for n in numbers])
                    except (aiohttp.ClientError, AssertionError):
                        return  # the daemon is gone: this batch was never acknowledged
                    assert answer["accepted"] == 100
                    accepted.extend(numbers)
                    await asyncio.sleep(0.01)

            feeding = asyncio.create_task(feed())
            await wait_for(lambda: _at_least(mock, 500), timeout_s=20)
            daemon.proc.send_signal(signal.SIGKILL)
            await daemon.proc.wait()
            await feeding
        sent_before = len(await conversions(mock))
        assert accepted, "nothing was accepted before the kill"
        assert sent_before < len(accepted), "the kill came too late to test anything"

        daemon = await start_daemon(tmp_path / "data", mock.url, **settings)
        async with client(daemon) as api:
            await settled(api, len(accepted))
            assert await deliveries(api, "dead") == []
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        expected = {hashed(idfa(n).upper()) for n in accepted}
        assert expected <= set(received), "an accepted event never reached X"
        duplicates = len(received) - len(set(received))
        # Only requests in flight (or answered, not yet committed) at the kill go twice.
        assert duplicates <= 2 * SLOTS + 32, duplicates
    finally:
        await daemon.kill()
        await mock.kill()


async def _at_least(mock: object, count: int) -> bool:
    return len(await conversions(mock)) >= count  # type: ignore[arg-type]


async def test_sigterm_finishes_in_flight_requests_and_keeps_the_rest(tmp_path: Path) -> None:
    mock = await start_mock("--latency", "fixed:700")
    settings = {**FAST_RETRY, "x_max_connections": 1, "shutdown_grace_s": 5}
    daemon = await start_daemon(tmp_path / "data", mock.url, **settings)
    try:
        async with client(daemon) as api:
            app_id = (await seed_config(api))["app"]["id"]
            await ingest(api, [event(app_id, n) for n in range(6)])
            await asyncio.sleep(0.3)  # two requests in flight (two slots), 700 ms each
            assert await daemon.stop() == 0
        assert "draining" in daemon.log and "stopped after" in daemon.log
        answered = [r for r in await conversions(mock) if r["status"] == 200]
        assert 1 <= len(answered) < 6
        daemon = await start_daemon(tmp_path / "data", mock.url, **settings)
        async with client(daemon) as api:
            delivered = await deliveries(api, "delivered")
            # What X answered before the stop was recorded: not sent again.
            assert len(delivered) == len(answered)
            await settled(api, 6)
        received = [r["params"]["hashed_device_id"] for r in await conversions(mock)]
        assert len(received) == len(set(received)) == 6
    finally:
        await daemon.kill()
        await mock.kill()
