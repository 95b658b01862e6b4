"""A full disk on demand: the daemon's data dir on a small tmpfs of its own, whose free space
a file takes and gives back. Only root may mount (`can_mount()`); scenario 7 skips its
disk-full intervals otherwise.

A tmpfs of its own keeps the fill away from every other file system of the machine, and it
is unmounted at the end, also when the run failed.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

# The name of the file that takes the free space, beside the daemon's SQLite files.
FILLER_NAME = "disk-filler"


def can_mount() -> bool:
    return os.geteuid() == 0


def mount_tmpfs(path: Path, size_mib: int) -> None:
    """A tmpfs of `size_mib` at `path` (created when missing), readable by its owner only,
    as the daemon wants its data dir."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_mib}m,mode=0700"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mount -t tmpfs at {path} failed: {done.stderr.strip()}")


def unmount(path: Path) -> None:
    """Unmount `path`; lazily when something still holds a file there, so that the work
    directory can go whatever happened."""
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)


class Filler:
    """Takes every free byte of the file system of `directory` with one file (`fill`), and
    gives them back (`free`). Both block: call them in a thread."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILLER_NAME

    def fill(self) -> int:
        """Write zeros until the file system refuses (ENOSPC): 1 MiB at a time, then one
        page at a time for the rest. Returns the bytes taken."""
        taken = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096):
                chunk = bytes(size)
                while True:
                    try:
                        taken += os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return taken

    def free(self) -> None:
        self.path.unlink(missing_ok=True)
