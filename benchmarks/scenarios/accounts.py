"""Scenario 3, many accounts: 500 X accounts, each signing its own postback, the simulated X
holding each token to a small fixed window; the daemon is told the same limit (as an
operator would configure X's published limit) and corrects itself from X's headers.

The permitted aggregate (accounts x limit / window) is about half of what the engine sent
in scenario 1 of the same run (the configured limit, lowered to that when scenario 1 ran
slower), so the scenario measures the rate budgets rather than raw throughput. Measured
after the first window: the share of 429s, the achieved share of the permitted rate, and
each account's achieved share of its own permitted rate.
"""

from __future__ import annotations

import statistics

from benchmarks.context import Context
from benchmarks.outcome import Check, Outcome, foreign_between, timeline
from benchmarks.sampler import Sample, Sampler
from benchmarks.stack import stack

BATCH = 500


def _by_token(sample: Sample, status: str) -> dict[str, int]:
    tokens = sample.x.get("tokens_by_status")
    assert isinstance(tokens, dict)
    return {token: int(counts.get(status, 0)) for token, counts in tokens.items()}


def _whole_windows(samples: list[Sample], after_s: float) -> tuple[Sample, Sample]:
    """The samples that bound whole windows after the first: when the engine sends a window's
    budget faster than the window lasts, X's answers come in bursts, one per window, and a
    rate over a span that cuts a burst would be off by up to a window. Each bound is the last
    quiet sample before a burst; without bursts (a smooth rate), the whole span counts."""
    quiet_before_burst = [
        quiet
        for before, quiet, busy in zip(samples, samples[1:], samples[2:], strict=False)
        if quiet.t_s >= after_s and quiet.x_ok == before.x_ok and busy.x_ok > quiet.x_ok
    ]
    if len(quiet_before_burst) >= 2:
        return quiet_before_burst[0], quiet_before_burst[-1]
    inside = [x for x in samples if x.t_s >= after_s]
    return inside[0], inside[-1]


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    n, limit, window_s = sizes.accounts, sizes.account_limit, sizes.account_window_s
    if ctx.engine_rate is not None:
        # About half of what the engine sent in scenario 1 of this run, whatever this
        # machine's speed today: the scenario measures the budgets, not raw throughput.
        limit = max(1, min(limit, round(ctx.engine_rate / 2 * window_s / n)))
    permitted_per_s = n * limit / window_s
    outcome = Outcome(3, f"Many accounts: {n} X accounts, {limit} requests per {window_s:g} s each")
    outcome.notes.append(f"permitted aggregate {permitted_per_s:,.0f} claims/s")
    rate_limits = {"rate_limit": limit, "rate_window_s": window_s}
    for attempt in range(sizes.repeat):
        async with stack(
            ctx.work_dir(f"s3-{attempt}"),
            accounts=n,
            mock=rate_limits,
            daemon={"rate_limit_requests": limit, "rate_limit_window_s": window_s},
        ) as s:
            sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
            async with sampler.running():
                gen = s.loadgen(
                    "loadgen",
                    "closed",
                    "--backlog", str(int(3 * n * limit)),
                    "--batch", str(BATCH),
                    "--run", str(attempt),
                )  # fmt: skip
                sampler.procs = [s.daemon, s.mock, gen]
                # X's reset is a whole second, so windows run up to a second longer.
                wait_s = (sizes.account_windows + 1.5) * (window_s + 1)
                first_s = await sampler.claims_for(wait_s, 120 + wait_s)
                await sampler.sample()
                await s.result(gen, None)
            samples = sampler.samples
            start, end = _whole_windows(samples, first_s + window_s / 2)
            span_s = end.t_s - start.t_s
            requests = end.x_total - start.x_total
            too_many = end.x_count("429") - start.x_count("429")
            ok_before, ok_after = _by_token(start, "200"), _by_token(end, "200")
            per_account = sorted(
                (ok_after.get(t, 0) - ok_before.get(t, 0)) / (limit * span_s / window_s)
                for t in ok_after
            )
            per_account += [0.0] * (n - len(per_account))  # accounts X never heard from
            outcome.add_run(
                {
                    "share_429_pct": 100 * too_many / max(requests, 1),
                    "achieved_pct_of_permitted": 100
                    * (end.x_ok - start.x_ok)
                    / (permitted_per_s * span_s),
                    "claims_per_s": (end.x_ok - start.x_ok) / span_s,
                    "account_min_pct_of_share": 100 * per_account[0],
                    "account_median_pct_of_share": 100 * statistics.median(per_account),
                    "account_max_pct_of_share": 100 * per_account[-1],
                    "measured_s": span_s,
                    "foreign_cores": foreign_between(samples, start.t_s, end.t_s),
                }
            )
            if attempt == 0:
                outcome.timeline = timeline(samples)
    f = outcome.figures
    outcome.checks = [
        Check("429s after the first window", f["share_429_pct"], 0.5, False, "% of requests"),
        Check(
            "achieved share of the permitted rate", f["achieved_pct_of_permitted"], 90, True, "%"
        ),
        Check(
            "lowest account's share of its permitted rate",
            f["account_min_pct_of_share"],
            50,
            True,
            "%",
        ),
    ]
    return outcome
