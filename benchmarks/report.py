"""The report of a benchmark run: a table on the terminal, `report.json`, `report.md`, and
`report.png` (claims/s and lag over time for the scenarios that have a timeline)."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import orjson

from benchmarks.outcome import Outcome

_LIBRARIES = (
    "postbackd", "aiohttp", "uvloop", "orjson", "oauthlib", "yarl", "multidict",
    "prometheus-client", "aiosqlite", "asyncpg", "matplotlib",
)  # fmt: skip


def machine() -> dict[str, object]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "libraries": versions,
    }


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def _number(value: float) -> str:
    if math.isnan(value):  # a figure with nothing to measure (no event of its kind)
        return "n/a"
    if math.isinf(value):
        return "∞"
    if value == int(value) and abs(value) >= 10:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(outcome: Outcome) -> str:
    if outcome.error:
        return "ERROR"
    return "pass" if all(c.passed for c in outcome.checks) else "FAIL"


def table(outcomes: Sequence[Outcome]) -> str:
    """The terminal summary: every bar line with its value and verdict."""
    lines = []
    for o in outcomes:
        lines.append(f"{o.number}. {o.title}  [{_verdict(o)}]")
        if o.error:
            lines.append(f"     error: {o.error}")
        for name, value in o.figures.items():
            lines.append(f"     {name:34s} {_number(value):>12}")
        for c in o.checks:
            sign = "≥" if c.at_least else "≤"
            status = "pass" if c.passed else "FAIL"
            lines.append(
                f"   * {c.label}: {_number(c.value)} {sign} {_number(c.limit)} {c.unit}  {status}"
            )
    return "\n".join(lines)


def markdown(outcomes: Sequence[Outcome], meta: dict[str, object]) -> str:
    m = meta["machine"]
    assert isinstance(m, dict)
    libraries = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    out = [
        "# postbackd benchmark report",
        "",
        f"Run: {meta['mode']}, {meta['started_at']}, {meta['duration_s']:.0f} s; "
        f"{meta['repeat']} run(s) per scenario, figures are medians. "
        f"Load average at start / end: {meta['load_start']} / {meta['load_end']}.",
        "",
        f"Machine: {m['cpu_count']} CPUs, {m['cpu_model']}; {m['system']}; {m['python']}.",
        "",
        f"Libraries: {libraries}.",
        "",
        "## The bar",
        "",
        "| scenario | line | value | bar | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for o in outcomes:
        if o.error:
            error = " ".join(o.error.split()).replace("|", "/")
            out.append(f"| {o.number} | {o.title} | | | ERROR: {error} |")
        for c in o.checks:
            sign = "≥" if c.at_least else "≤"
            result = "pass" if c.passed else "**FAIL**"
            out.append(
                f"| {o.number} | {c.label} | {_number(c.value)} {c.unit} "
                f"| {sign} {_number(c.limit)} | {result} |"
            )
    out += ["", "![claims/s and lag over time](report.png)", ""]
    for o in outcomes:
        out += [f"## {o.number}. {o.title}", ""]
        out += [f"- {note}" for note in o.notes]
        if o.notes:
            out.append("")
        if o.number == 8 and not o.error:
            out += _stores_table(o)
        if o.runs:
            names = list(o.figures)
            out.append(
                "| figure | median | "
                + " | ".join(f"run {i + 1}" for i in range(len(o.runs)))
                + " |"
            )
            out.append("| --- | ---: |" + " ---: |" * len(o.runs))
            for name in names:
                values = " | ".join(_number(r[name]) if name in r else "" for r in o.runs)
                out.append(f"| {name} | {_number(o.figures[name])} | {values} |")
            out.append("")
    return "\n".join(out)


def _stores_table(o: Outcome) -> list[str]:
    """Scenario 8's variants side by side, one row per store and number of daemons (its
    figures are named STORE_DAEMONS_FIGURE), from the medians."""
    rows = ["| store | daemons | claims/s | daemon CPU µs/claim | PostgreSQL CPU µs/claim "
            "| least daemon's share | foreign cores | lost | duplicates |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    variants = dict.fromkeys(name.rsplit("_claims_per_s", 1)[0]
                             for name in o.figures if name.endswith("_claims_per_s"))  # fmt: skip
    for variant in variants:
        store, daemons = variant.split("_")
        cells = [
            _number(o.figures[f"{variant}_{name}"]) if f"{variant}_{name}" in o.figures else "–"
            for name in ("claims_per_s", "daemon_cpu_us_per_claim", "postgres_cpu_us_per_claim",
                         "least_daemon_share", "foreign_cores", "lost", "duplicates")
        ]  # fmt: skip
        label = "PostgreSQL" if store == "pg" else "SQLite"
        rows.append(f"| {label} | {daemons} | " + " | ".join(cells) + " |")
    return [*rows, ""]


def chart(outcomes: Sequence[Outcome], path: Path) -> bool:
    """Claims/s (left axis) and mean lag or memory (right axis) over time, one panel per
    scenario with a timeline, and one more for the daemon's memory and database size where
    the scenario watched them (7); False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    for o in outcomes:
        if o.timeline:
            panels.append((o, "main"))
            if any(p.db_mb is not None for p in o.timeline):
                panels.append((o, "store"))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for ax, (o, kind) in zip(axes[:, 0], panels, strict=True):
        t = [p.t_s for p in o.timeline]
        title = f"{o.number}. {o.title}" + ("" if kind == "main" else ": memory and store")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        right = ax.twinx()
        if kind == "store":  # does the daemon grow over a long run?
            ax.plot(t, [p.rss_mb for p in o.timeline], color="tab:purple", lw=1.2)
            ax.set_ylabel("daemon RSS (MB)", color="tab:purple")
            ax.set_ylim(bottom=0)
            db = [(p.t_s, p.db_mb) for p in o.timeline if p.db_mb is not None]
            right.plot([x for x, _ in db], [y for _, y in db], color="tab:green", lw=1.2)
            right.set_ylabel("SQLite files (MB)", color="tab:green")
            right.set_ylim(bottom=0)
            continue
        if o.number == 6:  # nothing is sent: what comes in, and the memory it takes
            ax.plot(t, [p.accepted_per_s for p in o.timeline], color="tab:blue", lw=1.2)
            ax.set_ylabel("events accepted/s", color="tab:blue")
            right.plot(t, [p.rss_mb for p in o.timeline], color="tab:red", lw=1.2)
            right.set_ylabel("daemon RSS (MB)", color="tab:red")
            right.set_ylim(bottom=0)
            continue
        ax.plot(t, [p.claims_per_s for p in o.timeline], color="tab:blue", lw=1.2)
        ax.set_ylabel("claims/s", color="tab:blue")
        lag_t = [p.t_s for p in o.timeline if p.lag_s is not None]
        lag = [1000 * p.lag_s for p in o.timeline if p.lag_s is not None]
        right.plot(lag_t, lag, color="tab:red", lw=1.0, alpha=0.8)
        right.set_ylabel("mean lag (ms)", color="tab:red")
        if lag and max(lag) / max(min(lag), 1e-3) > 100:
            right.set_yscale("log")
    axes[-1, 0].set_xlabel(
        "seconds since sampling started (a sample every 0.5 s, scenario 7 every 5 s; first run)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(outcomes: Sequence[Outcome], meta: dict[str, object], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    body = {**meta, "scenarios": [o.to_json() for o in outcomes]}
    written[0].write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    written[1].write_text(markdown(outcomes, meta) + "\n", encoding="utf-8")
    if chart(outcomes, out_dir / "report.png"):
        written.append(out_dir / "report.png")
    return written
