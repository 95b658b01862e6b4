"""A lean HTTP/1.1 client for the claim hot path: `POST <target>` with an empty body to one
origin, through a bounded pool of keep-alive connections.

aiohttp's ClientSession spends several times this module's CPU on each request (request and
response objects, tracing hooks, cookies, timeouts, URL objects), more than the rest of a
claim's work together. Here a request is one pre-assembled `bytes` written in one call, and its
answer is parsed by llhttp (httptools) into the three things a claim needs: the status, the
`x-rate-limit-*` headers and the body. One request at a time per connection, no pipelining;
no redirects, proxies, cookies or compression: X's claim call needs none of them.

Limits have timeouts (as in httpx): the pool has a size, a wait timeout for a free
connection, keep-alive expiry for idle connections, and a cap on the size of an answer.

Places in a full pool are handed out fairly per lane (one lane per X account), not first come
first served: a few slow accounts with backlogs would otherwise hold every connection and queue
every other account's request behind theirs (PRODUCT.md section 2, "Isolation").

Every failure comes back as an `XResponse` with status 0, a typed `failure` (`NoAnswer`) and
a human `error`; cancellation always propagates.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from typing import Final, NamedTuple, cast
from urllib.parse import urlsplit

import httptools

from postbackd.x.response import NoAnswer, RateLimitInfo, XResponse

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_RATE_LIMIT_PREFIX: Final = b"x-rate-limit-"
_LENGTH_HEADERS: Final = (b"content-length", b"transfer-encoding")
# The first letters (lower case) of the headers read; any other header is skipped at once.
_WANTED_FIRST: Final = frozenset(name[0] for name in (_RATE_LIMIT_PREFIX, *_LENGTH_HEADERS))
# X's claim answers are a few kilobytes; anything far larger is not one.
DEFAULT_MAX_ANSWER_BYTES: Final = 1024 * 1024
# Servers close idle keep-alive connections after a while; reusing one just then fails.
DEFAULT_KEEPALIVE_EXPIRY_S: Final = 30.0


class _Failure(NamedTuple):
    """What kind of failure, and the human reason an `XResponse` carries."""

    kind: NoAnswer
    error: str


_TIMEOUT: Final = _Failure(NoAnswer.TIMEOUT, "timeout")
_CLOSED: Final = _Failure(NoAnswer.CONNECTION, "connection error: the client was closed")


class _Failed(Exception):
    """No connection to send on."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


class _Waiter(NamedTuple):
    """A request waiting for a place; `arrival` orders the waiters of every lane."""

    arrival: int
    future: asyncio.Future[_Connection | None]


def no_answer(started: float, failure: NoAnswer, error: str) -> XResponse:
    """The response of a request that got no HTTP answer; `started` is a `perf_counter()`."""
    return XResponse(
        status=0,
        body=b"",
        rate_limit=None,
        duration_s=time.perf_counter() - started,
        error=error,
        failure=failure,
    )


def _describe(exc: BaseException) -> _Failure:
    return _Failure(NoAnswer.CONNECTION, f"connection error: {type(exc).__name__}: {exc}")


class Http1Pool:
    """Keep-alive connections to one origin (http or https), at most `max_connections`.

    `timeout_s` bounds connecting plus the wait for the complete answer, from the moment the
    request has its place in the pool. The wait for that place is bounded apart, by
    `pool_timeout_s`: a request that gets no place in time fails with `POOL_TIMEOUT` and was
    never sent, so the caller can queue it again without counting X as failing (the queue
    is the caller's own back-pressure). Idle connections older than `keepalive_expiry_s`
    are not reused, and an answer over `max_answer_bytes` fails the request. Build it inside
    the running event loop; `close()` it at the end.

    Each request names its `lane`. When a place comes free and requests wait, it goes to the
    waiting lane that holds the fewest places (ties: the lane whose first request has waited
    longest), so a lane holding nothing is served at the next release whatever the others'
    backlogs; within a lane, requests are served in order.
    """

    __slots__ = (
        "_all_closed",
        "_arrivals",
        "_closed",
        "_connections",
        "_held",
        "_host",
        "_idle",
        "_keepalive_expiry_s",
        "_loop",
        "_max_answer_bytes",
        "_max_connections",
        "_pool_timeout_s",
        "_port",
        "_request_end",
        "_request_middle",
        "_size",
        "_ssl",
        "_timeout_s",
        "_waiting",
    )

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        timeout_s: float,
        user_agent: str,
        pool_timeout_s: float | None = None,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        default_port = _DEFAULT_PORTS.get(parts.scheme)
        if default_port is None or not parts.hostname:
            raise ValueError("the base URL needs an http or https scheme and a host")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._host = parts.hostname
        self._port = parts.port or default_port
        self._ssl = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        )
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._pool_timeout_s = timeout_s if pool_timeout_s is None else pool_timeout_s
        self._keepalive_expiry_s = keepalive_expiry_s
        self._max_answer_bytes = max_answer_bytes
        # RFC 9112 section 3.2: Host is the authority, its port only when not the default.
        host = f"[{self._host}]" if ":" in self._host else self._host
        if self._port != default_port:
            host = f"{host}:{self._port}"
        # Everything but the target and the Authorization value is the same on every request.
        self._request_middle = f" HTTP/1.1\r\nHost: {host}\r\nAuthorization: "
        self._request_end = f"\r\nContent-Length: 0\r\nUser-Agent: {user_agent}\r\n\r\n"
        self._idle: list[_Connection] = []  # used as a stack: the warmest connection first
        self._size = 0  # places taken: idle connections and requests holding one
        # Fair handout: the places each lane's requests hold (lanes holding none are absent),
        # and the requests waiting for one, per lane in order of arrival (lanes with none
        # are absent, once `_next_waiter` has skipped the cancelled and expired ones).
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._arrivals = 0  # numbers the waiters, to find the one waiting longest
        self._connections: set[_Connection] = set()
        self._closed = False
        self._all_closed: asyncio.Future[None] | None = None

    async def post(self, target: str, authorization: str, lane: str = "") -> XResponse:
        """`POST target` (path and query, already percent-encoded) with an empty body, for
        `lane` (requests that name none share one).

        `duration_s` runs from the moment the request has its place in the pool (connecting
        included) to the end of the answer: X's latency, not the pool's queue.
        """
        request = f"POST {target}{self._request_middle}{authorization}{self._request_end}".encode()
        try:
            if self._idle:  # a warm idle connection is the common case: taken without a coroutine
                conn = self._idle_connection()
                held = self._held
                held[lane] = held.get(lane, 0) + 1
            else:
                conn = await self._acquire(lane)
        except _Failed as failed:
            return no_answer(time.perf_counter(), *failed.failure)
        started = time.perf_counter()
        deadline = self._loop.time() + self._timeout_s
        try:
            if conn is None:
                conn = await self._connect(deadline)
            error = await conn.exchange(request, deadline)
            if error is not None and conn.stale(error):
                # A keep-alive connection the server closed while it sat idle, noticed only
                # now: the request never reached the server, so it goes once on a fresh
                # connection. The small risk: a server that read it and dropped the connection
                # before answering sees it twice, the same duplicate a retried connection
                # error would send anyway (PRODUCT.md section 2, "Retries").
                conn = await self._connect(deadline)
                error = await conn.exchange(request, deadline)
        except _Failed as failed:
            self._release(None, lane)
            return no_answer(started, *failed.failure)
        except BaseException:
            # Cancelled: the answer may still arrive on this connection and would be read as
            # the next request's, so the connection goes.
            if conn is not None:
                conn.abort()
            self._release(None, lane)
            raise
        if error is not None:  # the connection was closed when the request failed
            self._release(None, lane)
            return no_answer(started, *error)
        response = XResponse(
            status=conn.status,
            body=b"".join(conn.body),
            rate_limit=RateLimitInfo.from_headers(conn.rate_headers),
            duration_s=time.perf_counter() - started,
        )
        if conn.keep_alive and not conn.closing:
            self._release(conn, lane)
        else:  # RFC 9112 section 9.6: "Connection: close" (or HTTP/1.0) ends the connection
            conn.abort()
            self._release(None, lane)
        return response

    async def close(self) -> None:
        """Close every connection; requests still in flight end with a connection error."""
        self._closed = True
        for conn in list(self._connections):
            conn.fail(_CLOSED)
        if self._connections:
            self._all_closed = self._loop.create_future()
            await self._all_closed

    async def _acquire(self, lane: str) -> _Connection | None:
        """An idle connection, or None: a place to open a new one, counted as held by `lane`.
        Waits for its turn (fair between lanes, in order within one), at most
        `pool_timeout_s`."""
        if self._idle:
            conn = self._idle_connection()
        elif self._closed:
            raise _Failed(_CLOSED)
        elif self._size < self._max_connections:
            self._size += 1
            conn = None
        else:
            return await self._wait(lane)
        self._held[lane] = self._held.get(lane, 0) + 1
        return conn

    async def _wait(self, lane: str) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self._loop.create_future()
        self._arrivals += 1
        queue = self._waiting.get(lane)
        if queue is None:
            queue = self._waiting[lane] = deque()
        queue.append(_Waiter(self._arrivals, waiter))
        timer = self._loop.call_later(self._pool_timeout_s, self._expire, waiter)
        try:
            return await waiter  # `_release` counted the place as the lane's when it handed it
        except asyncio.CancelledError:
            # A cancelled waiter stays queued until `_next_waiter` skips it. One handed a
            # connection or a place just before its cancellation passes it on.
            if not waiter.cancelled():
                self._release(waiter.result(), lane)
            raise
        finally:
            timer.cancel()

    def _idle_connection(self) -> _Connection | None:
        """The warmest idle connection, or None: its place, to open a new one."""
        if self._closed:
            raise _Failed(_CLOSED)
        conn = self._idle.pop()
        conn.idle = False
        if conn.closing:  # closing but not yet reported lost: its place is ours
            return None
        if self._loop.time() - conn.idle_since > self._keepalive_expiry_s:
            conn.abort()  # too long idle: the server may close it as we send
            return None
        return conn

    def _expire(self, waiter: asyncio.Future[_Connection | None]) -> None:
        if not waiter.done():  # `_next_waiter` skips it from now on
            error = f"no pooled connection came free within {self._pool_timeout_s:g} s"
            waiter.set_exception(_Failed(_Failure(NoAnswer.POOL_TIMEOUT, error)))

    def _release(self, conn: _Connection | None, lane: str | None) -> None:
        """`lane` (None: no lane, an idle connection lost) gives up a reusable connection, or a
        place (None), to the next waiter or the pool."""
        if lane is not None:
            held = self._held
            left = held[lane] - 1
            if left:
                held[lane] = left
            else:
                del held[lane]
        if self._waiting:
            waiting = self._next_waiter()
            if waiting is not None:
                to, waiter = waiting
                self._held[to] = self._held.get(to, 0) + 1
                waiter.set_result(conn)
                return
        if conn is None:
            self._size -= 1
        else:
            conn.idle = True
            conn.idle_since = self._loop.time()
            self._idle.append(conn)

    def _next_waiter(self) -> tuple[str, asyncio.Future[_Connection | None]] | None:
        """Takes the first live waiter of the waiting lane that holds the fewest places (ties:
        the one whose first waiter arrived first); cancelled and expired waiters are dropped,
        and lanes left with none."""
        best: deque[_Waiter] | None = None
        best_lane = ""
        best_held = best_arrival = 0
        for lane, queue in list(self._waiting.items()):
            while queue and queue[0].future.done():
                queue.popleft()
            if not queue:
                del self._waiting[lane]
                continue
            held = self._held.get(lane, 0)
            arrival = queue[0].arrival
            if best is None or held < best_held or (held == best_held and arrival < best_arrival):
                best, best_lane, best_held, best_arrival = queue, lane, held, arrival
        if best is None:
            return None
        waiter = best.popleft().future
        if not best:
            del self._waiting[best_lane]
        return best_lane, waiter

    async def _connect(self, deadline: float) -> _Connection:
        if self._closed:
            raise _Failed(_CLOSED)
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:  # before OSError: it is one
            raise _Failed(_Failure(NoAnswer.TIMEOUT, "timeout while connecting")) from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS refused
            raise _Failed(_describe(exc)) from None
        if self._closed:
            conn.abort()
            raise _Failed(_CLOSED)
        return conn

    def _opened(self, conn: _Connection) -> None:
        self._connections.add(conn)

    def _lost(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if conn.idle:  # closed by the server while idle: its place is free again
            conn.idle = False
            self._idle.remove(conn)
            self._release(None, None)
        done = self._all_closed
        if not self._connections and done is not None and not done.done():
            done.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection; carries one request at a time and parses its answer as it arrives."""

    __slots__ = (
        "_delimited",
        "_headers_done",
        "_loop",
        "_parser",
        "_pool",
        "_received",
        "_replied",
        "_timer",
        "_transport",
        "_uses",
        "_waiter",
        "body",
        "idle",
        "idle_since",
        "keep_alive",
        "rate_headers",
        "status",
    )

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool
        self._loop = pool._loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[_Failure | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._uses = 0
        self._replied = False  # a byte of the current answer arrived
        self._headers_done = False
        self._delimited = False  # the answer has Content-Length or Transfer-Encoding
        self.idle = False
        self.idle_since = 0.0
        self._received = 0  # bytes of the current answer
        self.status = 0
        self.keep_alive = False
        self.body: list[bytes] = []
        self.rate_headers: dict[str, str] = {}

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def exchange(self, request: bytes, deadline: float) -> asyncio.Future[_Failure | None]:
        """Send the request; the future gives None once the answer is complete, else why not."""
        self._uses += 1
        self._replied = self._headers_done = self._delimited = self.keep_alive = False
        self._received = 0
        self.status = 0
        self.body = []
        self.rate_headers = {}
        waiter = self._waiter = self._loop.create_future()
        if self.closing:  # lost between leaving the pool and now: never sent
            self.fail(_Failure(NoAnswer.CONNECTION, "connection error: the connection closed "
                               "before the request was sent"))  # fmt: skip
        else:
            assert self._transport is not None
            self._timer = self._loop.call_at(deadline, self.fail, _TIMEOUT)
            self._transport.write(request)
        return waiter

    def stale(self, error: _Failure) -> bool:
        """Whether a reused connection closed before any byte of the answer (not a timeout)."""
        return self._uses > 1 and not self._replied and error.kind is not NoAnswer.TIMEOUT

    def fail(self, error: _Failure) -> None:
        self._finish(error)
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, error: _Failure | None) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not waiter.done():  # done = cancelled with its request, which closes the connection
            waiter.set_result(error)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A request must leave at once, not wait on Nagle's algorithm for an ACK. asyncio
            # and uvloop set this for TCP already; setting it here keeps it loop-independent.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pool._opened(self)

    def data_received(self, data: bytes) -> None:
        self._replied = True
        self._received += len(data)
        if self._received > self._pool._max_answer_bytes:
            self.fail(_Failure(NoAnswer.CONNECTION, "connection error: the answer is over "
                               f"{self._pool._max_answer_bytes} bytes"))  # fmt: skip
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.fail(_Failure(NoAnswer.CONNECTION, f"connection error: malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._finish(_describe(exc))
        elif self._headers_done and not self._delimited:
            # RFC 9112 section 6.3: without a length, the body ends when the server closes.
            self._finish(None)
        elif self._replied:
            self._finish(
                _Failure(
                    NoAnswer.CONNECTION,
                    "connection error: the server closed the connection mid-answer",
                )
            )
        else:
            self._finish(_Failure(NoAnswer.CONNECTION, "connection error: the server closed "
                                  "the connection before answering"))  # fmt: skip
        self._pool._lost(self)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None:  # bytes with no request waiting: the stream cannot be trusted
            raise ValueError("an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name[0] | 0x20 not in _WANTED_FIRST:  # most headers (Date, Server, ...): one test
            return
        name = name.lower()
        if name.startswith(_RATE_LIMIT_PREFIX):
            self.rate_headers[name.decode("latin-1")] = value.decode("latin-1")
        elif name in _LENGTH_HEADERS:
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.status = self._parser.get_status_code()
        # Connection: close, HTTP/1.0 without keep-alive, or a body that ends at EOF.
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            # RFC 9110 section 15.2: interim (1xx) answers may precede the final one.
            self._headers_done = self._delimited = False
            self.rate_headers = {}
            self.body = []
            return
        self._finish(None)
