"""The processes of a benchmark run: the simulated X, the daemon, and the clients, each a
subprocess on loopback, with what the harness reads of them (CPU time, peak memory)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import aiohttp

from benchmarks import noise, workload

_STARTUP_S = 30.0
_STOP_S = 20.0
_BIND_TRIES = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file; `stop()` ends it (SIGTERM, then
    SIGKILL after a grace period), and so does leaving its `with` block."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv), env=dict(env), stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_s(self) -> float:
        return noise.cpu_s(self.pid)

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM): resident memory now and its peak, in KiB."""
        values = {"VmRSS": 0, "VmHWM": 0}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in values:
                    values[name] = int(value.split()[0])
        except OSError:
            pass
        return values["VmRSS"], values["VmHWM"]

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(_STOP_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def start_mock(
    work_dir: Path, port: int, accounts: Sequence[workload.Account], **settings: object
) -> tuple[Proc, str]:
    """`postbackd mock-x`; settings are its settings-file keys."""
    config = work_dir / "mock-x.json"
    body = {
        "listen": f"127.0.0.1:{port}",
        "accounts": [{"id": a.id, "token": a.token, "secret": a.secret} for a in accounts],
        **settings,
    }
    config.write_text(json.dumps(body))
    argv = _python("-m", "postbackd", "mock-x", "--config", str(config))
    proc = Proc("mock-x", argv, workload.environment(), work_dir / "mock-x.log")
    return proc, f"http://127.0.0.1:{port}"


def start_daemon(work_dir: Path, port: int, x_url: str, **settings: object) -> tuple[Proc, str]:
    """`postbackd serve`, configured through POSTBACKD_* variables."""
    return start_named_daemon("daemon", work_dir, port, x_url, **settings)


def start_named_daemon(
    name: str, work_dir: Path, port: int, x_url: str, **settings: object
) -> tuple[Proc, str]:
    """`postbackd serve` named `name` (its log, its data dir): several daemons on one
    database each have their own; the first, "daemon", keeps the data dir `data`."""
    data_dir = work_dir / ("data" if name == "daemon" else f"{name}-data")
    env = workload.environment(
        POSTBACKD_LISTEN=f"127.0.0.1:{port}",
        POSTBACKD_DATA_DIR=str(data_dir),
        POSTBACKD_X_API_URL=x_url,
        POSTBACKD_LOG_LEVEL="warning",
        **{f"POSTBACKD_{key.upper()}": str(value) for key, value in settings.items()},
    )
    proc = Proc(name, _python("-m", "postbackd", "serve"), env, work_dir / f"{name}.log")
    return proc, f"http://127.0.0.1:{port}"


async def daemon_help() -> str:
    """`postbackd serve --help`: which settings this daemon has."""
    proc = await asyncio.create_subprocess_exec(
        *_python("-m", "postbackd", "serve", "--help"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=workload.environment(),
    )
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


def start_client(work_dir: Path, name: str, module: str, *args: str) -> Proc:
    """A client process of this package (`python -m benchmarks.MODULE ARGS`); it prints its
    result as the last line of its log."""
    root = Path(__file__).resolve().parent.parent
    env = workload.environment(PYTHONPATH=str(root))
    return Proc(name, _python("-m", f"benchmarks.{module}", *args), env, work_dir / f"{name}.log")


async def result_of(proc: Proc, timeout_s: float | None) -> dict[str, float]:
    """Wait for a client process (None: stop it now) and read the figures it printed last,
    one JSON object of numbers."""
    if timeout_s is not None:
        deadline = time.monotonic() + timeout_s
        while proc.alive():
            if time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError(f"{proc.name} did not finish in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
    code = proc.stop()
    if code != 0:
        raise RuntimeError(f"{proc.name} failed ({code}):\n{proc.tail()}")
    last = proc.log_path.read_text().strip().splitlines()[-1]
    return {name: float(value) for name, value in json.loads(last).items()}


async def launch(
    session: aiohttp.ClientSession, start: Callable[[int], tuple[Proc, str]], ready_path: str
) -> tuple[Proc, str]:
    """Start a server on a free port and wait until `ready_path` answers 200. Another process
    of the machine may take the port between the pick and the bind: then another port."""
    for _ in range(_BIND_TRIES):
        proc, url = start(free_port())
        try:
            await wait_ready(session, url + ready_path, proc)
        except RuntimeError:
            proc.stop()
            if "address already in use" in proc.tail():
                continue
            raise
        return proc, url
    raise RuntimeError(f"found no free port in {_BIND_TRIES} tries")


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: Proc) -> None:
    """Poll `url` until it answers 200; fail early when the process died."""
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail()}")
        try:
            async with session.get(url) as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {_STARTUP_S:.0f} s:\n{proc.tail()}")
