"""The load generator, run as its own process: Kochava events to `POST /track/json` in NDJSON
batches, spread round-robin over the postbacks' event names.

    python -m benchmarks.loadgen --url DAEMON --app APP --events N1,N2 MODE ...

Modes:
  closed  keep `--backlog` events accepted but not yet answered by X (read from the
          simulated X's counters) until SIGTERM: the engine always has work, and events
          arrive exactly as fast as they are delivered.
  rate    `--rate` events per second, paced in batches, for `--duration-s` (open loop).
  burst   `--total` events as fast as the daemon accepts them.
  soak    `--rate` events per second for `--duration-s`, like `rate`, as a real sender
          would: every call is written to `--journal` (one JSON line: its events, when it
          was sent, what it was answered and when); a batch answered 503
          `store_unavailable`, not answered within `--answer-timeout-s` ("hung") or cut off
          is sent again after `--resend-s`, until `--give-up-s` after the load ended.

Prints one JSON line: events sent and accepted, and the time it took (soak: also the calls
by outcome); SIGTERM ends any mode early, with that line. With `--sends FILE` (closed, rate
and burst), it also writes, once it ends, every batch answered 202 as `[first event number,
size, time.monotonic() just before the call]`, one JSON array, for the latency from the
ingest call to the simulated X's receipt of each claim (`benchmarks/receipts.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO

import aiohttp
import orjson
import uvloop

from benchmarks import workload

_NDJSON = {"Content-Type": "application/x-ndjson", **workload.api_headers()}
_POLL_S = 0.05


class Generator:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.url = f"{args.url.split(',')[0]}/track/json"
        # Several daemons (scenario 8): each batch goes to the next one in turn. The soak,
        # which journals and resends its calls, has one daemon.
        self._urls = itertools.cycle(f"{url}/track/json" for url in args.url.split(","))
        self._app = args.app
        self._names = itertools.cycle(args.events.split(","))
        self._run = args.run
        self._numbers = itertools.count()
        self.session = session
        self.sent = self.accepted = self.refused = 0
        # Batches answered 202: (first event number, size, monotonic time sent).
        self.sends: list[tuple[int, int, float]] = []

    def numbered_batch(self, size: int) -> tuple[int, bytes]:
        """The next `size` events, numbered from the first one returned. Event n carries the
        n-th event name of the cycle (n modulo the number of names)."""
        now_s = time.time()
        numbers = list(itertools.islice(self._numbers, size))
        body = b"\n".join(
            workload.event(self._app, self._run, n, now_s, name)
            for n, name in zip(numbers, self._names, strict=False)
        )
        return numbers[0], body

    async def send(self, size: int) -> None:
        first, body = self.numbered_batch(size)
        self.sent += size
        sent_s = time.monotonic()
        async with self.session.post(next(self._urls), data=body, headers=_NDJSON) as answer:
            result = await answer.json()
        if answer.status != 202:
            raise RuntimeError(f"ingest answered {answer.status}: {str(result)[:300]}")
        self.accepted += int(result["accepted"])
        self.refused += len(result["rejected"])
        self.sends.append((first, size, sent_s))


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


class Soak:
    """The `soak` mode: every call journaled, refused or unanswered batches sent again."""

    def __init__(self, gen: Generator, args: argparse.Namespace, journal: IO[str]) -> None:
        self._gen = gen
        self._args = args
        self._journal = journal
        # Calls in flight are bounded before the answer timer starts, so that a call never
        # counts as hung for waiting on the generator's own connection pool.
        self._slots = asyncio.Semaphore(args.concurrency)
        self.calls: Counter[str] = Counter()
        self.never_accepted = 0
        self.give_up_at = 0.0  # monotonic time; set when the load starts

    async def run(self) -> None:
        args = self._args
        interval_s = args.batch / args.rate
        started = time.monotonic()
        self.give_up_at = started + args.duration_s + args.give_up_s
        pending: set[asyncio.Task[None]] = set()
        for i in itertools.count():
            at = started + i * interval_s
            if at - started >= args.duration_s:
                break
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            first, body = self._gen.numbered_batch(args.batch)
            self._gen.sent += args.batch
            task = asyncio.create_task(self._deliver(first, args.batch, body))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _deliver(self, first: int, size: int, body: bytes) -> None:
        """Send one batch until it is answered 202 (or 4xx, which sending again would not
        change), or until the give-up time."""
        while True:
            outcome = await self._call(first, size, body)
            if outcome in ("accepted", "refused"):
                return
            if time.monotonic() + self._args.resend_s > self.give_up_at:
                self.never_accepted += size
                return
            await asyncio.sleep(self._args.resend_s)

    async def _call(self, first: int, size: int, body: bytes) -> str:
        record: dict[str, object] = {"first": first, "size": size}
        async with self._slots:
            record["sent"] = time.time()
            try:
                async with asyncio.timeout(self._args.answer_timeout_s):
                    async with self._gen.session.post(
                        self._gen.url, data=body, headers=_NDJSON
                    ) as answer:
                        status = answer.status
                        result = await answer.json(content_type=None)
            except TimeoutError:
                outcome = "hung"
            except (aiohttp.ClientError, ValueError) as exc:
                # Cut off (connection refused or reset) or an answer that is not JSON.
                outcome = "failed"
                record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            else:
                record["status"] = status
                outcome = self._judge(status, result, record)
        record["answered"] = time.time() if outcome != "hung" else None
        record["outcome"] = outcome
        self.calls[outcome] += 1
        self._journal.write(orjson.dumps(record).decode() + "\n")
        return outcome

    def _judge(self, status: int, result: object, record: dict[str, object]) -> str:
        body = result if isinstance(result, dict) else {}
        if status == 202:
            rejected = [int(item["index"]) for item in body.get("rejected", [])]
            record["rejected"] = rejected
            self._gen.accepted += int(body.get("accepted", 0)) + int(body.get("duplicates", 0))
            self._gen.refused += len(rejected)
            return "accepted"
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        record["code"] = code
        if status == 503 and code == "store_unavailable":
            return "unavailable"
        # 5xx: sent again, like a sender would; 4xx: the batch itself is wrong.
        return "other_5xx" if status >= 500 else "refused"


async def main(
    args: argparse.Namespace, journal: IO[str]
) -> tuple[dict[str, float], list[tuple[int, int, float]]]:
    """The summary line's figures, and the batches answered 202 (`Generator.sends`)."""
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        gen = Generator(args, session)
        started = time.monotonic()
        soak: Soak | None = None
        if args.mode == "closed":
            work = closed(gen, args, session)
        elif args.mode == "rate":
            work = rate(gen, args)
        elif args.mode == "soak":
            soak = Soak(gen, args, journal)
            work = soak.run()
        else:
            work = burst(gen, args)
        task = asyncio.create_task(work)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        elapsed_s = time.monotonic() - started
    summary: dict[str, float] = {
        "sent": gen.sent,
        "accepted": gen.accepted,
        "refused": gen.refused,
        "elapsed_s": elapsed_s,
        "rate_per_s": gen.accepted / elapsed_s,
    }
    if soak is not None:
        for outcome in ("accepted", "unavailable", "hung", "failed", "other_5xx", "refused"):
            summary[f"calls_{outcome}"] = soak.calls[outcome]
        summary["never_accepted"] = soak.never_accepted
    return summary, gen.sends


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("closed", "rate", "burst", "soak"))
    parser.add_argument(
        "--url",
        required=True,
        help="the daemon's base URL, or several, comma-separated: batches take turns (not soak)",
    )
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
    parser.add_argument("--journal", default=os.devnull, help="soak mode: the calls, NDJSON")
    parser.add_argument("--sends", help="the batches answered 202 and when each was sent")
    parser.add_argument(
        "--answer-timeout-s", type=float, default=10.0, help="soak mode: a call is hung after"
    )
    parser.add_argument(
        "--resend-s", type=float, default=1.0, help="soak mode: wait before sending again"
    )
    parser.add_argument(
        "--give-up-s",
        type=float,
        default=60.0,
        help="soak mode: how long after the load ended a refused batch is still sent again",
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    # Line-buffered: the harness reads the journal after the process ended, and a line cut
    # by a kill would be the only loss.
    with (
        open(arguments.journal, "w", buffering=1, encoding="utf-8") as journal_file,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        summary, sends = runner.run(main(arguments, journal_file))
    if arguments.sends:  # after the load: no write competes with the measured calls
        with open(arguments.sends, "wb") as sends_file:
            sends_file.write(orjson.dumps(sends))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
