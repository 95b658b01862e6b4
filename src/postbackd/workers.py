"""`postbackd serve --workers N`: N daemons on one host, sharing one listening socket and
one PostgreSQL store (PRODUCT.md 5), under a parent that supervises them.

The parent binds `listen` once and forks the workers; each inherits the socket and is a
whole daemon (its own engine, leases, configuration watch, stream consumer), so the kernel
hands each new connection to whichever worker accepts it first. One socket rather than one
per worker (SO_REUSEPORT): a connection waiting in the backlog is never lost with the
worker that would have taken it, and a replacement worker takes over the same socket.

What the parent does, and an operator can count on:
- a worker that fails to start (the database unreachable, a bad setting: what a single
  daemon would refuse with one line) stops the others and the parent exits with that
  worker's status: restarting would fail the same way; a supervisor (systemd) retries;
- a worker that ends after it was ready (kill -9, out of memory, a store beyond recovery)
  is logged with its status and replaced at once; its leased deliveries go to the others
  when the leases run out, and the replacement takes its place on the socket;
- SIGTERM and SIGINT go to every worker, which drains as a single daemon does; the parent
  exits once all have ended: 0 when each ended cleanly, else 1. SIGHUP goes to every worker
  (each reopens `log_file`) and the parent reopens its own.

The parent starts no event loop and no thread: it forks, then waits on signals and on one
pipe per starting worker (closed by the worker once ready, or by its death).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import traceback
from dataclasses import dataclass, field
from typing import Final, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from postbackd import logs
from postbackd.errors import PostbackdError
from postbackd.settings import Settings
from postbackd.store.db import prepare_data_dir
from postbackd.token import ensure_api_token

log = logging.getLogger(__name__)

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
_BACKLOG: Final = 1024
# A worker that ended is looked for at least this often, a lost SIGCHLD notwithstanding.
_POLL_S: Final = 1.0
_READY: Final = b"r"
_PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h


@dataclass(slots=True)
class Worker:
    index: int
    pid: int
    # The read end of the pipe the worker writes to once ready; None once read.
    ready_pipe: int | None
    ready: bool = False


@dataclass(slots=True)
class _State:
    workers: dict[int, Worker] = field(default_factory=dict)  # by pid
    stopping: bool = False
    status: int = 0


def listen_socket(settings: Settings) -> socket.socket:
    """The listening socket the workers share; OSError when it cannot be bound."""
    host, port = settings.listen_host_port
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker `index`'s settings: its own metrics port (`metrics_listen` + index), and its
    own member of the stream's consumer group when `event_stream_url` names one (`consumer=`
    + `-index`): two processes as one member would take each other's pending entries."""
    metrics_listen, stream_url = settings.metrics_listen, settings.event_stream_url
    metrics_at = settings.metrics_host_port
    if metrics_at is not None and metrics_at[1] != 0:
        host, port = metrics_at
        shown = f"[{host}]" if ":" in host else host
        metrics_listen = f"{shown}:{port + index}"
    if stream_url is not None:
        parts = urlsplit(stream_url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "consumer" for key, _ in pairs):
            query = urlencode([(k, f"{v}-{index}" if k == "consumer" else v) for k, v in pairs])
            stream_url = urlunsplit(parts._replace(query=query))
    return dataclasses.replace(settings, metrics_listen=metrics_listen, event_stream_url=stream_url)


def supervise(settings: Settings) -> int:
    """Run `settings.workers` daemons on one socket until SIGTERM or SIGINT; the exit status."""
    from postbackd.daemon import StartupError, startup_reason

    try:
        sock = listen_socket(settings)
        # Before any worker: they share one token file, and would race to create it.
        prepare_data_dir(settings.data_dir)
        ensure_api_token(settings.api_token, settings.data_dir)
    except OSError as exc:
        raise StartupError(startup_reason(exc, settings)) from exc
    host, port = sock.getsockname()[:2]
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    previous = signal.set_wakeup_fd(wake_write)
    handlers = {sig: signal.signal(sig, _noted) for sig in _SIGNALS}
    state = _State()
    try:
        log.info(
            "%d workers on http://%s:%d (pid %d supervises them)",
            settings.workers,
            host,
            port,
            os.getpid(),
        )
        for index in range(settings.workers):
            _start(settings, index, sock, state, (wake_read, wake_write))
        while state.workers:
            _wait(settings, sock, state, (wake_read, wake_write))
    finally:
        signal.set_wakeup_fd(previous)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for fd in (wake_read, wake_write):
            os.close(fd)
        sock.close()
    log.info("every worker has ended; exit status %d", state.status)
    return state.status


def _noted(_sig: int, _frame: object) -> None:
    """A handler, so that the signal is not ignored: the wakeup fd carries it to the loop."""


def _wait(settings: Settings, sock: socket.socket, state: _State, wake: tuple[int, int]) -> None:
    pipes = {w.ready_pipe: w for w in state.workers.values() if w.ready_pipe is not None}
    readable, _, _ = select.select([wake[0], *pipes], [], [], _POLL_S)
    if wake[0] in readable:
        with contextlib.suppress(BlockingIOError):
            for number in os.read(wake[0], 256):
                _on_signal(signal.Signals(number), state)
    for fd in readable:
        if (worker := pipes.get(fd)) is not None:
            worker.ready = os.read(fd, 1) == _READY
            os.close(fd)
            worker.ready_pipe = None
    _reap(settings, sock, state, wake)


def _on_signal(sig: signal.Signals, state: _State) -> None:
    if sig in (signal.SIGTERM, signal.SIGINT):
        if not state.stopping:
            log.info("%s: every worker drains and stops", sig.name)
        state.stopping = True
        _send(state, signal.SIGTERM)
    elif sig == signal.SIGHUP:
        logs.reopen_log_file()
        _send(state, signal.SIGHUP)


def _send(state: _State, sig: signal.Signals) -> None:
    for pid in state.workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(settings: Settings, sock: socket.socket, state: _State, wake: tuple[int, int]) -> None:
    while state.workers:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        worker = state.workers.pop(pid, None)
        if worker is None:
            continue
        if worker.ready_pipe is not None:
            # Ready and dead since the last look: the pipe still holds its word.
            worker.ready = os.read(worker.ready_pipe, 1) == _READY
            os.close(worker.ready_pipe)
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        name = f"worker {worker.index} (pid {pid})"
        if state.stopping:
            log.info("%s stopped: %s", name, how)
            if code != 0:
                state.status = max(state.status, 1)
        elif not worker.ready:
            # What stopped it (its one line is in the log) would stop a replacement too.
            log.error("%s could not start (%s): stopping the other workers", name, how)
            state.stopping = True
            state.status = code if code > 0 else 1
            _send(state, signal.SIGTERM)
        else:
            log.warning("%s ended (%s): a new worker takes its place", name, how)
            _start(settings, worker.index, sock, state, wake)


def _start(
    settings: Settings,
    index: int,
    sock: socket.socket,
    state: _State,
    wake: tuple[int, int],
) -> None:
    ready_read, ready_write = os.pipe()
    # Flushed before the fork: the child must not write the parent's buffered lines again.
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)  # the parent's pipe: closed next
        os.close(ready_read)
        for fd in wake:
            os.close(fd)
        for other in state.workers.values():
            if other.ready_pipe is not None:
                os.close(other.ready_pipe)
        _worker(worker_settings(settings, index), index, sock, ready_write, parent)
    os.close(ready_write)
    state.workers[pid] = Worker(index, pid, ready_read)


def _stop_with_parent(parent: int) -> None:
    """SIGTERM when the supervisor dies (kill -9 of it): no worker is left running alone
    on the socket, unsupervised (Linux's PR_SET_PDEATHSIG; elsewhere, nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(
    settings: Settings, index: int, sock: socket.socket, ready: int, parent: int
) -> NoReturn:
    """The forked child: one whole daemon on the shared socket; never returns."""
    from postbackd import daemon

    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    _stop_with_parent(parent)
    logs.tag_records(worker=index)

    def announce() -> None:
        os.write(ready, _READY)
        os.close(ready)

    code = 1
    try:
        code = daemon.run(settings, listen_socket=sock, on_ready=announce)
    except PostbackdError as exc:
        print(f"postbackd: worker {index}: error: {exc}", file=sys.stderr)  # noqa: T201
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001  (nothing may unwind into the parent's code)
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
