"""A throwaway PostgreSQL server (Debian's package `postgresql-15`): initdb into its own
temporary directory, started with pg_ctl on a free loopback port, stopped and removed
afterwards. The tests (tests/pgproc.py, which adds their fixtures) and scenario 8 of the
benchmarks start it alike; it lives here, in a package both can import, because the tests'
modules are not a package and import pytest.

PostgreSQL refuses to run as root (initdb and the server alike): as root (a CI container),
both run as the unprivileged user `nobody`, through `setpriv` (util-linux, present on every
Debian: it changes the ids and execs, without PAM or a login shell), in a directory chowned
to it. That directory is made under the system's temporary directory, where `nobody` can
enter (pytest's base directory is private to its owner).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from benchmarks.noise import cpu_s
from benchmarks.procs import free_port

USER = "postbackd"
PASSWORD = "pg-test-password-7c1e"
START_TIMEOUT_S = 30
# The user PostgreSQL runs as when started by root.
UNPRIVILEGED = "nobody"
# A test database need not survive a power loss: no fsync, no full pages in the WAL.
TEST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


class PostgresMissing(RuntimeError):
    """initdb and pg_ctl are nowhere to be found."""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, under one directory per
    major version; the newest installed wins."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    raise PostgresMissing(
        "PostgreSQL is not installed (Debian package postgresql-15; .ci/run installs it)"
    )


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        self.bin = bin_dir()
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="postbackd-pg-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "sockets"
        self.log = self.directory / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(UNPRIVILEGED)
            self._as = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                        "--clear-groups", "--"]  # fmt: skip
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run_as_owner(["mkdir", "-m", "0700", str(self.sockets)])
        self._initdb()

    def _run_as_owner(self, argv: list[str]) -> None:
        done = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, check=False, cwd=self.directory
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def _initdb(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            entry = pwd.getpwnam(UNPRIVILEGED)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            # Passwords over TCP, as a real deployment has them: the URLs the daemon is
            # given carry one, which its messages must never show.
            self._run_as_owner([
                str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                "--no-sync",
            ])  # fmt: skip
        finally:
            pwfile.unlink()

    def url(self, database: str = "postgres", password: str | None = PASSWORD) -> str:
        auth = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def start(self, settings: Mapping[str, str] = TEST_SETTINGS) -> None:
        """Start it (again, on the same port) with `settings` (postgresql.conf names) and
        wait until it accepts connections."""
        options = " ".join(
            [f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1",
             "-c max_connections=300", *(f"-c {k}={v}" for k, v in settings.items())]
        )  # fmt: skip
        self._run_as_owner([
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_S), "-o", options, "start",
        ])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends the connections and stops cleanly; `immediate` is a crash (no checkpoint),
        as when the database's host dies: every connection breaks at once."""
        self._run_as_owner(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]
        )

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bin / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    def cpu_s(self) -> float:
        """CPU time of the whole server so far: the postmaster, its live processes (one per
        connection, the WAL writer, the checkpointer...) and those that ended, which the
        postmaster waited for (cutime and cstime of /proc/PID/stat)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # ended since the listing
                continue
            pid = int(stat.parent.name)
            if pid == postmaster:
                total += (sum(int(v) for v in fields[11:15])) / os.sysconf("SC_CLK_TCK")
            elif int(fields[1]) == postmaster:
                total += cpu_s(pid)
        return total

    async def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
