"""Scenario 3, many accounts, with what a real operator knows: the daemon keeps its default
rate budget (60,000 requests per 900 s per account) while the simulated X holds each token to
a small window, so the budgets must be learnt from X's rate-limit headers. The accounts
differ, through the simulated X's per-account settings (`account_faults`): most are normal,
a few slow (200 to 500 ms per answer), a few answer half their requests with a 5xx, a few
have a fifth of the others' limit in a window of the same length.

Every account is offered 95 % of a normal account's permitted rate, open loop, so a healthy
account neither starves nor builds a backlog when the daemon spends its budget well, while
the throttled and failing accounts (whose retries spend budget too) build backlogs of their
own; the slow accounts are offered twice that, so that they too always have a backlog and
spend each window's budget as it opens, holding connections for their whole latency.
The permitted aggregate is kept well below scenario 1's claims/s: the scenario measures the
budgets, not raw speed.

Measured after the first window, per group and for all accounts, from outside the daemon:
the share of X's answers that are 429s (X's per-account counters), the achieved share of the
permitted rate (accounts x limit / window), and the lag from the load generator's ingest call
to X's first 200 to the event's claim (its journal and X's request log, same clock). An event
X never answered counts with its age at the end, a lower bound. The bar is on the normal
("healthy") accounts, whatever the others do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence

from benchmarks import workload
from benchmarks.context import Context
from benchmarks.journal import Journal
from benchmarks.outcome import Check, Outcome, foreign_between, timeline, window
from benchmarks.receipts import percentile
from benchmarks.sampler import Sample, Sampler
from benchmarks.stack import stack
from benchmarks.xlog import XLog
from postbackd.settings import Settings

# The daemon's own defaults, as an operator who never looked at X's limits leaves them.
_DEFAULTS = Settings()
DAEMON_BUDGET = {
    "rate_limit_requests": _DEFAULTS.rate_limit_requests,
    "rate_limit_window_s": _DEFAULTS.rate_limit_window_s,
}
# Each account's offered share of a normal account's permitted rate.
OFFERED = 0.95
# The slow accounts get this many times as many events: more than X permits them, so that
# they always have a backlog and spend each window's budget as it opens, at their pace.
SLOW_SHARE = 2
# The load generator's batches and ingest calls in flight (room for a slow answer, so that a
# call's send time is when it was due).
BATCH = 50
CONCURRENCY = 8
RUN = 30  # makes the device ids of this scenario's events its own (plus the attempt)
# Which accounts are unhealthy, by index modulo 20: one in twenty of each kind, spread over
# the list; account 0 signs the tracker and stays normal.
GROUPS = ("healthy", "slow", "flaky", "throttled")
_ROLE_AT = {5: "slow", 10: "flaky", 15: "throttled"}
SLOW_LATENCY = "uniform:200:500"
FLAKY_ERROR_RATE = 0.5
THROTTLE_DIVISOR = 5  # the throttled accounts' limit: a fifth of the others'
# The permitted aggregate at most this share of scenario 1's claims/s.
ENGINE_SHARE = 0.25
SAMPLE_S = 0.5
# X's log is read this often while the load runs: small pages, so that serving one holds the
# simulated X's loop (and the claims it answers) only for milliseconds.
XLOG_EVERY_S = 1.0
DRAIN_S = 3.0  # after the load: time for X to answer the healthy accounts' last events
LAG_BAR_MS = 1000.0


def role(index: int) -> str:
    return _ROLE_AT.get(index % 20, "healthy")


def schedule(n: int) -> list[int]:
    """The account index of each event name in the load generator's cycle: event k goes to
    account `schedule[k % len(schedule)]`."""
    return [i for i in range(n) for _ in range(SLOW_SHARE if role(i) == "slow" else 1)]


def throttled_limit(limit: int) -> int:
    return max(1, limit // THROTTLE_DIVISOR)


def account_faults(
    accounts: Sequence[workload.Account], limit: int
) -> dict[str, dict[str, object]]:
    """The simulated X's per-account settings of the unhealthy accounts."""
    own: dict[str, dict[str, object]] = {}
    for i, account in enumerate(accounts):
        kind = role(i)
        if kind == "slow":
            own[account.id] = {"latency": SLOW_LATENCY}
        elif kind == "flaky":
            own[account.id] = {"error_rate": FLAKY_ERROR_RATE}
        elif kind == "throttled":
            own[account.id] = {"rate_limit": throttled_limit(limit)}
    return own


@dataclasses.dataclass(slots=True)
class Measured:
    samples: list[Sample]
    first: Sample  # before the load
    start: Sample  # the end of the first window
    end: Sample  # whole windows later, before the load ended
    journal: Journal
    answered: dict[int, float]  # event number -> X's first 200 to its claim (epoch s)
    wall_started: float  # epoch seconds when the load started
    load_start_t: float  # the same moment in sampler time
    wall_ended: float  # epoch seconds of the last look at X's log


async def _measure(ctx: Context, attempt: int, limit: int, load_s: float) -> Measured:
    sizes = ctx.sizes
    n, window_s = sizes.accounts, sizes.account_window_s
    members = workload.accounts(n)
    mock = {
        "rate_limit": limit,
        "rate_window_s": window_s,
        "account_faults": account_faults(members, limit),
        # The whole request log: the harness pages through it for the lag.
        "request_log_max": None,
    }
    cycle = schedule(n)
    rate = OFFERED * len(cycle) * limit / window_s
    run = RUN + attempt
    async with stack(
        ctx.work_dir(f"s3-{attempt}"), accounts=n, mock=mock, daemon=DAEMON_BUDGET
    ) as s:
        journal_path = s.work_dir / "journal.ndjson"
        sampler = Sampler(
            s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock], interval_s=SAMPLE_S
        )
        xlog = XLog(s.session, s.x_url)
        async with sampler.running(), xlog.following(XLOG_EVERY_S):
            started, wall_started = time.monotonic(), time.time()
            gen = s.loadgen(
                "loadgen", "soak",
                "--rate", f"{rate:.3f}", "--batch", str(BATCH), "--duration-s", str(load_s),
                "--concurrency", str(CONCURRENCY), "--run", str(run),
                "--journal", str(journal_path),
                "--events", ",".join(s.setup.event_names[i] for i in cycle),
            )  # fmt: skip
            sampler.procs = [s.daemon, s.mock, gen]
            await s.result(gen, load_s + 120)
            await asyncio.sleep(DRAIN_S)
            await sampler.sample()
            await xlog.catch_up()
            wall_ended = time.time()
        journal = Journal.read(journal_path)
        answered = _answered(journal, xlog, run)
    load_start_t = started - sampler.started
    # X's first window of every account opens with its first request, within the first
    # second of the load; X's reset is a whole second, so one more.
    first_window_end_t = load_start_t + window_s + 1
    # Whole windows: a throttled or failing account sends its window's budget in a burst
    # when the window opens, and a span that cut a burst would be off by up to a window.
    # Before the load ended: the load generator's CPU time counts until then (foreign load).
    start, last = window(sampler.samples, first_window_end_t, load_start_t + load_s)
    whole = math.floor((last.t_s - start.t_s) / window_s) * window_s
    _, end = window(sampler.samples, start.t_s, start.t_s + whole)
    return Measured(
        sampler.samples,
        sampler.samples[0],
        start,
        end,
        journal,
        answered,
        wall_started,
        load_start_t,
        wall_ended,
    )


def _answered(journal: Journal, xlog: XLog, run: int) -> dict[int, float]:
    out = {}
    for n in journal.accepted_sent_s:
        ok_s = xlog.first_ok.get(workload.hashed_device_id(workload.idfa(run, n)))
        if ok_s is not None:
            out[n] = ok_s
    return out


def _by_account(sample: Sample) -> Mapping[str, Mapping[str, int]]:
    """X's claim answers per account id: status -> count."""
    accounts = sample.x.get("by_account")
    assert isinstance(accounts, dict)
    return {a: entry["status"] for a, entry in accounts.items()}


def _count(by_account: Mapping[str, Mapping[str, int]], ids: set[str], status: str | None) -> int:
    return sum(
        sum(counts.values()) if status is None else int(counts.get(status, 0))
        for account, counts in by_account.items()
        if account in ids
    )


def _figures(
    m: Measured, members: Sequence[workload.Account], limit: int, window_s: float
) -> dict[str, float]:
    n = len(members)
    groups = {g: {a.id for i, a in enumerate(members) if role(i) == g} for g in GROUPS}
    limits = {g: throttled_limit(limit) if g == "throttled" else limit for g in GROUPS}
    before, after = _by_account(m.start), _by_account(m.end)
    span_s = m.end.t_s - m.start.t_s
    figures: dict[str, float] = {}
    every = set().union(*groups.values())
    requests_all = _count(after, every, None) - _count(before, every, None)
    too_many_all = _count(after, every, "429") - _count(before, every, "429")
    figures["share_429_pct"] = 100 * too_many_all / max(requests_all, 1)
    # What the daemon sent before X's headers taught it the limits.
    figures["first_window_429s"] = m.start.x_count("429") - m.first.x_count("429")
    # The lag of the events sent after the first window, until the load ended.
    after_epoch = m.wall_started + (m.start.t_s - m.load_start_t)
    lags: dict[str, list[float]] = {g: [] for g in GROUPS}
    unanswered: dict[str, int] = dict.fromkeys(GROUPS, 0)
    healthy_by_account: dict[int, list[float]] = {}
    cycle = schedule(n)
    for number, sent_s in m.journal.accepted_sent_s.items():
        if sent_s < after_epoch:
            continue
        index = cycle[number % len(cycle)]
        group = role(index)
        answered_s = m.answered.get(number)
        if answered_s is None:
            unanswered[group] += 1
            answered_s = m.wall_ended  # its age at the end: a lower bound of its lag
        lag_ms = 1000 * (answered_s - sent_s)
        lags[group].append(lag_ms)
        if group == "healthy":
            healthy_by_account.setdefault(index, []).append(lag_ms)
    for g in GROUPS:
        ids = groups[g]
        requests = _count(after, ids, None) - _count(before, ids, None)
        ok = _count(after, ids, "200") - _count(before, ids, "200")
        permitted = len(ids) * limits[g] / window_s * span_s
        figures[f"{g}_429_pct"] = (
            100 * (_count(after, ids, "429") - _count(before, ids, "429")) / max(requests, 1)
        )
        figures[f"{g}_5xx_pct"] = (
            100
            * sum(_count(after, ids, code) - _count(before, ids, code) for code in ("500", "503"))
            / max(requests, 1)
        )
        figures[f"{g}_pct_of_permitted"] = 100 * ok / permitted
        ordered = sorted(lags[g])
        figures[f"{g}_lag_p50_ms"] = percentile(ordered, 0.5) if ordered else math.nan
        figures[f"{g}_lag_p99_ms"] = percentile(ordered, 0.99) if ordered else math.nan
        figures[f"{g}_lag_max_ms"] = ordered[-1] if ordered else math.nan
        figures[f"{g}_unanswered_pct"] = 100 * unanswered[g] / max(len(ordered), 1)
    figures["healthy_worst_account_p99_ms"] = max(
        (percentile(sorted(one), 0.99) for one in healthy_by_account.values()), default=math.nan
    )
    figures["offered_pct_of_permitted"] = 100 * OFFERED
    figures["claims_per_s"] = (m.end.x_ok - m.start.x_ok) / span_s
    figures["permitted_per_s"] = sum(len(groups[g]) * limits[g] for g in GROUPS) / window_s
    # Many lanes with a trickle each cost more per claim than scenario 1's one lane.
    figures["daemon_cpu_us_per_request"] = (
        1e6
        * (m.end.cpu_s.get("daemon", 0.0) - m.start.cpu_s.get("daemon", 0.0))
        / max(requests_all, 1)
    )
    figures["measured_s"] = span_s
    figures["foreign_cores"] = foreign_between(m.samples, m.start.t_s, m.end.t_s)
    return figures


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    n, limit, window_s = sizes.accounts, sizes.account_limit, sizes.account_window_s
    if ctx.engine_rate is not None:
        # Well below what the engine sent in scenario 1 of this run, whatever this machine's
        # speed today: the scenario measures the budgets, not raw throughput.
        limit = max(
            THROTTLE_DIVISOR, min(limit, round(ctx.engine_rate * ENGINE_SHARE * window_s / n))
        )
    # The first window (and a second: X's reset is a whole second), the measured windows,
    # and room for the sampling so that the last measured window is whole.
    load_s = window_s + 1 + sizes.account_windows * window_s + 2
    members = workload.accounts(n)
    counts = {g: sum(1 for i in range(n) if role(i) == g) for g in GROUPS}
    outcome = Outcome(
        3,
        f"Many accounts: {n} X accounts, X allows {limit} requests per {window_s:g} s each, "
        "the daemon its defaults",
    )
    outcome.notes += [
        f"groups: {counts['healthy']} healthy, {counts['slow']} slow ({SLOW_LATENCY} ms), "
        f"{counts['flaky']} flaky ({FLAKY_ERROR_RATE:.0%} 5xx), {counts['throttled']} "
        f"throttled ({throttled_limit(limit)} per {window_s:g} s)",
        f"daemon budget: {DAEMON_BUDGET['rate_limit_requests']:,} per "
        f"{DAEMON_BUDGET['rate_limit_window_s']:g} s (its default), learnt from X's headers",
        f"offered {OFFERED * len(schedule(n)) * limit / window_s:,.0f} events/s for "
        f"{load_s:g} s: {OFFERED:.0%} of a normal account's permitted rate to every account, "
        f"{SLOW_SHARE} times that to the slow ones",
    ]
    pool, cap = _DEFAULTS.x_max_connections, _DEFAULTS.account_max_in_flight
    wanted = counts["slow"] * min(cap, limit)
    outcome.notes.append(
        f"as each window opens, the slow accounts want {wanted} connections at once "
        f"({counts['slow']} accounts, each up to min(its cap {cap}, the limit {limit})) of the "
        f"daemon's pool of {pool}"
    )
    for attempt in range(sizes.repeat):
        m = await _measure(ctx, attempt, limit, load_s)
        outcome.add_run(_figures(m, members, limit, window_s))
        if attempt == 0:
            outcome.timeline = timeline(m.samples)
    f = outcome.figures
    outcome.checks = [
        Check("429s after the first window", f["share_429_pct"], 0.5, False, "% of requests"),
        Check(
            "healthy accounts' share of their permitted rate",
            f["healthy_pct_of_permitted"],
            90,
            True,
            "%",
        ),
        Check(
            "healthy accounts' p99 lag, ingest call to X's 200",
            f["healthy_lag_p99_ms"],
            LAG_BAR_MS,
            False,
            "ms",
        ),
    ]
    return outcome
