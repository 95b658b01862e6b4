"""Horizontal bar charts drawn as SVG on the server: the geometry here, the markup in the
`bar_chart` macro of the templates (escaped like every other value), the colours in the
stylesheet by class. No script, no plotting library: a few rectangles are all a report needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

ROW_PX: Final = 26
BAR_PX: Final = 18
LABEL_PX: Final = 190
VALUE_PX: Final = 60
WIDTH_PX: Final = 520


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    # A class of the stylesheet: the bar's colour says what it is.
    tone: str
    y: int
    length: float


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_px: int
    bar_px: int

    @property
    def empty(self) -> bool:
        return not self.bars


def bar_chart(
    title: str, items: Sequence[tuple[str, int, str]], *, scale: int | None = None
) -> BarChart:
    """Bars of `(label, value, tone)`; lengths relative to `scale` (default: the largest
    value), so that two charts drawn on one scale compare at a glance."""
    room = WIDTH_PX - LABEL_PX - VALUE_PX
    top = max([scale or 0, *(value for _, value, _ in items)], default=0)
    bars = tuple(
        Bar(
            label,
            value,
            tone,
            i * ROW_PX,
            # A non-zero value keeps a sliver, so it does not read as nothing.
            0.0 if value == 0 or top == 0 else max(2.0, room * value / top),
        )
        for i, (label, value, tone) in enumerate(items)
    )
    return BarChart(title, bars, WIDTH_PX, max(1, len(bars)) * ROW_PX, LABEL_PX, BAR_PX)
