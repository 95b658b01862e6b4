"""Scenario 2, latency: events at half of scenario 1's rate, in small batches at a steady
pace; the time from the load generator's ingest call to the simulated X's receipt of each
event's claim, measured from outside the daemon (`benchmarks/receipts.py`) for every event
sent in the measured span.
"""

from __future__ import annotations

import time

from benchmarks import receipts
from benchmarks.context import Context
from benchmarks.outcome import (
    Check,
    Outcome,
    first_claim_s,
    foreign_between,
    rate_between,
    timeline,
)
from benchmarks.sampler import Sampler
from benchmarks.stack import stack

# Events per request: small, as realtime traffic comes, and frequent.
BATCH = 10
CONCURRENCY = 8


async def run(ctx: Context) -> Outcome:
    assert ctx.engine_rate is not None, "scenario 1 gives the rate"
    sizes = ctx.sizes
    rate = ctx.engine_rate / 2
    duration_s = sizes.warmup_s + sizes.measure_s
    outcome = Outcome(2, "Latency at half of scenario 1's rate")
    outcome.notes.append(
        f"offered load {rate:,.0f} events/s in batches of {BATCH}; latency from the load "
        "generator's ingest call (the clock read just before the POST) to the simulated X's "
        "receipt of the event's claim, both on the machine's monotonic clock, for every event "
        f"sent after the {sizes.warmup_s:g} s warm-up; matched_pct is the share of those "
        "events whose claim X received"
    )
    for attempt in range(sizes.repeat):
        work_dir = ctx.work_dir(f"s2-{attempt}")
        async with stack(work_dir, mock={"receipt_log": True}) as s:
            sends = s.work_dir / "sends.json"
            sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
            async with sampler.running():
                measured_from_s = time.monotonic() + sizes.warmup_s
                gen = s.loadgen(
                    "loadgen",
                    "rate",
                    "--rate", str(rate),
                    "--batch", str(BATCH),
                    "--duration-s", str(duration_s),
                    "--concurrency", str(CONCURRENCY),
                    "--run", str(attempt),
                    "--sends", str(sends),
                )  # fmt: skip
                sampler.procs = [s.daemon, s.mock, gen]
                sent = await s.result(gen, duration_s + 60)
                if await s.drained(int(sent["accepted"]), 60) is None:
                    raise RuntimeError("the deliveries did not drain in 60 s")
                await sampler.sample()
            latency = receipts.ingest_to_x(
                receipts.read_sends(sends),
                await receipts.read_receipts(s.session, s.x_url),
                attempt,
                measured_from_s,
                time.monotonic(),
            )
            samples = sampler.samples
            start_s = first_claim_s(samples) + sizes.warmup_s
            end_s = start_s + sizes.measure_s - 1
            outcome.add_run(
                {
                    **latency,
                    "claims_per_s": rate_between(samples, start_s, end_s),
                    "foreign_cores": foreign_between(samples, start_s, end_s),
                }
            )
            if attempt == 0:
                outcome.timeline = timeline(samples)
    p99 = outcome.figures["ingest_to_x_p99_ms"]
    outcome.checks = [Check("p99 from ingest call to X's receipt", p99, 10.0, False, "ms")]
    return outcome
