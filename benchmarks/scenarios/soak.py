"""Scenario 7, soak: 50 X accounts under a steady open-loop load for minutes (quick) or half an
hour (full) while four of them take turns at being slow, throttled, revoked and failing, the
configuration changes every 10 s and (as root) the disk fills up every cycle. Measured from
outside the daemon: that no accepted event is lost and no ingest call hangs, the lag of the
healthy accounts next to the unhealthy ones, and whether the daemon's memory and database
grow.

The load generator journals every ingest call (`loadgen soak`, `journal.py`); the simulated
X's request log says when it answered each event's claim (`xlog.py`); the faults are
`rotation.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import diskfull, workload
from benchmarks.context import Context
from benchmarks.journal import Journal, inside
from benchmarks.outcome import Check, Outcome, foreign_between, timeline
from benchmarks.procs import daemon_help
from benchmarks.receipts import percentile
from benchmarks.rotation import Plan, Roles, Rotation
from benchmarks.sampler import Sample, Sampler
from benchmarks.stack import Stack, stack
from benchmarks.xlog import XLog

ACCOUNTS = 50
# 5 events/s per account, a small share of what scenario 1 delivers, so that the faults, not
# the load, are what the daemon has to cope with on 2 shared cores.
RATE = 250.0
BATCH = 25
CONCURRENCY = 64  # ingest calls in flight at most: room for every resend of a 20 s refusal
RUN = 7  # makes the device ids of this scenario's events its own
# Fixed accounts, spread over the list; the first one signs the tracker and stays healthy.
ROLES = {"slow": 10, "throttled": 20, "flaky": 30, "revoked": 40}
# A short X timeout, so that a quick run's slow phase of 18 s holds several rounds of
# timed-out requests rather than one.
X_TIMEOUT_S = 2.0
SLOW_ABOVE_MS = 3000.0
SLOW_BELOW_MS = 1000.0
THROTTLE = (5, 10.0)  # X's requests per window for the throttled account
# X's published limit (60,000 requests per 15 minutes per token) in windows of 10 s, so that
# the throttle changes a window's count and never its length: X keeps a token's window, and
# the daemon rightly takes a reset earlier than the one X confirmed for an older window's.
X_LIMIT = {"rate_limit": 667, "rate_window_s": 10.0}
# The daemon keeps its default budget and learns X's limits from the headers.
DAEMON_BUDGET = {"rate_limit_requests": 60_000, "rate_limit_window_s": 900.0}
ANSWER_TIMEOUT_S = 10.0  # an ingest call unanswered this long is hung
RESEND_S = 1.0
GIVE_UP_S = 60.0  # resends of refused batches go on this long after the load ended
SAMPLE_S = 5.0
# Dead letters are replayed this often while the load runs (and in the drain).
REPLAY_EVERY_S = 10.0
LAG_BAR_MS = 1000.0
# Memory: the last minute's peak against the peak of the first fault cycle (until its
# disk-full recovery is over), which brings every kind of work once (the largest: the
# backlog that a full disk leaves, about 5,000 events accepted at once), so the daemon's
# working size is reached by its end. What grows by a fifth after that is held per event or
# per fault: a leak, which a longer run would turn into an outage.
GROWTH_BAR_PCT = 20.0
# The tmpfs holds the database and its WAL between checkpoints: 978 bytes an event once
# checkpointed (docs/operations.md), four times that with room to spare.
TMPFS_BYTES_PER_EVENT = 4096
TMPFS_SPARE_MIB = 128


@dataclass(slots=True)
class Measured:
    """What one soak run saw, for the figures."""

    wall_started: float  # epoch seconds when the load started
    load_start_t: float  # the same moment in sampler time
    load_s: float  # how long the load ran (its resends aside)
    drain_limit_s: float
    journal: Journal
    answered: dict[int, float]  # event number -> X's first 200 to its claim (epoch s)
    lost: list[int]  # accepted event numbers X never answered 200
    sent: dict[str, float]  # the load generator's summary
    samples: list[Sample]
    rotation: Rotation
    dead: Counter[str]  # dead deliveries replayed, healthy or unhealthy
    drain_s: float
    depth: dict[str, float]  # the daemon's queue by state at the end

    def sampler_t(self, epoch_s: float) -> float:
        """An epoch time in the sampler's time."""
        return self.load_start_t + (epoch_s - self.wall_started)


async def _replay_dead(s: Stack, healthy: set[str]) -> Counter[str]:
    """Dead deliveries sent again, counted by account group before they go."""
    dead = await s.deliveries("dead")
    if dead:
        await s.replay([int(str(d["id"])) for d in dead])
    return Counter("healthy" if d["x_account_id"] in healthy else "unhealthy" for d in dead)


async def _measure(
    ctx: Context, plan: Plan, roles: Roles, healthy: set[str], retention_s: float | None
) -> tuple[Measured, int | None]:
    sizes = ctx.sizes
    as_root = plan.disk_full
    tmpfs_mib = math.ceil(RATE * sizes.soak_s * TMPFS_BYTES_PER_EVENT / 2**20) + TMPFS_SPARE_MIB
    daemon: dict[str, object] = {**DAEMON_BUDGET, "x_timeout_s": X_TIMEOUT_S}
    if retention_s is not None:
        daemon["retention_s"] = retention_s
    # The simulated X keeps its whole request log: the harness pages through it as it grows.
    mock = {**X_LIMIT, "request_log_max": None}
    async with stack(
        ctx.work_dir("s7"),
        accounts=ACCOUNTS,
        mock=mock,
        daemon=daemon,
        tmpfs_mib=tmpfs_mib if as_root else None,
    ) as s:
        data_dir = s.work_dir / "data"
        journal_path = s.work_dir / "journal.ndjson"
        sampler = Sampler(
            s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock],
            interval_s=SAMPLE_S, data_dir=data_dir,
        )  # fmt: skip
        xlog = XLog(s.session, s.x_url)
        async with sampler.running(), xlog.following(SAMPLE_S):
            started, wall_started = time.monotonic(), time.time()
            gen = s.loadgen(
                "loadgen", "soak",
                "--rate", str(RATE), "--batch", str(BATCH), "--duration-s", str(sizes.soak_s),
                "--concurrency", str(CONCURRENCY), "--run", str(RUN),
                "--journal", str(journal_path), "--answer-timeout-s", str(ANSWER_TIMEOUT_S),
                "--resend-s", str(RESEND_S), "--give-up-s", str(GIVE_UP_S),
            )  # fmt: skip
            sampler.procs = [s.daemon, s.mock, gen]
            filler = diskfull.Filler(data_dir) if as_root else None
            rotation = Rotation(s, plan, roles, filler, started)
            # An operator replays dead letters while the load runs, well within the
            # retention: the janitor deletes an event whose deliveries are all final, dead
            # ones included, once it is older than retention_s.
            dead: Counter[str] = Counter()

            async def replaying() -> None:
                nonlocal dead
                while True:
                    await asyncio.sleep(REPLAY_EVERY_S)
                    # Refused (503) while the disk is full: the next turn tries again.
                    with contextlib.suppress(RuntimeError):
                        dead += await _replay_dead(s, healthy)

            replays = asyncio.create_task(replaying())
            try:
                async with rotation.running():
                    sent = await s.result(gen, sizes.soak_s + GIVE_UP_S + 60)
            finally:
                replays.cancel()
                await asyncio.gather(replays, return_exceptions=True)
            journal = Journal.read(journal_path)
            device = {
                workload.hashed_device_id(workload.idfa(RUN, n)): n for n in journal.accepted_sent_s
            }
            # The drain: no fault since the calm stretch began; dead deliveries replayed.
            # It ends when X answered every accepted event and the daemon has nothing left
            # to send (its queue gauge, counted every 5 s: deliveries whose answer it could
            # not record while the disk was full go again), or at the time limit.
            drain_started = time.monotonic()
            waiting = set(device)
            while True:
                await xlog.catch_up()
                waiting -= xlog.first_ok.keys()
                depth = await s.queue_depth()
                if not waiting and sum(depth.values()) == 0:
                    break
                if time.monotonic() - drain_started > sizes.soak_drain_s:
                    break
                dead += await _replay_dead(s, healthy)
                await asyncio.sleep(2.0)
            drain_s = time.monotonic() - drain_started
            last = await sampler.sample()
        # The last catch-up came after the last sample: fewer entries read than X counted
        # then would mean a log that lost entries, and lags and losses read from it wrong.
        x_requests = int(str(last.x.get("requests_total", 0)))
        if xlog.read < x_requests:
            raise RuntimeError(f"read {xlog.read} of X's {x_requests} logged requests")
    answered = {n: xlog.first_ok[d] for d, n in device.items() if d in xlog.first_ok}
    measured = Measured(
        wall_started=wall_started,
        load_start_t=started - sampler.started,
        load_s=sizes.soak_s,
        drain_limit_s=sizes.soak_drain_s,
        journal=journal,
        answered=answered,
        lost=sorted(n for d, n in device.items() if d not in xlog.first_ok),
        sent=sent,
        samples=sampler.samples,
        rotation=rotation,
        dead=dead,
        drain_s=drain_s,
        depth=depth,
    )
    return measured, tmpfs_mib if as_root else None


def _at(samples: Sequence[Sample], t_s: float) -> Sample:
    """The first sample at or after `t_s`, else the last one."""
    return next((x for x in samples if x.t_s >= t_s), samples[-1])


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    slope, _ = statistics.linear_regression([t for t, _ in points], [v for _, v in points])
    return 60 * slope


def _p99_ms(lags: Sequence[float]) -> float:
    return percentile(sorted(lags), 0.99) if lags else math.nan


def _lags(
    m: Measured, accounts: Sequence[str], after_s: float, windows: Sequence[tuple[float, float]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per account, the lags (ms) of the events sent after `after_s` (epoch): outside the
    disk-full recovery windows, and inside them."""
    outside: dict[str, list[float]] = {a: [] for a in accounts}
    within: dict[str, list[float]] = {a: [] for a in accounts}
    for n, sent_s in m.journal.accepted_sent_s.items():
        answered_s = m.answered.get(n)
        if answered_s is None or sent_s < after_s:
            continue
        chosen = within if inside(sent_s, windows) else outside
        chosen[accounts[n % ACCOUNTS]].append(1000 * (answered_s - sent_s))
    return outside, within


def _figures(
    m: Measured, sizes_warmup_s: float, plan: Plan, roles: Roles, healthy: set[str]
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    accounts = [a.id for a in workload.accounts(ACCOUNTS)]
    by_role = roles.by_account()
    spans = m.rotation.disk_full_spans
    windows = m.journal.recovery_windows(spans, m.answered)
    outside, within = _lags(m, accounts, m.wall_started + sizes_warmup_s, windows)
    every = {a: outside[a] + within[a] for a in accounts}
    healthy_p99 = sorted(_p99_ms(outside[a]) for a in healthy)
    healthy_p99_every = sorted(_p99_ms(every[a]) for a in healthy)
    healthy_outside = [x for a in healthy for x in outside[a]]
    unhealthy_every = [x for a in by_role for x in every[a]]
    healthy_within = [x for a in healthy for x in within[a]]
    # From the disk's space given back until X answered the last event of the backlog.
    recovery_s = [end - free for (_, free), (_, end) in zip(spans, windows, strict=True)]
    backlog = [len(events) for events in m.journal.backlogs(spans)]

    samples, sent = m.samples, m.sent
    warm_t = m.load_start_t + sizes_warmup_s
    # The first cycle is over once its disk-full recovery is, when that comes later.
    cycle_end_t = max(
        [
            m.load_start_t + min(plan.start_s + plan.cycle_s, plan.end_s),
            *(m.sampler_t(end_s) for _, end_s in windows[:1]),
        ]
    )
    load_end_t = m.load_start_t + m.load_s
    after_warmup = [x for x in samples if warm_t <= x.t_s <= load_end_t]
    # Up to the first sample taken after that moment: what happened by then shows there.
    first_cycle = [x for x in after_warmup if x.t_s <= _at(samples, cycle_end_t).t_s]
    last_minute = [x for x in after_warmup if x.t_s >= load_end_t - 60]
    rss_cycle_mb = max(x.rss_kb for x in first_cycle) / 1024
    rss_last_mb = max(x.rss_kb for x in last_minute) / 1024
    db_mb = [(x.t_s, (x.db_bytes or 0) / 2**20) for x in after_warmup]
    last = samples[-1]
    by_account, conversions = last.x.get("by_account"), last.x.get("conversions")
    assert isinstance(by_account, dict) and isinstance(conversions, dict)
    healthy_not_200 = sum(
        n
        for account, entry in by_account.items()
        if account in healthy
        for status, n in entry["status"].items()
        if status != "200"
    )
    daemon_cpu_s = after_warmup[-1].cpu_s.get("daemon", 0.0) - after_warmup[0].cpu_s.get(
        "daemon", 0.0
    )
    changes = m.rotation.changes
    figures: dict[str, float] = {
        "offered_events_per_s": RATE,
        "events_sent": sent["sent"],
        "events_accepted": float(len(m.journal.accepted_sent_s)),
        "events_rejected": sent["refused"],
        "events_never_accepted": sent["never_accepted"],
        "ingest_calls_accepted": sent["calls_accepted"],
        "ingest_calls_503_store_unavailable": sent["calls_unavailable"],
        "ingest_calls_hung": sent["calls_hung"],
        "ingest_calls_cut_off": sent["calls_failed"],
        "ingest_calls_other_5xx": sent["calls_other_5xx"],
        "ingest_calls_refused_4xx": sent["calls_refused"],
        "events_lost": float(len(m.lost)),
        "drain_s": m.drain_s,
        "dead_replayed_healthy": float(m.dead["healthy"]),
        "dead_replayed_unhealthy": float(m.dead["unhealthy"]),
        "healthy_p99_median_ms": statistics.median(healthy_p99),
        "healthy_p99_worst_ms": healthy_p99[-1],
        "healthy_p99_ms": _p99_ms(healthy_outside),
        "healthy_p50_ms": percentile(sorted(healthy_outside), 0.5),
        **{f"{role}_p99_ms": _p99_ms(every[a]) for a, role in by_role.items()},
        "unhealthy_p99_ms": _p99_ms(unhealthy_every),
        "healthy_p99_worst_incl_recovery_ms": healthy_p99_every[-1],
        "healthy_events_measured": float(len(healthy_outside)),
        "healthy_events_in_recovery": float(len(healthy_within)),
        "healthy_recovery_p99_ms": _p99_ms(healthy_within),
        "recovery_s_max": max(recovery_s, default=0.0),
        "recovery_backlog_events_max": float(max(backlog, default=0)),
        # The backlog over its recovery time, at least: X answered the load's own events
        # meanwhile too.
        "recovery_backlog_per_s_min": min(
            (n / t for n, t in zip(backlog, recovery_s, strict=True) if t > 0), default=0.0
        ),
        "healthy_x_answers_not_200": float(healthy_not_200),
        "x_429s": float(str(last.x.get("too_many_requests", 0))),
        "x_duplicate_claims": float(conversions["duplicates"]),
        "rss_warm_mb": _at(samples, warm_t).rss_kb / 1024,
        "rss_first_cycle_max_mb": rss_cycle_mb,
        "rss_last_minute_max_mb": rss_last_mb,
        "rss_end_mb": after_warmup[-1].rss_kb / 1024,
        "rss_max_mb": max(x.rss_kb for x in after_warmup) / 1024,
        "rss_growth_pct": 100 * (rss_last_mb / rss_cycle_mb - 1),
        "rss_slope_mb_per_min": _slope_per_min([(x.t_s, x.rss_kb / 1024) for x in after_warmup]),
        "db_warm_mb": db_mb[0][1],
        "db_end_mb": db_mb[-1][1],
        "db_max_mb": max(v for _, v in db_mb),
        "db_slope_mb_per_min": _slope_per_min(db_mb),
        "store_errors": float(last.store_errors),
        "samples_not_ready": float(sum(1 for x in samples if x.ready is False)),
        "ready_at_end": 1.0 if last.ready else 0.0,
        "disk_full_intervals": float(len(spans)),
        "config_changes_done": float(changes["done"]),
        "config_changes_refused_503": float(changes["refused_503"]),
        "config_changes_failed": float(
            sum(n for k, n in changes.items() if k.startswith("failed"))
        ),
        **{f"queue_{state}_at_end": value for state, value in m.depth.items()},
        "daemon_cpu_cores": daemon_cpu_s / (after_warmup[-1].t_s - after_warmup[0].t_s),
        "foreign_cores": foreign_between(samples, m.load_start_t, load_end_t),
    }
    return figures, windows


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    soak_s, warmup_s = sizes.soak_s, sizes.soak_warmup_s
    outcome = Outcome(
        7,
        f"Soak: {ACCOUNTS} X accounts, {RATE:g} events/s for {soak_s / 60:g} min, "
        "faults rotating over 4 of them",
    )
    members = [a.id for a in workload.accounts(ACCOUNTS)]
    roles = Roles(**{role: members[i] for role, i in ROLES.items()})
    healthy = set(members) - set(roles.by_account())
    retention_s = sizes.soak_retention_s if "--retention-s" in await daemon_help() else None
    plan = Plan(
        start_s=warmup_s,
        end_s=soak_s - sizes.soak_calm_s,
        cycle_s=sizes.soak_cycle_s,
        disk_full=diskfull.can_mount(),
        slow_above_ms=SLOW_ABOVE_MS,
        slow_below_ms=SLOW_BELOW_MS,
        throttle=THROTTLE,
    )
    m, tmpfs_mib = await _measure(ctx, plan, roles, healthy, retention_s)
    figures, windows = _figures(m, warmup_s, plan, roles, healthy)
    if retention_s is not None:
        load_end_t = m.load_start_t + m.load_s
        retained = _at(m.samples, m.load_start_t + retention_s).db_bytes or 0
        last_minute = [x.db_bytes or 0 for x in m.samples if load_end_t - 60 <= x.t_s <= load_end_t]
        figures["db_after_retention_mb"] = retained / 2**20
        figures["db_growth_pct"] = 100 * (max(last_minute) / max(retained, 1) - 1)
    outcome.add_run(figures)
    outcome.timeline = timeline(m.samples)
    outcome.notes += _notes(m, figures, plan, roles, sizes.soak_calm_s, tmpfs_mib, retention_s)
    outcome.notes += _where_late(m, healthy, windows, plan, warmup_s)
    outcome.checks = _checks(figures, retention_s is not None)
    return outcome


def _notes(
    m: Measured,
    f: dict[str, float],
    plan: Plan,
    roles: Roles,
    calm_s: float,
    tmpfs_mib: int | None,
    retention_s: float | None,
) -> list[str]:
    by_role = roles.by_account()
    role_names = ", ".join(f"{role} {account}" for account, role in by_role.items())
    notes = [
        f"offered load {RATE:g} events/s, open loop, in batches of {BATCH} every "
        f"{BATCH / RATE:g} s, event n to account n mod {ACCOUNTS} ({RATE / ACCOUNTS:g}/s each); "
        f"unhealthy accounts: {role_names}; the other {ACCOUNTS - len(by_role)} are healthy",
        plan.describe()
        + f"; slow: latency {SLOW_ABOVE_MS:g} ms, then {SLOW_BELOW_MS:g} ms, against the "
        f"daemon's x_timeout_s {X_TIMEOUT_S:g}; throttled: {THROTTLE[0]} requests per "
        f"{THROTTLE[1]:g} s at X, the daemon on its default budget; flaky: 5xx half the "
        "time; revoked: 401, then tokens restored and the account authenticated again; a "
        f"configuration change every 10 s; no fault in the last {calm_s:g} s of the load",
        f"X's other accounts: {X_LIMIT['rate_limit']} requests per {X_LIMIT['rate_window_s']:g}"
        " s per token (X's 60,000 per 15 minutes in windows that the throttle does not change)",
        (
            f"data dir on a {tmpfs_mib} MiB tmpfs of its own; disk full "
            f"{f['disk_full_intervals']:.0f} time(s) for 20 s"
            if tmpfs_mib is not None
            else "not run as root: no tmpfs, no disk-full interval (mounting needs root)"
        ),
        "lag: from the load generator sending the ingest call answered 202 to the simulated "
        "X's first 200 to the event's claim (its request log, same clock), events sent after "
        "the warm-up; p99 per account, then the median and worst of the healthy accounts' "
        "p99s. The bar leaves out the events sent during a disk-full interval and until X "
        "answered the backlog it left (the refused batches, resent and accepted at once "
        "when the disk has room): every account waits behind that backlog alike; those "
        "events are counted apart (healthy_recovery_p99_ms, recovery_s_max: from the disk's "
        "space given back to X's answer to the backlog's last event)",
        "lost: an event answered 202 whose claim X never answered 200 by the end of the "
        f"drain (faults off for the load's last stretch, then at most {m.drain_limit_s:g} s "
        "more); dead deliveries are replayed every "
        f"{REPLAY_EVERY_S:g} s and in the drain, as an operator would, and counted apart "
        "(dead_replayed_*)",
        f"daemon RSS: {f['rss_warm_mb']:.0f} MB after the warm-up, "
        f"{f['rss_first_cycle_max_mb']:.0f} MB at most in the first fault cycle (its "
        "disk-full recovery included), "
        f"{f['rss_last_minute_max_mb']:.0f} MB at most in "
        f"the load's last minute, {f['rss_end_mb']:.0f} MB at the end, {f['rss_max_mb']:.0f} MB "
        f"at most; {f['rss_slope_mb_per_min']:+.2f} MB per minute after the warm-up",
        f"SQLite files (database, WAL, index): {f['db_warm_mb']:.1f} MB after the warm-up, "
        f"{f['db_end_mb']:.1f} MB at the end of the load, {f['db_max_mb']:.1f} MB at most; "
        f"{f['db_slope_mb_per_min']:+.2f} MB per minute",
        (
            f"retention_s {retention_s:g}: the database is checked to stay flat after it"
            if retention_s is not None
            else "the daemon has no retention_s setting yet (serve --help lists no "
            "--retention-s): the database grows with every event; its size is reported, "
            "not checked"
        ),
        "one run whatever --repeat says: a soak is one long run",
    ]
    if m.lost:
        accounts = [a.id for a in workload.accounts(ACCOUNTS)]
        counts = Counter(accounts[n % ACCOUNTS] for n in m.lost)
        lost = ", ".join(f"{a} ({by_role.get(a, 'healthy')}) {n}" for a, n in counts.most_common())
        notes.append(f"lost by account: {lost}")
    return notes


def _where_late(
    m: Measured,
    healthy: set[str],
    windows: Sequence[tuple[float, float]],
    plan: Plan,
    warmup_s: float,
) -> list[str]:
    """When the healthy accounts' late events were sent (5 s buckets since the load
    started) and which faults were on then: where to look when the bar fails."""
    accounts = [a.id for a in workload.accounts(ACCOUNTS)]
    buckets: Counter[int] = Counter()
    for n, sent_s in m.journal.accepted_sent_s.items():
        if accounts[n % ACCOUNTS] not in healthy or sent_s < m.wall_started + warmup_s:
            continue
        answered_s = m.answered.get(n, math.inf)
        if answered_s - sent_s > LAG_BAR_MS / 1000 and not inside(sent_s, windows):
            buckets[int((sent_s - m.wall_started) // 5) * 5] += 1
    if not buckets:
        return []
    spans = "; ".join(
        f"{t}-{t + 5} s: {n} ({', '.join(sorted(plan.active(t))) or 'no fault'})"
        for t, n in sorted(buckets.items())
    )
    return [
        f"healthy accounts' events over {LAG_BAR_MS:g} ms outside disk-full recovery, by when "
        f"they were sent (seconds since the load started; faults on then): {spans}"
    ]


def _checks(f: dict[str, float], retention: bool) -> list[Check]:
    checks = [
        Check("events lost (accepted, never answered 200 by X)", f["events_lost"], 0, False),
        Check("ingest calls hung (no answer in 10 s)", f["ingest_calls_hung"], 0, False),
        Check("events never accepted (refused to the end)", f["events_never_accepted"], 0, False),
        Check("healthy accounts' dead deliveries", f["dead_replayed_healthy"], 0, False),
        Check(
            "worst healthy account's p99 lag (outside disk-full recovery)",
            f["healthy_p99_worst_ms"],
            LAG_BAR_MS,
            False,
            "ms",
        ),
        Check(
            "RSS growth: last minute's peak over the first cycle's",
            f["rss_growth_pct"],
            GROWTH_BAR_PCT,
            False,
            "%",
        ),
    ]
    if retention:
        checks.append(
            Check(
                "database growth: last minute over the first retention period",
                f["db_growth_pct"],
                GROWTH_BAR_PCT,
                False,
                "%",
            )
        )
    return checks
