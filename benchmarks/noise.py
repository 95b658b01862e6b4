"""How much of the machine other work took during a measurement: the CPU time of the whole
machine (/proc/stat) less that of the benchmark's own processes, in cores. On a shared
machine this tells the figures measured on a quiet machine from the others."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU time all processes used since boot (every core, idle and I/O wait left out)."""
    # cpu  user nice system idle iowait irq softirq steal ...
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) * _TICK_S


def cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system CPU time so far of a process (all its threads), or of one of its
    threads; 0 once it is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(path).read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S


class Noise:
    """Started at creation; `foreign_cores()` is the average number of cores that processes
    other than `pids` (and this one) kept busy since."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = [os.getpid(), *pids]
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_s()
        self._own0 = self._own_s()

    def _own_s(self) -> float:
        return sum(cpu_s(pid) for pid in self._pids)

    def foreign_cores(self) -> float:
        elapsed_s = time.monotonic() - self._t0
        foreign_s = (machine_busy_s() - self._busy0) - (self._own_s() - self._own0)
        return max(0.0, foreign_s / elapsed_s) if elapsed_s > 0 else 0.0
