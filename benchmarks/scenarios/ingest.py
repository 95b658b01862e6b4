"""Scenario 5, ingest: the durable ingest rate alone. The postback delays delivery by ten
minutes, so every event and its delivery row are committed (the 202 comes after the commit)
and nothing is sent to X while the load generator pushes batches as fast as they are
accepted."""

from __future__ import annotations

from benchmarks.context import Context
from benchmarks.outcome import Check, Outcome
from benchmarks.stack import stack

BATCH = 1000
CONCURRENCY = 4
DELAY_S = 600


async def run(ctx: Context) -> Outcome:
    assert ctx.engine_rate is not None, "scenario 1 gives the rate"
    sizes = ctx.sizes
    events = sizes.ingest_events
    outcome = Outcome(5, f"Ingest: {events:,} events, durable, nothing sent")
    outcome.notes.append(f"batches of {BATCH} events, {CONCURRENCY} requests in flight")
    for attempt in range(sizes.repeat):
        async with stack(ctx.work_dir(f"s5-{attempt}"), delay_s=DELAY_S) as s:
            cpu_before = s.daemon.cpu_s()
            gen = s.burst(events, BATCH, CONCURRENCY, attempt)
            sent = await s.result(gen, 600)
            accepted = sent["accepted"]
            rate = sent["rate_per_s"]
            outcome.add_run(
                {
                    "accepted": accepted,
                    "events_per_s": rate,
                    "ratio_to_s1": rate / ctx.engine_rate,
                    "daemon_cpu_us_per_event": (s.daemon.cpu_s() - cpu_before) / accepted * 1e6,
                    "sent_to_x": float(await s.x_conversions()),
                }
            )
    outcome.checks = [
        Check("ingest rate ÷ scenario 1's claims/s", outcome.figures["ratio_to_s1"], 5, True, "×")
    ]
    return outcome
