"""One daemon per data dir (PRODUCT.md 2): the embedded store is held by one process, with an
exclusive lock on a file beside the database for the whole life of the process.

A second `serve` on the same data dir (a supervisor restarting while the old process drains
does exactly this) would send every claim again and record every attribution twice; it
refuses to start instead, naming the holder's pid. The lock is the kernel's (flock): it goes
with the process, however the process ends, kill -9 included, so no stale lock is left.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from postbackd.errors import PostbackdError

LOCK_NAME: Final = "postbackd.lock"


class DataDirInUse(PostbackdError):
    pass


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"the data dir {self.path.parent} is in use by another postbackd "
                f"(pid {holder}; lock {self.path}): one daemon per data dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
