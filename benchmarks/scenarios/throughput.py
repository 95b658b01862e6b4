"""Scenario 1, throughput: realtime postbacks against the simulated X with no added latency,
with three references measured in the same run against the same simulated X.

Each run measures, one after the other:

- the transport ceiling: the daemon's own transport sending pre-signed requests with the
  engine's connection limit and the number of requests the engine has in flight in this
  scenario (one X account: its per-account cap);
- the simulated X's capacity: the same client with more connections and requests in flight,
  so that X, not the client, is the bound (the best of these runs and the ceiling's);
- the naive client: aiohttp building and signing each request with oauthlib, same limits;
- the engine, fed by the load generator so that a steady backlog waits for it (events arrive
  as fast as they are delivered). Its claims/s are counted at X; its latency is taken from
  outside, from the ingest call to X's receipt of each claim (`benchmarks/receipts.py`).

On a shared machine a measurement during which other processes kept more than a fifth of a
core busy is taken again (up to three times), and the quietest one counts; the report gives
the foreign load of each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from benchmarks import receipts
from benchmarks.context import Context, Sizes
from benchmarks.outcome import Check, Outcome, foreign_between, rate_between, timeline, window
from benchmarks.sampler import Sample, Sampler
from benchmarks.stack import Stack, stack
from postbackd.settings import Settings

# The daemon's settings in this scenario; the references get the limits they give the engine.
DAEMON: Mapping[str, object] = {"x_max_connections": 64}
# The simulated X's capacity: the best of the transport ceiling's own run and runs with these
# numbers of connections (each with as many requests in flight). Its event loop answers fewer
# per second as connections grow past what saturates it, so more is not always more.
X_CAPACITY_IN_FLIGHT = (32, 128)
# Pre-signed requests per second of a transport client's run: above what the simulated X
# answers here; should a client go faster, its measured time ends when they run out.
PRESIGN_PER_S = 15_000
# Events accepted but not yet answered by X while the engine is measured.
BACKLOG = 5000
BATCH = 100
QUIET_CORES = 0.2
TRIES = 3
# A single-threaded process busy this share of a core or more is what bounds a rate.
SATURATED_CORES = 0.9

Measured = tuple[float, float]  # (rate, foreign cores)


def engine_limits(daemon: Mapping[str, object]) -> tuple[int, int]:
    """(connections, requests in flight) of the engine with one X account, from the daemon's
    own settings: its pool's size, and the smaller of its global limit (twice the pool) and
    its per-account cap."""
    environ = {f"POSTBACKD_{name.upper()}": str(value) for name, value in daemon.items()}
    settings = Settings.load(environ=environ)
    connections = settings.x_max_connections
    return connections, min(2 * connections, settings.account_max_in_flight)


async def _reference(
    s: Stack, sizes: Sizes, mode: str, connections: int, in_flight: int
) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(TRIES):
        await s.x_reset()
        proc = s.client(
            f"ref-{mode}-{in_flight}",
            "refclient",
            "--url", f"{s.x_url}/12/conversion_event",
            "--mode", mode,
            "--duration-s", str(sizes.measure_s),
            "--warmup-s", str(sizes.warmup_s),
            "--connections", str(connections),
            "--in-flight", str(in_flight),
            "--presign-per-s", str(PRESIGN_PER_S),
            "--server-pid", str(s.mock.pid),
        )  # fmt: skip
        # Signing the transport client's requests comes before its warm-up.
        result = await s.result(proc, sizes.measure_s + sizes.warmup_s + 120)
        if best is None or result["foreign_cores"] < best["foreign_cores"]:
            best = result
        if result["foreign_cores"] <= QUIET_CORES:
            break
    assert best is not None
    return best


async def _engine(
    s: Stack, sizes: Sizes, attempt: int
) -> tuple[Measured, dict[str, float], list[Sample]]:
    """The engine's claims/s over the quietest of up to three windows of one steady run, its
    CPU per claim, and the latency from outside of the events sent in that window."""
    await s.x_reset()
    sends = s.work_dir / "sends.json"
    sampler = Sampler(s.session, s.x_url, s.api, s.daemon, [s.daemon, s.mock])
    best: tuple[Measured, dict[str, float], tuple[float, float]] | None = None
    async with sampler.running():
        gen = s.loadgen(
            "loadgen",
            "closed",
            "--backlog", str(BACKLOG),
            "--batch", str(BATCH),
            "--run", str(attempt),
            "--sends", str(sends),
        )  # fmt: skip
        sampler.procs = [s.daemon, s.mock, gen]
        start_s = await sampler.claims_for(sizes.warmup_s, 120) + sizes.warmup_s
        for i in range(TRIES):
            end_s = start_s + (i + 1) * sizes.measure_s
            await sampler.reach(end_s)
            begin_s = end_s - sizes.measure_s
            got = (
                rate_between(sampler.samples, begin_s, end_s),
                foreign_between(sampler.samples, begin_s, end_s),
            )
            if best is None or got[1] < best[0][1]:
                cpu = _cpu_per_claim(*window(sampler.samples, begin_s, end_s))
                best = (got, cpu, (begin_s, end_s))
            if got[1] <= QUIET_CORES:
                break
        sent = await s.result(gen, None)
        # The claims of the events sent in the window, up to the last, reach X before the
        # receipts are read.
        if await s.drained(int(sent["accepted"]), 60) is None:
            raise RuntimeError("the deliveries did not drain in 60 s")
    assert best is not None
    (begin_s, end_s) = best[2]
    latency = receipts.ingest_to_x(
        receipts.read_sends(sends),
        await receipts.read_receipts(s.session, s.x_url),
        attempt,
        sampler.started + begin_s,
        sampler.started + end_s,
    )
    return best[0], {**best[1], **latency}, sampler.samples


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    outcome = Outcome(1, "Throughput: realtime postbacks")
    connections, in_flight = engine_limits(DAEMON)
    levels = " and ".join(map(str, X_CAPACITY_IN_FLIGHT))
    outcome.notes.append(
        f"the engine, the transport ceiling and the naive client: at most {connections} "
        f"connections and {in_flight} requests in flight (the engine's limits with one X "
        f"account); the simulated X's capacity: the best of the transport ceiling's run and "
        f"runs with {levels} connections, each with as many requests in flight "
        "(x_capacity_in_flight). *_client_cores and *_x_cores: "
        "the CPU each side used over the measured time, in cores; a side at "
        f"{SATURATED_CORES} or more is saturated"
    )
    for attempt in range(sizes.repeat):
        async with stack(ctx.work_dir(f"s1-{attempt}"), mock={"receipt_log": True},
                         daemon=DAEMON) as s:  # fmt: skip
            ceiling = await _reference(s, sizes, "transport", connections, in_flight)
            x_cap = max(
                [ceiling]
                + [await _reference(s, sizes, "transport", n, n) for n in X_CAPACITY_IN_FLIGHT],
                key=lambda ref: ref["rate_per_s"],
            )
            naive = await _reference(s, sizes, "naive", connections, in_flight)
            engine, cpu, samples = await _engine(s, sizes, attempt)
        outcome.add_run(
            {
                "engine_claims_per_s": engine[0],
                "transport_ceiling_per_s": ceiling["rate_per_s"],
                "x_capacity_per_s": x_cap["rate_per_s"],
                "naive_client_per_s": naive["rate_per_s"],
                "x_capacity_in_flight": x_cap["in_flight"],
                # The bar's ratios, each of two measurements of this run.
                "ratio_to_ceiling": engine[0] / ceiling["rate_per_s"],
                "ratio_to_naive": engine[0] / naive["rate_per_s"],
                **cpu,
                **_sides("ceiling", ceiling),
                **_sides("x_capacity", x_cap),
                **_sides("naive", naive),
                "foreign_cores_engine": engine[1],
                "foreign_cores_ceiling": ceiling["foreign_cores"],
                "foreign_cores_x_capacity": x_cap["foreign_cores"],
                "foreign_cores_naive": naive["foreign_cores"],
            }
        )
        for name, ref in (("ceiling", ceiling), ("X capacity", x_cap)):
            if ref["ran_out"]:
                outcome.notes.append(
                    f"run {attempt + 1}: the {name} client used all its pre-signed requests "
                    f"after {ref['measured_s']:.1f} s of measurement, which ended there"
                )
        if attempt == 0:
            outcome.timeline = timeline(samples)
    f = outcome.figures
    ctx.engine_rate = f["engine_claims_per_s"]
    outcome.notes += _bounds(f)
    outcome.checks = [
        Check("claims/s ÷ transport ceiling (same run)", f["ratio_to_ceiling"], 0.5, True, "×"),
        Check("claims/s ÷ naive client (same run)", f["ratio_to_naive"], 2.5, True, "×"),
        Check("daemon CPU per claim", f["daemon_cpu_us_per_claim"], 100.0, False, "µs"),
    ]
    return outcome


def _sides(name: str, ref: dict[str, float]) -> dict[str, float]:
    """A reference's CPU, per request and in cores, of the client and of the simulated X."""
    return {
        f"{name}_client_cpu_us": ref["client_cpu_us"],
        f"{name}_x_cpu_us": ref["server_cpu_us"],
        f"{name}_client_cores": ref["client_cores"],
        f"{name}_x_cores": ref["server_cores"],
    }


def _bound(f: Mapping[str, float], name: str) -> str:
    client, x = f[f"{name}_client_cores"], f[f"{name}_x_cores"]
    foreign = f[f"foreign_cores_{name}"]
    if x >= SATURATED_CORES and x >= client:
        return f"the simulated X bounds it ({x:.2f} cores busy, the client {client:.2f})"
    if client >= SATURATED_CORES:
        return f"the client bounds it ({client:.2f} cores busy, the simulated X {x:.2f})"
    cores = os.cpu_count() or 1
    if client + x + foreign >= SATURATED_CORES * cores:
        return (
            f"the machine bounds it: its {cores} cores were busy (the client {client:.2f}, "
            f"the simulated X {x:.2f}, other processes {foreign:.2f})"
        )
    return (
        f"neither side nor the machine is saturated (the client {client:.2f} cores, the "
        f"simulated X {x:.2f}, other processes {foreign:.2f}): the requests in flight bound it"
    )


def _bounds(f: Mapping[str, float]) -> list[str]:
    """Who bounds each reference, what the daemon's CPU split holds, in prose, and a
    projection labelled as one."""
    notes = [
        f"transport ceiling {f['transport_ceiling_per_s']:,.0f}/s: {_bound(f, 'ceiling')}",
        f"simulated X's capacity {f['x_capacity_per_s']:,.0f}/s: {_bound(f, 'x_capacity')}",
        f"naive client {f['naive_client_per_s']:,.0f}/s: {_bound(f, 'naive')}",
        "latency (ingest_to_x_*): from the ingest call to X's receipt of the claim, events "
        "sent in the engine's measured window; the load generator keeps "
        f"{BACKLOG:,} events waiting, so it is mostly that queue (no bar here; scenario 2 "
        "has one)",
    ]
    notes.append(
        "daemon_loop_thread_cpu_us_per_claim: the daemon's event loop thread (ingest, "
        "attribution, signing, X's connections), to set beside ceiling_client_cpu_us, what "
        "sending a pre-signed request costs the same transport alone; "
        "daemon_other_threads_cpu_us_per_claim: the rest of the daemon, the store's writer "
        "thread above all (SQLite and its log writes)"
    )
    client_us = f["ceiling_client_cpu_us"]
    notes.append(
        f"projection, not a measurement: at its {client_us:.0f} µs of CPU per request, the "
        f"transport client alone on a core would send {1e6 / client_us:,.0f} requests/s if "
        "the simulated X cost nothing"
    )
    return notes


def _cpu_per_claim(first: Sample, last: Sample) -> dict[str, float]:
    """CPU time per claim of each process over a window, in microseconds, and the daemon's
    split between its event loop's thread and the others."""
    claims = last.x_ok - first.x_ok
    per_claim = {
        f"{name}_cpu_us_per_claim": (last.cpu_s[name] - first.cpu_s[name]) / claims * 1e6
        for name in last.cpu_s
        if name in first.cpu_s
    }
    loop_us = (last.loop_cpu_s - first.loop_cpu_s) / claims * 1e6
    per_claim["daemon_loop_thread_cpu_us_per_claim"] = loop_us
    per_claim["daemon_other_threads_cpu_us_per_claim"] = (
        per_claim["daemon_cpu_us_per_claim"] - loop_us
    )
    return per_claim
