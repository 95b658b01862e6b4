"""A minimal progress bar on stderr: redrawn in place on a terminal, one final line
otherwise (logs and captured output stay readable)."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

_WIDTH: Final = 30
_REDRAW_S: Final = 0.05


class Bar:
    def __init__(self, label: str, total: int, unit: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self._live and now - self._drawn >= _REDRAW_S:
            self._drawn = now
            self._stream.write("\r" + self._line(now))
            self._stream.flush()

    def close(self) -> None:
        self._stream.write(("\r" if self._live else "") + self._line(time.monotonic()) + "\n")
        self._stream.flush()

    def _line(self, now: float) -> str:
        share = min(self.done / self.total, 1.0)
        filled = round(share * _WIDTH)
        rate = self.done / max(now - self._started, 1e-9)
        return (
            f"{self.label:<10} [{'#' * filled}{'.' * (_WIDTH - filled)}] "
            f"{self.done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s)"
        )
