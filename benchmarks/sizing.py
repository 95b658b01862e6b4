"""Sizing figures for docs/operations.md, measured on the real daemon and simulated X as
separate processes (the same stack as the load benchmarks):

- disk per million events: the benchmark event (an iOS purchase with device ids, IP, user
  agent and event data, ~420 bytes of JSON) ingested N times, every claim answered by X
  (so each event has its delivery and its claim row), the daemon stopped (its WAL
  checkpointed into the database file); the database file's growth over the configured but
  empty store, divided by N.
- memory per pending delivery: the daemon's resident memory (VmRSS) with a warm-up backlog,
  then with N more deliveries pending, once behind X down (ready, waiting for the circuit)
  and once behind a 600 s postback delay (scheduled); the growth divided by N.

    python -m benchmarks.sizing [--events N] [--out DIR]

It prints the figures and writes them, with the machine they were measured on, to
`sizing.md` in DIR (`benchmarks/results`, the committed report the docs point to).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.report import machine
from benchmarks.stack import Stack, stack
from postbackd.store.db import DB_NAME

BATCH = 1000
CONCURRENCY = 4
WARM_UP = 5_000
SETTLE_S = 5.0
RESULTS = Path(__file__).resolve().parent / "results"


def _db_bytes(data_dir: Path) -> int:
    return sum(
        (data_dir / (DB_NAME + suffix)).stat().st_size
        for suffix in ("", "-wal")
        if (data_dir / (DB_NAME + suffix)).exists()
    )


async def _burst(s: Stack, events: int, run: int) -> None:
    sent = await s.result(s.burst(events, BATCH, CONCURRENCY, run), 1800)
    if sent["accepted"] != events:
        raise RuntimeError(f"{sent['accepted']:.0f} of {events} events accepted")


async def disk(work_dir: Path, events: int) -> dict[str, float]:
    async with stack(work_dir / "disk") as s:
        empty = _db_bytes(s.work_dir / "data")
        await _burst(s, events, 1)
        if await s.drained(events, 1800) is None:
            raise RuntimeError("X did not answer every claim")
        await asyncio.sleep(SETTLE_S)  # the last results written
        s.daemon.stop()
        full = _db_bytes(s.work_dir / "data")
    return {
        "events": events,
        "empty_store_bytes": empty,
        "store_bytes": full,
        "bytes_per_event": (full - empty) / events,
        "mib_per_million_events": (full - empty) / events * 1e6 / 2**20,
    }


async def memory(work_dir: Path, events: int, *, outage: bool) -> dict[str, float]:
    name = "outage" if outage else "delay"
    options = {"mock": {"outage": True}} if outage else {"delay_s": 600}
    async with stack(work_dir / name, **options) as s:  # type: ignore[arg-type]
        await _burst(s, WARM_UP, 1)
        await asyncio.sleep(SETTLE_S)
        before_kb, _ = s.daemon.memory_kb()
        await _burst(s, events, 2)
        await asyncio.sleep(SETTLE_S)
        after_kb, peak_kb = s.daemon.memory_kb()
    return {
        "pending": WARM_UP + events,
        "rss_before_mib": before_kb / 1024,
        "rss_after_mib": after_kb / 1024,
        "peak_rss_mib": peak_kb / 1024,
        "bytes_per_pending_delivery": (after_kb - before_kb) * 1024 / events,
    }


async def measure(events: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="postbackd-sizing-") as tmp:
        work_dir = Path(tmp)
        results = {
            "disk": await disk(work_dir, events),
            "memory, X down (ready)": await memory(work_dir, events, outage=True),
            "memory, 600 s delay (scheduled)": await memory(work_dir, events, outage=False),
        }
    return results


def main(events: int, out_dir: Path) -> None:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = asyncio.run(measure(events))
    for title, figures in results.items():
        print(title)
        for key, value in figures.items():
            print(f"  {key}: {value:,.1f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sizing.md"
    path.write_text(markdown(results, events, started), encoding="utf-8")
    print(f"wrote {path}")


def markdown(results: dict[str, dict[str, float]], events: int, started: str) -> str:
    m = machine()
    lines = [
        "# postbackd sizing",
        "",
        f"Run: `python -m benchmarks.sizing --events {events}`, {started}.",
        "",
        f"Machine: {m['cpu_count']} CPUs, {m['cpu_model']}; {m['system']}; {m['python']}.",
        "",
        "| measurement | figure | value |",
        "| --- | --- | ---: |",
    ]
    for title, figures in results.items():
        lines += [f"| {title} | {key} | {value:,.1f} |" for key, value in figures.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per measurement")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where sizing.md goes (default: %(default)s)"
    )
    args = parser.parse_args()
    main(args.events, args.out)
