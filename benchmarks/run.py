"""Run the load benchmarks: the simulated X, the daemon and a load generator as separate
processes on loopback, eight scenarios (the seventh, a long soak, and the eighth, many
daemons on one PostgreSQL, only when chosen), and a report.

    python -m benchmarks.run [--quick] [--scenarios 1,2,...] [--out DIR] [--repeat N]

Prints a table and writes report.json, report.md and report.png to DIR (default
benchmarks/results, or benchmarks/results/quick with --quick). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report
from benchmarks.context import FULL, QUICK, Context
from benchmarks.outcome import Outcome
from benchmarks.scenarios import (
    accounts,
    backlog,
    daemons,
    ingest,
    latency,
    outage,
    soak,
    throughput,
)

Scenario = Callable[[Context], Awaitable[Outcome]]
SCENARIOS: dict[int, tuple[str, Scenario]] = {
    1: ("throughput", throughput.run),
    2: ("latency", latency.run),
    3: ("many accounts", accounts.run),
    4: ("outage", outage.run),
    5: ("ingest", ingest.run),
    6: ("backlog", backlog.run),
    7: ("soak", soak.run),
    8: ("many daemons", daemons.run),
}
# These measure against scenario 1's claims/s: it runs first when they are chosen.
_NEED_S1 = {2, 3, 4, 5}
_RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6",
        help=(
            "comma-separated numbers (default: 1 to 6; 7, the soak, takes 30 minutes; 8, many "
            "daemons on one PostgreSQL, needs PostgreSQL's server installed)"
        ),
    )
    parser.add_argument("--out", type=Path, help="report directory")
    parser.add_argument("--repeat", type=int, help="runs per scenario (default 3, quick 1)")
    args = parser.parse_args(argv)
    try:
        args.scenarios = sorted({int(n) for n in args.scenarios.split(",")})
    except ValueError:
        parser.error("--scenarios takes numbers such as 1,3,6")
    if not set(args.scenarios) <= set(SCENARIOS):
        parser.error(f"--scenarios: choose among {', '.join(map(str, SCENARIOS))}")
    return args


async def run_all(args: argparse.Namespace, tmp: Path) -> list[Outcome]:
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    ctx = Context(sizes, args.quick, tmp)
    chosen = list(args.scenarios)
    if set(chosen) & _NEED_S1 and 1 not in chosen:
        print("scenario 1 runs first: scenarios 2, 3, 4 and 5 are measured against it")
        chosen.insert(0, 1)
    outcomes = []
    for number in chosen:
        name, scenario = SCENARIOS[number]
        started = time.monotonic()
        print(f"scenario {number} ({name}) ...", flush=True)
        try:
            outcome = await scenario(ctx)
        except Exception as exc:  # noqa: BLE001  (reported as the scenario's error; the others still run)
            traceback.print_exc()
            outcome = Outcome(number, name, error=f"{type(exc).__name__}: {exc}")
        outcome.notes.append(f"took {time.monotonic() - started:.0f} s")
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.out or (_RESULTS / "quick" if args.quick else _RESULTS)
    started = time.monotonic()
    meta: dict[str, object] = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "load_start": report.load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="postbackd-bench-") as tmp:
        outcomes = asyncio.run(run_all(args, Path(tmp)))
    meta["load_end"] = report.load_average()
    meta["duration_s"] = time.monotonic() - started
    meta["repeat"] = args.repeat or (QUICK if args.quick else FULL).repeat
    print()
    print(report.table(outcomes))
    for path in report.write(outcomes, meta, out_dir):
        print(f"wrote {path}")
    failed = any(o.error for o in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
