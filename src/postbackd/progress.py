"""A progress line on stderr for long client commands: a bar when the total is known, the
count, the rate per second and the elapsed time.

On a terminal the line is redrawn in place, at most ten times a second. Into a file or a
pipe (CI logs, `2> log`), where carriage returns would pile up, it is written as a plain
line every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

BAR_WIDTH: Final = 24
REDRAW_EVERY_S: Final = 0.1
LINE_EVERY_S: Final = 5.0


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Call `update` as work completes and `finish` once at the end."""

    def __init__(
        self,
        unit: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        line_every_s: float = LINE_EVERY_S,
    ) -> None:
        self._unit = unit
        self._stream = sys.stderr if stream is None else stream
        self._tty = self._stream.isatty()
        self._clock = clock
        self._every_s = REDRAW_EVERY_S if self._tty else line_every_s
        self._started = clock()
        self._shown = self._started
        self._latest: tuple[int, float | None, str] | None = None

    def _line(self, done: int, *, fraction: float | None = None, detail: str = "") -> str:
        """The line for `done` units; `fraction` (0..1) of the whole draws the bar."""
        elapsed_s = self._clock() - self._started
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        parts = []
        if fraction is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            filled = round(fraction * BAR_WIDTH)
            parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}")
        parts += [f"{done} {self._unit}", f"{rate:.0f}/s", _clock_text(elapsed_s)]
        if detail:
            parts.append(detail)
        return "  ".join(parts)

    def update(self, done: int, *, fraction: float | None = None, detail: str = "") -> None:
        self._latest = (done, fraction, detail)
        now = self._clock()
        if now - self._shown >= self._every_s:
            self._shown = now
            self._draw()

    def finish(self) -> None:
        """On a terminal, draw the latest state and move to the next line; elsewhere the
        caller's summary says the rest."""
        if self._tty and self._latest is not None:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        assert self._latest is not None
        done, fraction, detail = self._latest
        line = self._line(done, fraction=fraction, detail=detail)
        if self._tty:
            # Back to the line's start, draw, then erase what a longer line left behind.
            self._stream.write(f"\r{line}\x1b[K")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
