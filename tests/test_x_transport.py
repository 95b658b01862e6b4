"""The claim transport against raw loopback servers that write exact bytes, and against the
simulated X. Each case also runs on uvloop, the daemon's event loop (`test_on_uvloop`)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import pytest
import uvloop

import conftest
from postbackd import __version__
from postbackd.mockx.app import start_mock
from postbackd.mockx.script import hash_device_id
from postbackd.x.client import XClient
from postbackd.x.oauth import OAuth1Signer, encode_pairs
from postbackd.x.response import NoAnswer, RateLimitInfo, XResponse
from postbackd.x.transport import Http1Pool
from test_x_client import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    TOKEN,
    TOKEN_SECRET,
    WIRE_PARAMS,
    oauthlib_verifies,
)

TARGET = "/12/conversion_event?a=1"
AUTH = 'OAuth oauth_signature="x"'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server whose handler writes bytes by hand; it counts the connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.requests: list[bytes] = []  # every request head, in arrival order
        self.request_connections: list[int] = []  # the connection each one came on, from 1
        self.connections = 0  # opened so far
        self.open = 0
        self.peak_open = 0
        self.closed_by_client = 0  # connections that ended with the client's EOF
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection_numbers: dict[asyncio.StreamReader, int] = {}

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        # Handlers end on their own once the client has closed; the others are cancelled.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def pool(
        self,
        max_connections: int = 4,
        timeout_s: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        **limits: float,
    ) -> Http1Pool:
        return Http1Pool(
            self.url,
            max_connections=max_connections,
            timeout_s=timeout_s,
            user_agent="test/1",
            ssl_context=ssl_context,
            **limits,  # type: ignore[arg-type]
        )

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request head of a connection (the client sends no body); None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        self.requests.append(head)
        self.request_connections.append(self._connection_numbers[reader])
        return head

    async def wait_for_client_close(self, reader: asyncio.StreamReader) -> None:
        """Read (and leave unanswered) whatever comes until the client closes."""
        await reader.read()
        self.closed_by_client += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._connection_numbers[reader] = self.connections
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)


def answer_each(*answers: bytes) -> Handler:
    """Answer the requests of every connection with `answers` in turn, the last one repeated."""

    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = 0
        while await server.read_request(r) is not None:
            w.write(answers[min(n, len(answers) - 1)])
            n += 1

    return handler


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST rather than a clean close."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def post(pool: Http1Pool, target: str = TARGET) -> XResponse:
    return await pool.post(target, AUTH)


def assert_no_answer(response: XResponse, error: str) -> None:
    assert response.status == 0
    assert response.body == b""
    assert response.rate_limit is None
    assert response.error is not None and response.error.startswith(error), response.error


# --- Answers as they come on the wire


async def test_content_length_answer_with_rate_limit_headers() -> None:
    answer = (
        b"HTTP/1.1 429 Too Many Requests\r\nX-Rate-Limit-Limit: 60000\r\n"
        b"x-rate-limit-remaining: 0\r\nX-RATE-LIMIT-RESET: 1764331200\r\n"
        b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
        b'{"errors":[]}'
    )
    async with RawServer(answer_each(answer)) as server:
        pool = server.pool()
        response = await post(pool)
        await pool.close()
    assert response.status == 429
    assert response.body == b'{"errors":[]}'
    assert response.error is None
    assert response.rate_limit == RateLimitInfo(limit=60000, remaining=0, reset_epoch_s=1764331200)
    assert 0 < response.duration_s < 10  # measured, and far from a hang


async def test_chunked_answer_then_the_connection_is_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    async with RawServer(answer_each(chunked, OK)) as server:
        pool = server.pool()
        first = await post(pool)
        second = await post(pool)
        await pool.close()
    assert (first.status, first.body) == (200, b"hello world")
    assert (second.status, second.body) == (200, b"ok")
    assert server.connections == 1


async def test_answers_delivered_one_byte_at_a_time() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nx-rate-limit-remaining: 41\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ]

    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for answer in answers:
            await server.read_request(r)
            for i in range(len(answer)):
                w.write(answer[i : i + 1])
                await w.drain()
                await asyncio.sleep(0.001)  # each byte its own packet

    async with RawServer(handler) as server:
        pool = server.pool()
        first = await post(pool)
        second = await post(pool)
        await pool.close()
    assert (first.status, first.body, first.rate_limit) == (
        200,
        b"hello",
        RateLimitInfo(None, 41, None),
    )
    assert (second.status, second.body) == (201, b"abc")
    assert server.connections == 1


async def test_interim_answers_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK
    async with RawServer(answer_each(answer)) as server:
        pool = server.pool()
        responses = [await post(pool) for _ in range(2)]
        await pool.close()
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")] * 2
    assert server.connections == 1


async def test_body_delimited_by_the_server_closing() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of ")
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(b"it")

    async with RawServer(handler) as server:
        pool = server.pool()
        responses = [await post(pool) for _ in range(2)]
        await pool.close()
    assert [(r.status, r.body, r.error) for r in responses] == [(200, b"all of it", None)] * 2
    assert server.connections == 2


# --- Keep-alive and the pool


async def test_one_connection_serves_sequential_requests() -> None:
    async with RawServer(answer_each(OK)) as server:
        pool = server.pool(max_connections=4)
        responses = [await post(pool, f"/p?n={n}") for n in range(20)]
        await pool.close()
    assert all(r.status == 200 for r in responses)
    assert len(server.requests) == 20
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",  # HTTP/1.0 without keep-alive
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_an_answer_that_ends_the_connection_is_honoured(answer: bytes) -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(answer)
        await server.wait_for_client_close(r)  # the server leaves it to the client

    async with RawServer(handler) as server:
        pool = server.pool()
        responses = [await post(pool) for _ in range(3)]
        await pool.close()
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")] * 3
    assert server.connections == 3
    assert server.closed_by_client == 3


async def slow_answers(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while await server.read_request(r) is not None:
        await asyncio.sleep(0.005)  # long enough for the others to queue
        w.write(OK)


async def test_pool_never_opens_more_than_its_limit() -> None:
    async with RawServer(slow_answers) as server:
        pool = server.pool(max_connections=3)
        responses = await asyncio.gather(*(post(pool) for _ in range(30)))
        await pool.close()
    assert all(r.status == 200 for r in responses)
    assert server.peak_open == server.connections == 3
    assert len(server.requests) == 30


async def test_waiting_requests_are_served_in_order() -> None:
    async with RawServer(slow_answers) as server:
        pool = server.pool(max_connections=1)
        responses = await asyncio.gather(*(post(pool, f"/p?n={n}") for n in range(10)))
        await pool.close()
    assert all(r.status == 200 for r in responses)
    assert server.requests == [h for n in range(10) for h in server.requests if b"?n=%d " % n in h]


async def test_cancelled_waiters_give_up_their_place() -> None:
    release = asyncio.Event()

    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await server.read_request(r) is not None:
            await release.wait()
            w.write(OK)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1)

        async def first_then_cancel() -> XResponse:
            response = await post(pool)
            handed.cancel()  # the connection is handed over already, not yet taken
            return response

        first = asyncio.create_task(first_then_cancel())
        await asyncio.sleep(0.02)
        queued = asyncio.create_task(post(pool))  # cancelled while it waits
        handed = asyncio.create_task(post(pool))  # cancelled once handed the connection
        last = asyncio.create_task(post(pool))
        await asyncio.sleep(0.01)
        queued.cancel()
        release.set()
        assert (await first).status == 200
        for task in (queued, handed):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert (await asyncio.wait_for(last, 1)).status == 200
        await pool.close()
    assert server.connections == 1
    assert len(server.requests) == 2


async def test_the_most_recently_used_connection_goes_first() -> None:
    # After a burst, the extra connections stay idle and can age out at the server.
    async with RawServer(slow_answers) as server:
        pool = server.pool(max_connections=3)
        await asyncio.gather(*(post(pool) for _ in range(3)))
        burst = len(server.requests)
        for _ in range(6):
            await post(pool)
        await pool.close()
    assert server.connections == 3
    assert len(set(server.request_connections[burst:])) == 1


async def test_a_wait_for_a_connection_is_bounded_and_sends_nothing() -> None:
    # PRODUCT.md 2, "Isolation": a pool taken by slow requests makes the next one wait at
    # most pool_timeout_s; it then fails as never sent (X saw nothing: no retry used).
    release = asyncio.Event()

    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await server.read_request(r) is not None:
            await release.wait()
            w.write(OK)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1, pool_timeout_s=0.1)
        slow = asyncio.create_task(post(pool))
        await asyncio.sleep(0.02)
        waited = await post(pool)
        assert waited.status == 0 and waited.failure is NoAnswer.POOL_TIMEOUT
        assert not waited.sent and "no pooled connection" in (waited.error or "")
        release.set()
        assert (await slow).status == 200
        assert (await post(pool)).status == 200  # the place was not lost
        await pool.close()
    assert len(server.requests) == 2


class HeldAnswers:
    """A handler that answers each request only once the test lets its target go; `arrived`
    lists the targets in the order they reached the server."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self._go: dict[str, asyncio.Event] = {}

    def _event(self, target: str) -> asyncio.Event:
        return self._go.setdefault(target, asyncio.Event())

    def let_go(self, *targets: str) -> None:
        for target in targets:
            self._event(target).set()

    async def arrivals(self, count: int) -> list[str]:
        """The first `count` arrivals, once they are in (a hang fails the test by timeout)."""
        while len(self.arrived) < count:
            await asyncio.sleep(0.005)
        return self.arrived[:count]

    async def __call__(
        self, server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while (head := await server.read_request(r)) is not None:
            target = head.split(b" ")[1].decode().removeprefix("/")
            self.arrived.append(target)
            await self._event(target).wait()
            w.write(OK)


async def start_posts(pool: Http1Pool, *targets: str) -> list[asyncio.Task[XResponse]]:
    """One request per target, its lane the target's first letter after the slash, started
    in this order; returns once each holds a place in the pool or waits for one."""
    tasks = [asyncio.create_task(pool.post(f"/{t}", AUTH, t[0])) for t in targets]
    for _ in range(3):  # a task reaches the pool's queue at its first step
        await asyncio.sleep(0)
    return tasks


async def test_a_lane_holding_nothing_gets_the_next_free_connection() -> None:
    # PRODUCT.md 2, "Isolation": lane A's backlog fills the pool and queues behind it; lane
    # B's request, arriving last, still goes out on the first connection that comes free.
    answers = HeldAnswers()
    async with RawServer(answers) as server:
        pool = server.pool(max_connections=4)
        tasks = await start_posts(pool, *(f"a{n}" for n in range(8)))
        assert sorted(await answers.arrivals(4)) == ["a0", "a1", "a2", "a3"]
        tasks += await start_posts(pool, "b0")
        answers.let_go("a0")
        assert (await answers.arrivals(5))[4] == "b0"
        answers.let_go(*(f"a{n}" for n in range(8)), "b0")
        responses = await asyncio.gather(*tasks)
        await pool.close()
    assert all(r.status == 200 for r in responses)
    assert answers.arrived[5:] == ["a4", "a5", "a6", "a7"]  # in order within the lane
    assert server.connections == 4


async def test_a_free_connection_goes_to_the_waiting_lane_holding_fewest() -> None:
    answers = HeldAnswers()
    async with RawServer(answers) as server:
        pool = server.pool(max_connections=3)
        tasks = await start_posts(pool, "a0", "a1", "b0")  # A holds 2 places, B 1
        await answers.arrivals(3)
        tasks += await start_posts(pool, "a2", "a3", "b1", "c0")
        order: list[str] = []
        # Each freed place goes to the lane holding fewest; first-come order would be
        # a2, a3, b1, c0.
        for freed in ("a0", "a1", "b0", "a2"):
            answers.let_go(freed)
            order.append((await answers.arrivals(len(order) + 4))[-1])
        assert order == ["c0", "a2", "b1", "a3"]
        answers.let_go("a3", "b1", "c0")
        responses = await asyncio.gather(*tasks)
        await pool.close()
    assert all(r.status == 200 for r in responses)


async def test_expired_and_cancelled_waiters_of_a_lane_are_skipped() -> None:
    answers = HeldAnswers()
    async with RawServer(answers) as server:
        pool = server.pool(max_connections=2, pool_timeout_s=0.2)
        held = await start_posts(pool, "a0", "a1")
        await answers.arrivals(2)
        expired = await pool.post("/b0", AUTH, "b")  # lane B waits alone, and expires
        assert expired.failure is NoAnswer.POOL_TIMEOUT
        waiting = await start_posts(pool, "a2")
        (cancelled,) = await start_posts(pool, "b1")
        cancelled.cancel()
        answers.let_go("a0")  # B holds nothing but waits no more: A's next request goes
        assert (await answers.arrivals(3))[2] == "a2"
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        answers.let_go("a1", "a2")
        responses = await asyncio.gather(*held, *waiting)
        assert all(r.status == 200 for r in responses)
        answers.let_go("z")
        assert (await pool.post("/z", AUTH, "z")).status == 200  # no place was lost
        await pool.close()
    assert answers.arrived[2:] == ["a2", "z"]


async def test_idle_connections_expire() -> None:
    async with RawServer(answer_each(OK)) as server:
        pool = server.pool(max_connections=2, keepalive_expiry_s=0.05)
        assert (await post(pool)).status == 200
        assert (await post(pool)).status == 200  # reused while fresh
        await asyncio.sleep(0.1)
        assert (await post(pool)).status == 200  # a new connection after the expiry
        await pool.close()
    assert server.request_connections == [1, 1, 2]


async def test_an_answer_over_the_size_cap_fails_the_request() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000

    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await server.read_request(r) is not None:
            w.write(big if server.connections == 1 else OK)  # too big on the first connection

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1, max_answer_bytes=1000)
        response = await post(pool)
        assert response.status == 0 and response.failure is NoAnswer.CONNECTION
        assert "over 1000 bytes" in (response.error or "")
        assert (await post(pool)).status == 200  # on a new connection
        await pool.close()
    assert server.connections == 2


# --- Failures


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(OK)  # keep-alive as far as the client knows, then the server closes

    async with RawServer(handler) as server:
        pool = server.pool()
        first = await post(pool)
        await asyncio.sleep(0.05)  # the client sees the close while the connection is idle
        second = await post(pool)
        await pool.close()
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_close_racing_a_request_on_a_reused_connection_is_retried_once() -> None:
    # Each connection answers its first request, then closes on the next one without an
    # answer: what a server's idle timeout does when it fires as the request arrives.
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(OK)
        await server.read_request(r)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1)
        responses = [await post(pool) for _ in range(3)]
        await pool.close()
    assert [r.status for r in responses] == [200] * 3
    assert server.connections == 3  # two replacements
    assert len(server.requests) == 5  # 1 + (1 stale + 1 retried) * 2


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_fresh_connection_closed_without_answer_is_not_retried(drop: str) -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        if server.connections == 1:  # only the first connection ever answers
            w.write(OK)
            await server.read_request(r)
        if drop == "reset":
            reset(w)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1)
        first = await post(pool)
        second = await post(pool)  # stale, retried on a fresh connection, dropped again
        third = await post(pool)  # fresh connection dropped: not retried
        await pool.close()
    assert first.status == 200
    for response in (second, third):
        assert_no_answer(response, "connection error:")
    assert server.connections == 3
    assert len(server.requests) == 4


async def test_reset_in_the_middle_of_an_answer() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(OK)
        await server.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await w.drain()
        await asyncio.sleep(0.01)
        reset(w)

    async with RawServer(handler) as server:
        pool = server.pool()
        assert (await post(pool)).status == 200
        response = await post(pool)
        await pool.close()
    assert_no_answer(response, "connection error: ConnectionResetError")
    # Part of the answer arrived: X saw the request, so it is not sent again.
    assert len(server.requests) == 2


async def test_clean_close_in_the_middle_of_an_answer() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")

    async with RawServer(handler) as server:
        pool = server.pool()
        response = await post(pool)
        await pool.close()
    assert_no_answer(response, "connection error: the server closed the connection mid-answer")


async def test_a_server_that_never_answers_times_out() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await server.read_request(r)
            await server.wait_for_client_close(r)
        else:
            await answer_each(OK)(server, r, w)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1, timeout_s=0.2)
        started = time.perf_counter()
        response = await post(pool)
        elapsed_s = time.perf_counter() - started
        after = await post(pool)
        await pool.close()
    assert_no_answer(response, "timeout")
    # uvloop's timers run in 1 ms steps; the upper bound only tells a timeout from a hang, far
    # enough above 0.2 s that a slow machine cannot fail it.
    assert 0.19 <= response.duration_s <= elapsed_s < 10.0
    # The timed-out connection is closed, never reused: its answer could still come.
    assert server.closed_by_client == 1
    assert after.status == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length"],
)
async def test_garbage_instead_of_http(garbage: bytes) -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(garbage)
        await server.wait_for_client_close(r)

    async with RawServer(handler) as server:
        pool = server.pool()
        response = await post(pool)
        await pool.close()
    assert_no_answer(response, "connection error: malformed answer")
    assert server.closed_by_client == 1


async def test_bytes_beyond_the_answer_end_the_connection() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await server.read_request(r) is not None:
            w.write(OK + OK)  # an answer to a request that was never sent

    async with RawServer(handler) as server:
        pool = server.pool()
        responses = [await post(pool) for _ in range(2)]
        await pool.close()
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")] * 2
    assert server.connections == 2


async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now listens on nothing
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = Http1Pool(
        f"http://127.0.0.1:{port}", max_connections=1, timeout_s=1, user_agent="test/1"
    )
    responses = [await post(pool) for _ in range(2)]  # the failed connect gave its place back
    await pool.close()
    for response in responses:
        assert_no_answer(response, "connection error: ConnectionRefusedError")


async def test_cancellation_propagates_and_closes_the_connection() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await server.read_request(r)
            await server.wait_for_client_close(r)
            w.write(OK)  # the late answer, to a connection already closed
        else:
            await answer_each(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")(server, r, w)

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=1)
        task = asyncio.create_task(post(pool))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(1):  # at once, not when the pool closes
            while server.closed_by_client == 0:
                await asyncio.sleep(0.005)
        after = await asyncio.wait_for(post(pool), 1)
        await pool.close()
    assert after.status == 202
    assert server.closed_by_client == 1
    assert server.connections == 2


async def test_close_ends_requests_in_flight_and_refuses_new_ones() -> None:
    async def handler(server: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.read_request(r)
        w.write(OK)
        await server.wait_for_client_close(r)  # later requests get no answer

    async with RawServer(handler) as server:
        pool = server.pool(max_connections=3)
        assert [r.status for r in await asyncio.gather(post(pool), post(pool))] == [200, 200]
        in_flight = asyncio.create_task(post(pool))  # on one of the two idle connections
        await asyncio.sleep(0.05)
        await pool.close()
        response = await in_flight
        after = await post(pool)
        await asyncio.sleep(0.01)
    assert_no_answer(response, "connection error: the client was closed")
    assert_no_answer(after, "connection error: the client was closed")
    assert server.connections == server.closed_by_client == 2


# --- The request on the wire


async def test_the_request_bytes_carry_what_was_signed() -> None:
    async with RawServer(answer_each(OK)) as server:
        x = XClient.create(
            base_url=server.url,
            api_version="12",
            signer=OAuth1Signer(CONSUMER_KEY, CONSUMER_SECRET),
            max_connections=1,
            timeout_s=2,
        )
        response = await x.send_conversion(WIRE_PARAMS, TOKEN, TOKEN_SECRET)
        await x.close()
    assert response.status == 200
    [head] = server.requests
    request_line, *header_lines = head.decode("ascii").split("\r\n")
    method, target, version = request_line.split(" ")
    headers = dict(line.split(": ", 1) for line in header_lines if line)
    query = "&".join(f"{k}={v}" for k, v in encode_pairs(WIRE_PARAMS))
    assert (method, target, version) == ("POST", f"/12/conversion_event?{query}", "HTTP/1.1")
    authorization = headers["Authorization"]
    assert (
        head
        == (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: {authorization}\r\nContent-Length: 0\r\n"
            f"User-Agent: postbackd/{__version__}\r\n\r\n"
        ).encode()
    )
    url = f"http://{headers['Host']}{target}"
    assert oauthlib_verifies("POST", url, authorization, TOKEN_SECRET)
    # The check can fail: another secret or a changed parameter no longer verifies.
    assert not oauthlib_verifies("POST", url, authorization, "another secret")
    assert not oauthlib_verifies("POST", url.replace("ANDROID", "IOS"), authorization, TOKEN_SECRET)


# --- TLS


def self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_with_keep_alive(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    async with RawServer(answer_each(OK), server_context) as server:
        trusting = server.pool(ssl_context=ssl.create_default_context(cafile=str(cert)))
        responses = [await post(trusting) for _ in range(3)]
        await trusting.close()
        # The default context checks the certificate: a self-signed one is refused.
        default = server.pool()
        refused = await post(default)
        await default.close()
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")] * 3
    assert server.connections == 1  # the refused handshake never reached the handler
    assert len(server.requests) == 3
    assert_no_answer(refused, "connection error: SSLCertVerificationError")


# --- The simulated X


async def test_signed_claims_to_the_simulated_x() -> None:
    runner, url = await start_mock(conftest.mock_config())
    x = XClient.create(
        base_url=url,
        api_version="12",
        signer=OAuth1Signer(conftest.CONSUMER_KEY, conftest.CONSUMER_SECRET),
        max_connections=4,
        timeout_s=5,
    )
    try:

        async def claim(n: int) -> XResponse:
            idfa = f"{n:08X}-0000-4000-8000-00000000ABCD"
            params = [
                ("app_id", "333903271"),
                ("os_type", "IOS"),
                ("hashed_device_id", hash_device_id(conftest.HMAC_KEY, idfa, "IOS")),
                ("conversion_type", "PURCHASE"),
                ("conversion_time", "2026-11-28T12:00:00.123Z"),
                ("price_currency", "USD"),
            ]
            return await x.send_conversion(params, conftest.ACCOUNT_TOKEN, conftest.ACCOUNT_SECRET)

        responses = await asyncio.gather(*(claim(n) for n in range(40)))
        badly_signed = await x.send_conversion(
            [("app_id", "333903271")], conftest.ACCOUNT_TOKEN, "another secret"
        )
    finally:
        await x.close()
        await runner.cleanup()
    assert [r.status for r in responses] == [200] * 40, responses[0].describe()
    assert all(r.rate_limit is not None and r.rate_limit.remaining is not None for r in responses)
    assert badly_signed.status == 401


# --- The same cases on uvloop, whose transports are not asyncio's classes

ON_UVLOOP: list[Callable[[], Awaitable[None]]] = [
    test_content_length_answer_with_rate_limit_headers,
    test_chunked_answer_then_the_connection_is_reused,
    test_answers_delivered_one_byte_at_a_time,
    test_interim_answers_are_skipped,
    test_body_delimited_by_the_server_closing,
    test_one_connection_serves_sequential_requests,
    test_pool_never_opens_more_than_its_limit,
    test_waiting_requests_are_served_in_order,
    test_cancelled_waiters_give_up_their_place,
    test_the_most_recently_used_connection_goes_first,
    test_a_wait_for_a_connection_is_bounded_and_sends_nothing,
    test_a_lane_holding_nothing_gets_the_next_free_connection,
    test_a_free_connection_goes_to_the_waiting_lane_holding_fewest,
    test_expired_and_cancelled_waiters_of_a_lane_are_skipped,
    test_idle_connections_expire,
    test_an_answer_over_the_size_cap_fails_the_request,
    test_idle_connection_closed_by_the_server_is_replaced,
    test_close_racing_a_request_on_a_reused_connection_is_retried_once,
    test_reset_in_the_middle_of_an_answer,
    test_clean_close_in_the_middle_of_an_answer,
    test_a_server_that_never_answers_times_out,
    test_bytes_beyond_the_answer_end_the_connection,
    test_connection_refused,
    test_cancellation_propagates_and_closes_the_connection,
    test_close_ends_requests_in_flight_and_refuses_new_ones,
    test_the_request_bytes_carry_what_was_signed,
    test_signed_claims_to_the_simulated_x,
]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda case: case.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await case()

    uvloop.run(run())
