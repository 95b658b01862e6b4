"""The two reference clients of scenario 1, run as their own process against the simulated X.

    python -m benchmarks.refclient --url URL --mode bare|naive --duration-s S

`bare`: aiohttp on uvloop sending pre-built, pre-signed claim requests (signed with oauthlib
before the clock starts): the most one Python process pushes through HTTP here, the
transport ceiling. `naive`: the same client building each claim request from its event and
signing it with oauthlib as it goes, what a straightforward implementation costs.

Both keep two requests in flight per pooled connection (the daemon's limit across all
accounts; with one account it sends at most 64 at a time) through a pool of the daemon's
connection limit, and print one JSON line: requests answered 200 per second over the measured
time (after a warm-up), the foreign load, and the CPU time per request of each side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import uvloop
from oauthlib.oauth1 import Client
from yarl import URL

from benchmarks import workload
from benchmarks.noise import Noise, cpu_s

# Pre-signed requests are cycled: enough to look like distinct traffic, few enough to sign
# in a second or two before the measurement starts.
_PRESIGNED: int = 4096

Request = tuple[URL, dict[str, str]]


def _signed(client: Client, url: str, params: list[tuple[str, str]]) -> Request:
    uri, headers, _ = client.sign(f"{url}?{urlencode(params, quote_via=quote)}", "POST")
    return URL(uri, encoded=True), {"Authorization": headers["Authorization"]}


def _events(run: int) -> Iterator[tuple[str, float]]:
    now_s = time.time()
    for n in itertools.count():
        yield workload.idfa(run, n), now_s - 60 + n % 60_000 / 1000


def requests_of(mode: str, url: str, account: workload.Account) -> Callable[[], Request]:
    """A function giving the next request to send."""
    client = Client(
        workload.CONSUMER_KEY,
        client_secret=workload.CONSUMER_SECRET,
        resource_owner_key=account.token,
        resource_owner_secret=account.secret,
    )
    events = _events(run=7)
    if mode == "bare":
        pool = [
            _signed(client, url, workload.claim_params(*next(events))) for _ in range(_PRESIGNED)
        ]
        return partial(next, itertools.cycle(pool))
    return lambda: _signed(client, url, workload.claim_params(*next(events)))


async def measure(
    url: str, mode: str, duration_s: float, warmup_s: float, connections: int, server_pid: int
) -> dict[str, float]:
    next_request = requests_of(mode, url, workload.accounts(1)[0])
    counts = {"ok": 0, "other": 0}
    counting = False

    async def worker(session: aiohttp.ClientSession, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            target, headers = next_request()
            async with session.post(target, headers=headers) as answer:
                await answer.read()
                if counting:
                    counts["ok" if answer.status == 200 else "other"] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + warmup_s + duration_s
        workers = [asyncio.create_task(worker(session, stop_at)) for _ in range(connections * 2)]
        await asyncio.sleep(warmup_s)
        counting = True
        started = time.monotonic()
        watch = Noise([server_pid])
        own_cpu_s, server_cpu_s = time.process_time(), cpu_s(server_pid)
        await asyncio.sleep(duration_s)
        counting = False
        elapsed_s = time.monotonic() - started
        own_cpu_s, server_cpu_s = time.process_time() - own_cpu_s, cpu_s(server_pid) - server_cpu_s
        foreign = watch.foreign_cores()
        await asyncio.gather(*workers)
    return {
        "ok": counts["ok"],
        "other": counts["other"],
        "elapsed_s": elapsed_s,
        "rate_per_s": counts["ok"] / elapsed_s,
        "foreign_cores": foreign,
        # Which side bounds the rate: CPU time per answered request of each process.
        "client_cpu_us": own_cpu_s / max(counts["ok"], 1) * 1e6,
        "server_cpu_us": server_cpu_s / max(counts["ok"], 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="conversion_event URL of the simulated X")
    parser.add_argument("--mode", choices=("bare", "naive"), required=True)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-pid", type=int, default=0, help="left out of the noise")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(
            measure(
                args.url,
                args.mode,
                args.duration_s,
                args.warmup_s,
                args.connections,
                args.server_pid,
            )
        )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
