"""Shared rate budgets (PRODUCT.md 5): three daemons on one PostgreSQL send for one X account
that the simulated X limits to a small window; together they stay within it (no 429 once the
first window has shown them X's windows) and use most of it.

Measured at the simulated X, from its request log: the windows are X's own (consecutive
windows from the token's first request, mockx/ratelimit.py), each request counted in the
window its time falls in. Nothing is timed: the backlog is sized so that several windows
are full before it runs out, and only those are measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgproc import pg_server, pg_url
from procs import conversions, start_mock, wait_for
from test_delivery import FAST_RETRY, deliveries
from test_postgres_daemons import configured, daemons, spread

__all__ = ["pg_server", "pg_url"]  # fixtures

LIMIT = 200  # requests per window at the simulated X, and the daemons' configured budget
WINDOW_S = 5.0
FULL_WINDOWS = 3  # measured: the windows after the first, all with a backlog waiting
EVENTS = LIMIT * (FULL_WINDOWS + 1) + LIMIT // 2  # the last window is partly used


def per_window(requests: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Answers per window of X: {status: count} for window 0, 1, ..."""
    start = requests[0]["ts"]
    windows: list[dict[str, int]] = []
    for r in requests:
        n = int((r["ts"] - start) // WINDOW_S)
        while len(windows) <= n:
            windows.append({})
        status = str(r["status"])
        windows[n][status] = windows[n].get(status, 0) + 1
    return windows


async def test_three_daemons_share_one_accounts_window(tmp_path: Path, pg_url: str) -> None:
    mock = await start_mock("--rate-limit", str(LIMIT), "--rate-window-s", str(WINDOW_S))
    settings = {**FAST_RETRY, "rate_limit_requests": LIMIT, "rate_limit_window_s": WINDOW_S}
    try:
        async with daemons(tmp_path, mock, pg_url, 3, **settings) as members:
            apis = [m.api for m in members]
            app_id = await configured(apis)
            # The ingest spread over the daemons; each sends what any of them accepted.
            await spread(apis, app_id, EVENTS)

            async def all_delivered() -> bool:
                return len(await deliveries(apis[1], "delivered")) >= EVENTS

            # Hang detection only: the budget allows EVENTS in about 6 windows.
            await wait_for(all_delivered, timeout_s=20 * WINDOW_S * 6, every_s=0.5)
        windows = per_window(await conversions(mock))
        assert len(windows) > FULL_WINDOWS + 1, windows
        late_429s = sum(w.get("429", 0) for w in windows[1:])
        assert late_429s == 0, windows
        sent = sum(w.get("200", 0) for w in windows[1 : FULL_WINDOWS + 1])
        permitted = LIMIT * FULL_WINDOWS
        assert sent >= 0.9 * permitted, (sent, permitted, windows)
    finally:
        await mock.kill()
