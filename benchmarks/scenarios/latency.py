"""Scenario 2, latency: events at half of scenario 1's rate, in small batches at a steady
pace; the time from acceptance to X's answer of each delivery.

Per delivery, from the results API: `first_due_at` is when the daemon received the event
(a realtime postback is due at once) and `updated_at` when it recorded X's answer. The API
gives the newest 10,000 deliveries; those accepted during the warm-up are left out.
"""

from __future__ import annotations

import time
from datetime import datetime

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


def _ms(iso: object) -> float:
    return datetime.fromisoformat(str(iso)).timestamp() * 1000


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(sorted_values) - 1, round(share * len(sorted_values)) - 1))
    return sorted_values[rank]


async def run(ctx: Context) -> Outcome:
    assert ctx.engine_rate is not None, "scenario 1 gives the rate"
    sizes = ctx.sizes
    rate = ctx.engine_rate / 2
    duration_s = sizes.warmup_s + sizes.measure_s
    outcome = Outcome(2, "Latency at half of scenario 1's rate")
    outcome.notes.append(f"offered load {rate:,.0f} events/s in batches of {BATCH}")
    for attempt in range(sizes.repeat):
        async with stack(ctx.work_dir(f"s2-{attempt}")) as s:
            sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
            async with sampler.running():
                measured_from_ms = (time.time() + sizes.warmup_s) * 1000
                gen = s.loadgen(
                    "loadgen",
                    "rate",
                    "--rate", str(rate),
                    "--batch", str(BATCH),
                    "--duration-s", str(duration_s),
                    "--concurrency", str(CONCURRENCY),
                    "--run", str(attempt),
                )  # fmt: skip
                sampler.procs = [s.daemon, s.mock, gen]
                sent = await s.result(gen, duration_s + 60)
                if await s.drained(int(sent["accepted"]), 60) is None:
                    raise RuntimeError("the deliveries did not drain in 60 s")
                await sampler.sample()
            lags = sorted(
                _ms(d["updated_at"]) - _ms(d["first_due_at"])
                for d in await s.deliveries("delivered")
                if _ms(d["first_due_at"]) >= measured_from_ms
            )
            samples = sampler.samples
            start_s = first_claim_s(samples) + sizes.warmup_s
            end_s = start_s + sizes.measure_s - 1
            outcome.add_run(
                {
                    "p50_ms": percentile(lags, 0.50),
                    "p99_ms": percentile(lags, 0.99),
                    "p99_9_ms": percentile(lags, 0.999),
                    "max_ms": lags[-1],
                    "deliveries_measured": float(len(lags)),
                    "claims_per_s": rate_between(samples, start_s, end_s),
                    "foreign_cores": foreign_between(samples, start_s, end_s),
                }
            )
            if attempt == 0:
                outcome.timeline = timeline(samples)
    p99 = outcome.figures["p99_ms"]
    outcome.checks = [Check("p99 from acceptance to X's answer", p99, 25.0, False, "ms")]
    return outcome
