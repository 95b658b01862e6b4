"""The load generator, run as its own process: Kochava events to `POST /track/json` in NDJSON
batches, spread round-robin over the postbacks' event names.

    python -m benchmarks.loadgen --url DAEMON --app APP --events N1,N2 MODE ...

Modes:
  closed  keep `--backlog` events accepted but not yet answered by X (read from the
          simulated X's counters) until SIGTERM: the engine always has work, and events
          arrive exactly as fast as they are delivered.
  rate    `--rate` events per second, paced in batches, for `--duration-s` (open loop).
  burst   `--total` events as fast as the daemon accepts them.

Prints one JSON line: events sent and accepted, and the time it took; SIGTERM ends any
mode early, with that line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time
from collections.abc import Iterator

import aiohttp
import orjson
import uvloop

from benchmarks import workload

_NDJSON = {"Content-Type": "application/x-ndjson", **workload.api_headers()}
_POLL_S = 0.05


class Generator:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self._url = f"{args.url}/track/json"
        self._app = args.app
        self._names = itertools.cycle(args.events.split(","))
        self._run = args.run
        self._numbers = itertools.count()
        self._session = session
        self.sent = self.accepted = self.refused = 0

    def batch(self, size: int) -> bytes:
        now_s = time.time()
        return b"\n".join(
            workload.event(self._app, self._run, n, now_s, name)
            for n, name in zip(itertools.islice(self._numbers, size), self._names, strict=False)
        )

    async def send(self, size: int) -> None:
        body = self.batch(size)
        self.sent += size
        async with self._session.post(self._url, data=body, headers=_NDJSON) as answer:
            result = await answer.json()
        if answer.status != 202:
            raise RuntimeError(f"ingest answered {answer.status}: {str(result)[:300]}")
        self.accepted += int(result["accepted"])
        self.refused += len(result["rejected"])


async def _answered(session: aiohttp.ClientSession, mock: str) -> int:
    async with session.get(f"{mock}/_mock/stats") as answer:
        stats = await answer.json()
    return int(stats["conversions"]["recorded"])


async def closed(gen: Generator, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
    while True:
        room = args.backlog - (gen.accepted - await _answered(session, args.mock))
        if room >= args.batch:
            sends = min(room // args.batch, args.concurrency)
            await asyncio.gather(*(gen.send(args.batch) for _ in range(sends)))
        else:
            await asyncio.sleep(_POLL_S)


async def rate(gen: Generator, args: argparse.Namespace) -> None:
    interval_s = args.batch / args.rate
    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for i in itertools.count():
        at = started + i * interval_s
        if at - started >= args.duration_s:
            break
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        task = asyncio.create_task(gen.send(args.batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


async def burst(gen: Generator, args: argparse.Namespace) -> None:
    full, rest = divmod(args.total, args.batch)
    sizes: Iterator[int] = iter([args.batch] * full + ([rest] if rest else []))

    async def sender() -> None:
        for size in sizes:
            await gen.send(size)

    await asyncio.gather(*(sender() for _ in range(args.concurrency)))


async def main(args: argparse.Namespace) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        gen = Generator(args, session)
        started = time.monotonic()
        if args.mode == "closed":
            work = closed(gen, args, session)
        elif args.mode == "rate":
            work = rate(gen, args)
        else:
            work = burst(gen, args)
        task = asyncio.create_task(work)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        elapsed_s = time.monotonic() - started
    return {
        "sent": gen.sent,
        "accepted": gen.accepted,
        "refused": gen.refused,
        "elapsed_s": elapsed_s,
        "rate_per_s": gen.accepted / elapsed_s,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("closed", "rate", "burst"))
    parser.add_argument("--url", required=True, help="the daemon's base URL")
    parser.add_argument("--mock", help="the simulated X's base URL (closed mode)")
    parser.add_argument("--app", required=True, help="kochava_app_id of the events")
    parser.add_argument(
        "--events", default=workload.EVENT_NAME, help="event names, comma-separated"
    )
    parser.add_argument("--run", type=int, default=1, help="makes device ids distinct per run")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--duration-s", type=float, default=10.0, help="rate mode")
    parser.add_argument("--backlog", type=int, default=5000, help="closed mode")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s, rate mode")
    parser.add_argument("--total", type=int, default=10000, help="events, burst mode")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        summary = runner.run(main(arguments))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
