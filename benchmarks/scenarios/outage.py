"""Scenario 4, outage: X answers 503 to everything from before the first event until well
after a delivery's whole retry schedule has passed, while the events are ingested; then X
recovers. Measured: the daemon's peak memory, the time to drain, and that nothing was lost
(every event reached X, counted by the simulated X's distinct conversions) and nothing is
dead (the daemon's count and its results API).
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.context import Context
from benchmarks.outcome import Check, Outcome, timeline
from benchmarks.sampler import Sampler
from benchmarks.stack import stack

# Retries with 0.5 s, 1 s and 2 s ceilings: the default 3 attempts take at most 3.5 s. The
# outage lasts at least four times that, so every delivery that failed before the circuit
# opened would have exhausted its retries had the circuit not kept them.
RETRY = {"retry_base_s": 0.5, "retry_factor": 2, "retry_cap_s": 4}
SCHEDULE_S = 0.5 + 1 + 2
MIN_OUTAGE_S = 4 * SCHEDULE_S
BATCH = 1000


async def run(ctx: Context) -> Outcome:
    assert ctx.engine_rate is not None, "scenario 1 gives the rate"
    sizes = ctx.sizes
    events = sizes.outage_events
    outcome = Outcome(4, f"Outage: X answers 503 while {events:,} events are ingested")
    for attempt in range(sizes.repeat):
        async with stack(ctx.work_dir(f"s4-{attempt}"), daemon=RETRY) as s:
            await s.x_config(outage=True)
            outage_started = time.monotonic()
            sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
            async with sampler.running():
                gen = s.burst(events, BATCH, 4, attempt)
                sampler.procs = [s.daemon, s.mock, gen]
                sent = await s.result(gen, 600)
                await asyncio.sleep(max(0.0, MIN_OUTAGE_S - (time.monotonic() - outage_started)))
                outage_s = time.monotonic() - outage_started
                before = await s.x_conversions()
                await s.x_config(outage=False)
                drain_s = await s.drained(events, 60 + 5 * events / ctx.engine_rate)
                await sampler.sample()
            dead = len(await s.deliveries("dead"))
            _, peak_kb = s.daemon.memory_kb()
            # Not drained in five times the expected time: its rate counts as nothing.
            drain_rate = 0.0 if drain_s is None else (events - before) / drain_s
            outcome.add_run(
                {
                    "accepted": sent["accepted"],
                    "outage_s": outage_s,
                    "peak_rss_mb": peak_kb / 1024,
                    "drain_s": float("inf") if drain_s is None else drain_s,
                    "drain_claims_per_s": drain_rate,
                    "drain_ratio_to_s1": drain_rate / ctx.engine_rate,
                    "lost": float(events - await s.x_conversions()),
                    "dead": float(dead),
                }
            )
            if attempt == 0:
                outcome.timeline = timeline(sampler.samples)
    f = outcome.figures
    outcome.notes.append(
        f"retries: base 0.5 s, factor 2, cap 4 s, 3 attempts ({SCHEDULE_S:g} s at most); "
        f"outage at least {MIN_OUTAGE_S:g} s and until ingest ended"
    )
    outcome.checks = [
        Check("events lost (never answered by X)", max(r["lost"] for r in outcome.runs), 0, False),
        Check("deliveries dead", max(r["dead"] for r in outcome.runs), 0, False),
        Check("drain rate ÷ scenario 1's claims/s", f["drain_ratio_to_s1"], 0.8, True, "×"),
    ]
    return outcome
