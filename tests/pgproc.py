"""A real PostgreSQL server (Debian's package `postgresql-15`, which .ci/run installs) for the
tests: initdb into its own temporary directory, started with pg_ctl on a free loopback port,
fsync off (a test database need not survive a power loss), stopped afterwards.

One server for the whole test run (`pg_server`), and a fresh database per test (`pg_url`): a test
sees no rows of another, and CREATE DATABASE from the template costs a few milliseconds.

PostgreSQL refuses to run as root (initdb and the server alike): when the tests run as root
(a CI container), both run as the unprivileged user `nobody`, through `setpriv` (util-linux,
present on every Debian: it changes the ids and execs, without PAM or a login shell), in a
directory chowned to it. That directory is made under the system's temporary directory, not
under pytest's `tmp_path`: pytest's base directory is private to its owner (0700), which
`nobody` could not enter.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from redisproc import free_port

USER = "postbackd"
PASSWORD = "pg-test-password-7c1e"
START_TIMEOUT_S = 30
# The user PostgreSQL runs as when the tests run as root.
UNPRIVILEGED = "nobody"


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, under one directory per
    major version; the newest installed wins. In CI a missing one fails instead of skipping."""
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
    message = "PostgreSQL is not installed (Debian package postgresql-15; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


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

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c max_connections=300"
        )
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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
        server.stop()
    finally:
        server.remove()


@pytest.fixture
async def pg_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database on the test run's server, dropped after the test."""
    url = await pg_server.create_database()
    try:
        yield url
    finally:
        await pg_server.drop_database(url)
