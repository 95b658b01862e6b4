"""The reference clients of scenario 1, run as their own process against the simulated X.

    python -m benchmarks.refclient --url URL --mode transport|naive --duration-s S \\
        --connections C --in-flight N

`transport`: the daemon's own HTTP transport (`postbackd.x.transport.Http1Pool`, what the
engine sends its claims with) fed with claim requests built and signed before the clock
starts, one per claim, each for its own event and with its own OAuth nonce, so that X does
for each what it does for the engine's: the fastest client this project can build. With the
engine's connection limit and in-flight limit it is the transport ceiling; with many
connections and requests in flight, it measures how much the simulated X itself can answer.
`naive`: aiohttp building each claim request from its event and signing it with oauthlib as
it goes, what a straightforward implementation costs.

`--in-flight` requests are sent at a time, each by its own task, through a pool of at most
`--connections` connections. Prints one JSON line: requests answered 200 per second over the
measured time (after a warm-up), the foreign load, and the CPU time of each side (the client
and the simulated X) per request and in cores. The transport client signs enough requests
for `--presign-per-s` per second; if they run out first, the measured time ends there
(`measured_s` says how long it was, `ran_out` that it did).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
import uvloop
from oauthlib.oauth1 import Client
from yarl import URL

from benchmarks import workload
from benchmarks.noise import Noise, cpu_s
from postbackd.x.oauth import OAuth1Signer, encode_pairs
from postbackd.x.transport import Http1Pool

# The answer's status, or None when the requests ran out.
Send = Callable[[], Awaitable[int | None]]


def _events(run: int) -> Iterator[tuple[str, float]]:
    now_s = time.time()
    for n in itertools.count():
        yield workload.idfa(run, n), now_s - 60 + n % 60_000 / 1000


def presigned(url: str, account: workload.Account, count: int) -> list[tuple[str, str]]:
    """`count` claim requests (target, Authorization), one event and one nonce each, signed
    by the daemon's own signer as the engine signs them."""
    signer = OAuth1Signer(workload.CONSUMER_KEY, workload.CONSUMER_SECRET)
    path = urlsplit(url).path
    requests = []
    for raw_idfa, conversion_s in itertools.islice(_events(run=7), count):
        encoded = encode_pairs(workload.claim_params(raw_idfa, conversion_s))
        authorization = signer.authorization_encoded(
            "POST", url, encoded, account.token, account.secret
        )
        requests.append((f"{path}?{'&'.join(f'{k}={v}' for k, v in encoded)}", authorization))
    return requests


def transport_sender(pool: Http1Pool, requests: list[tuple[str, str]]) -> Send:
    pending = iter(requests)

    async def send() -> int | None:
        request = next(pending, None)
        if request is None:
            return None
        return (await pool.post(*request)).status

    return send


def naive_sender(session: aiohttp.ClientSession, url: str, account: workload.Account) -> Send:
    client = Client(
        workload.CONSUMER_KEY,
        client_secret=workload.CONSUMER_SECRET,
        resource_owner_key=account.token,
        resource_owner_secret=account.secret,
    )
    events = _events(run=7)

    async def send() -> int | None:
        params = workload.claim_params(*next(events))
        uri, headers, _ = client.sign(f"{url}?{urlencode(params, quote_via=quote)}", "POST")
        authorization = {"Authorization": headers["Authorization"]}
        async with session.post(URL(uri, encoded=True), headers=authorization) as answer:
            await answer.read()
            return answer.status

    return send


async def drive(
    send: Send, in_flight: int, warmup_s: float, duration_s: float, server_pid: int
) -> dict[str, float]:
    """`in_flight` tasks sending one request after the other; the answers 200 of the measured
    time counted, which ends after `duration_s` or when the requests run out."""
    counts = {"ok": 0, "other": 0}
    counting = False
    stop_at = time.monotonic() + warmup_s + duration_s
    ran_out = asyncio.Event()

    async def worker() -> None:
        while time.monotonic() < stop_at and not ran_out.is_set():
            status = await send()
            if status is None:
                ran_out.set()
            elif counting:
                counts["ok" if status == 200 else "other"] += 1

    workers = [asyncio.create_task(worker()) for _ in range(in_flight)]
    await asyncio.sleep(warmup_s)
    if ran_out.is_set():
        raise RuntimeError("the pre-signed requests ran out during the warm-up")
    counting = True
    started = time.monotonic()
    watch = Noise([server_pid])
    own_cpu_s, server_cpu_s = time.process_time(), cpu_s(server_pid)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ran_out.wait(), duration_s)
    counting = False
    elapsed_s = time.monotonic() - started
    exhausted = ran_out.is_set()
    own_cpu_s, server_cpu_s = time.process_time() - own_cpu_s, cpu_s(server_pid) - server_cpu_s
    foreign = watch.foreign_cores()
    ran_out.set()
    await asyncio.gather(*workers)
    answered = max(counts["ok"], 1)
    return {
        "ok": counts["ok"],
        "other": counts["other"],
        "measured_s": elapsed_s,
        "ran_out": float(exhausted),
        "in_flight": in_flight,
        "rate_per_s": counts["ok"] / elapsed_s,
        "foreign_cores": foreign,
        # Which side bounds the rate: CPU time of each process, per answered request and as
        # the cores it kept busy (one is all a single-threaded event loop can use).
        "client_cpu_us": own_cpu_s / answered * 1e6,
        "server_cpu_us": server_cpu_s / answered * 1e6,
        "client_cores": own_cpu_s / elapsed_s,
        "server_cores": server_cpu_s / elapsed_s,
    }


async def measure(args: argparse.Namespace) -> dict[str, float]:
    account = workload.accounts(1)[0]
    measure_args = (args.in_flight, args.warmup_s, args.duration_s, args.server_pid)
    if args.mode == "naive":
        connector = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await drive(naive_sender(session, args.url, account), *measure_args)
    count = math.ceil(args.presign_per_s * (args.warmup_s + args.duration_s))
    requests = presigned(args.url, account, count)
    parts = urlsplit(args.url)
    pool = Http1Pool(
        f"{parts.scheme}://{parts.netloc}",
        max_connections=args.connections,
        timeout_s=10.0,
        user_agent="postbackd-bench",
    )
    try:
        return await drive(transport_sender(pool, requests), *measure_args)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="conversion_event URL of the simulated X")
    parser.add_argument("--mode", choices=("transport", "naive"), required=True)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64, help="most open connections")
    parser.add_argument("--in-flight", type=int, default=16, help="requests sent at a time")
    parser.add_argument(
        "--presign-per-s",
        type=float,
        default=15_000.0,
        help="transport: requests signed before the clock starts, per second of the run",
    )
    parser.add_argument("--server-pid", type=int, default=0, help="left out of the noise")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
