"""Scenario 6, backlog: X is down from the start while the events are accepted, so they all
wait in the store; the daemon's peak resident memory (VmHWM) tells whether the backlog stays
on disk rather than in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks.context import Context
from benchmarks.outcome import Check, Outcome, timeline
from benchmarks.sampler import Sampler
from benchmarks.stack import stack

BATCH = 1000
CONCURRENCY = 4
# After the last event, the engine keeps loading and probing X for a while.
SETTLE_S = 5.0


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    events = sizes.backlog_events
    outcome = Outcome(6, f"Backlog: {events:,} accepted events waiting, X down")
    for attempt in range(sizes.repeat):
        async with stack(ctx.work_dir(f"s6-{attempt}"), mock={"outage": True}) as s:
            sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
            async with sampler.running():
                gen = s.burst(events, BATCH, CONCURRENCY, attempt)
                sampler.procs = [s.daemon, s.mock, gen]
                sent = await s.result(gen, 1800)
                await asyncio.sleep(SETTLE_S)
            rss_kb, peak_kb = s.daemon.memory_kb()
            outcome.add_run(
                {
                    "accepted": sent["accepted"],
                    "ingest_events_per_s": sent["rate_per_s"],
                    "peak_rss_mb": peak_kb / 1024,
                    "rss_at_end_mb": rss_kb / 1024,
                    "data_dir_mb": _size_mb(s.work_dir / "data"),
                }
            )
            if attempt == 0:
                outcome.timeline = timeline(sampler.samples)
    outcome.checks = [
        Check("peak RSS of the daemon", outcome.figures["peak_rss_mb"], 200, False, "MB")
    ]
    return outcome
