"""The demo's figures: expected from the scripted events, observed through the results API,
compared, and printed as one table per tracker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .scenarios import Plan
from .traffic import Streamed
from .workflow import Api, Setup

NO_TRACKER: Final = ""
# Rows of the table: what happened to the deliveries of each tracker (PRODUCT.md 1).
MEASURES: Final = (
    "delivered",
    "x_claimed",
    "attributed",
    "CLICK",
    "VIEW",
    "claimed",
    "rejected_data_sharing",
    "rejected_outside_window",
    "rejected_invalid_time",
    "not_claimed",
)
_LABELS: Final = {
    "delivered": "delivered (X answered)",
    "x_claimed": "X claimed",
    "CLICK": "  by CLICK",
    "VIEW": "  by VIEW",
}
SKIPPED: Final = "skipped no_device_id"
TPN_WON: Final = "tpn won after twitter refused sharing"
_LOOKUPS_IN_FLIGHT: Final = 16


@dataclass(frozen=True, slots=True)
class Figures:
    # Tracker id (NO_TRACKER when X made no claim) -> measure -> count.
    table: dict[str, Counter[str]]
    # The figures outside the table, by label.
    other: dict[str, int]


def expected(plan: Plan, setup: Setup) -> Figures:
    table: dict[str, Counter[str]] = {}
    for event in plan.events:
        s = event.scenario
        if s.outcome is None:
            continue
        column = setup.trackers[s.tracker].id if s.tracker else NO_TRACKER
        row = table.setdefault(column, Counter())
        row["delivered"] += 1
        row["x_claimed"] += s.outcome != "not_claimed"
        row[s.outcome] += 1
        if s.engagement_type is not None:
            row[s.engagement_type] += 1
    scenarios = [e.scenario for e in plan.events]
    return Figures(
        table,
        {
            "events accepted": len(plan.events),
            "events rejected": 0,
            SKIPPED: sum(1 for s in scenarios if s.outcome is None),
            TPN_WON: sum(1 for s in scenarios if s.winner == "tpn"),
            "deliveries dead": 0,
            "deliveries held": 0,
        },
    )


async def observe(api: Api, plan: Plan, setup: Setup, streamed: Streamed) -> Figures:
    report = await api.call("GET", f"/api/v1/reports/trackers?app_id={setup.app_id}")
    table: dict[str, Counter[str]] = {}
    for item in report["items"]:
        row = Counter({"delivered": sum(item["claims"].values()), "x_claimed": item["x_claimed"]})
        row.update(item["claims"])
        row.update(item["attributions"])
        row["attributed"] = item["claims"].get("attributed", 0)
        table[item["tracker_id"] or NO_TRACKER] = row
    skipped = await _deliveries(api, "skipped")
    tpn_events = [e.event_id for e in plan.events if e.scenario.winner == "tpn"]
    return Figures(
        table,
        {
            "events accepted": streamed.accepted,
            "events rejected": streamed.rejected,
            SKIPPED: sum(1 for d in skipped if d["reason"] == "no_device_id"),
            TPN_WON: await _tpn_wins(api, tpn_events),
            "deliveries dead": len(await _deliveries(api, "dead")),
            "deliveries held": len(await _deliveries(api, "held")),
        },
    )


async def _deliveries(api: Api, state: str) -> list[dict[str, Any]]:
    return await api.every(f"/api/v1/deliveries?state={state}")


async def _tpn_wins(api: Api, event_ids: list[str]) -> int:
    """Claims won by tpn after X's own candidate was refused (seed, CAUTION), read from each
    event's claim record."""
    slots = asyncio.Semaphore(_LOOKUPS_IN_FLIGHT)

    async def won(event_id: str) -> bool:
        async with slots:
            details = await api.call("GET", f"/api/v1/events/{event_id}")
        return any(
            claim["outcome"] == "attributed"
            and claim["source"] == "tpn"
            and any(
                r["source"] == "twitter" and r["reason"] == "rejected_data_sharing"
                for r in claim["rejected"]
            )
            for claim in details["claims"]
        )

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(won(event_id)) for event_id in event_ids]
    return sum(task.result() for task in tasks)


def compare(want: Figures, got: Figures, setup: Setup) -> list[tuple[str, int, int]]:
    """(figure, expected, observed) of every figure that differs."""
    differ: list[tuple[str, int, int]] = []
    for column in _columns(setup, want, got):
        name = _head(column, setup)[0]
        a, b = want.table.get(column, Counter()), got.table.get(column, Counter())
        differ.extend((f"{name}: {m}", a[m], b[m]) for m in _measures(a, b) if a[m] != b[m])
    differ.extend(
        (k, v, got.other.get(k, 0)) for k, v in want.other.items() if got.other.get(k) != v
    )
    return differ


def render(
    got: Figures, want: Figures, setup: Setup, ingest_s: float, deliver_s: float
) -> list[str]:
    """The summary table (rows: measures; columns: trackers and the total), then the rest."""
    columns = _columns(setup, want, got)
    heads = [_head(column, setup) for column in columns] + [("total", "")]
    widths = [max(len(top), len(bottom), 7) for top, bottom in heads]
    label_width = 26
    lines = [
        " " * label_width
        + "".join(f"  {top:>{w}}" for (top, _), w in zip(heads, widths, strict=True)),
        " " * label_width
        + "".join(f"  {bottom:>{w}}" for (_, bottom), w in zip(heads, widths, strict=True)),
    ]
    rows = [got.table.get(c, Counter()) for c in columns]
    for measure in _measures(*rows, Counter(dict.fromkeys(MEASURES, 0))):
        values = [row[measure] for row in rows]
        cells = [*values, sum(values)]
        lines.append(
            f"{_LABELS.get(measure, measure):<{label_width}}"
            + "".join(f"  {n:>{w},}" for n, w in zip(cells, widths, strict=True))
        )
    delivered = sum(row["delivered"] for row in rows)
    lines += [
        "",
        f"{SKIPPED}: {got.other[SKIPPED]:,} events without a usable IDFA, not sent to X",
        f"{TPN_WON}: {got.other[TPN_WON]:,} of the attributions",
        f"throughput: ingest {got.other['events accepted'] / ingest_s:,.0f} events/s, "
        f"delivery {delivered / deliver_s:,.0f} claims/s "
        f"({delivered:,} X answers {deliver_s:.1f} s after the first event)",
    ]
    return [line.rstrip() for line in lines]


def _head(column: str, setup: Setup) -> tuple[str, str]:
    for role, tracker in setup.trackers.items():
        if tracker.id == column:
            return tracker.name, "default" if role == "default" else "by campaign id"
    if column == NO_TRACKER:
        return "no tracker", "X made no claim"
    return column, ""


def _columns(setup: Setup, *figures: Figures) -> list[str]:
    """The demo's trackers, any other tracker a figure names, then "no tracker"."""
    known = [t.id for t in setup.trackers.values()]
    others = sorted({c for f in figures for c in f.table} - {*known, NO_TRACKER})
    return [*known, *others, NO_TRACKER]


def _measures(*rows: Counter[str]) -> list[str]:
    extra = sorted({m for row in rows for m in row} - set(MEASURES))
    return [*MEASURES, *extra]


def mismatch_lines(differ: Iterable[tuple[str, int, int]]) -> list[str]:
    lines = [
        "MISMATCH: these figures differ from the scripted claims",
        f"  {'figure':<50} {'expected':>9} {'observed':>9}",
    ]
    lines += [f"  {label:<50} {want:>9,} {got:>9,}" for label, want, got in differ]
    return lines
