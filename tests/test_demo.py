"""`postbackd demo`: the whole workflow in one process, checked against its own script."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from postbackd import demo
from postbackd.demo.scenarios import SCENARIOS, Plan, make_plan
from postbackd.demo.summary import Figures, compare, mismatch_lines
from postbackd.demo.workflow import DemoError, Setup, TrackerInfo

# The demo as a command: its own process, so its logging setup stays out of this one.
RUN_DEMO = (
    "import argparse, sys\n"
    "from postbackd import demo\n"
    "parser = argparse.ArgumentParser(prog='postbackd demo')\n"
    "demo.add_arguments(parser)\n"
    "sys.exit(demo.run(parser.parse_args(sys.argv[1:])))\n"
)
OUTCOMES = (
    "attributed",
    "claimed",
    "not_claimed",
    "rejected_data_sharing",
    "rejected_outside_window",
    "rejected_invalid_time",
    "no_device_id",
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="postbackd demo")
    demo.add_arguments(parser)
    return parser.parse_args(argv)


def test_demo_walks_the_workflow_and_matches_its_script(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_DEMO,
            "--events",
            "400",
            "--seed",
            "7",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only: speed is for benchmarks, not tests
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in (
        "1. X account",
        "2. app Demo Game",
        "3. campaign",
        "4. reengagement tracker",
        "5. postback purchase -> PURCHASE",
        "level_complete -> LEVEL_ACHIEVED",
    ):
        assert step in out
    for name in (*OUTCOMES, "by CLICK", "by VIEW", "X claimed", "throughput"):
        assert name in out, name
    assert "summary matches the scripted claims" in out
    assert "MISMATCH" not in out
    # The kept data dir holds the store, X's script and the token, which is never printed.
    token = (data_dir / "api-token").read_text().strip()
    assert token not in out and token not in done.stderr
    assert (data_dir / demo.SCRIPT_FILE).stat().st_size > 0


def test_plan_is_the_same_for_a_seed_and_has_every_scenario() -> None:
    def plan(seed: int, count: int = 200) -> Plan:
        return make_plan(
            count,
            seed,
            app_id="koapp",
            named_tracker_id="kospring-1",
            now_s=1_800_000_000,
            run_id="r",
        )

    assert plan(3) == plan(3)
    assert plan(3).events != plan(4).events
    smallest = plan(3, len(SCENARIOS))
    assert {e.scenario.key for e in smallest.events} == {s.key for s in SCENARIOS}
    named = [e for e in plan(3).script if e["campaign_name"] and "SPRING" in e["campaign_name"]]
    assert named and all("KOSPRING-1" in str(e["campaign_name"]) for e in named)
    with pytest.raises(ValueError, match="one per scenario"):
        plan(3, len(SCENARIOS) - 1)


def test_compare_names_every_figure_that_differs() -> None:
    setup = Setup(
        "koapp", {"default": TrackerInfo("kow", "Winter"), "named": TrackerInfo("kos", "Spring")}
    )
    want = Figures(
        {"kow": Counter(attributed=5, CLICK=5), "": Counter(not_claimed=2)}, {"deliveries dead": 0}
    )
    assert compare(want, want, setup) == []
    got = Figures(
        {
            "kow": Counter(attributed=4, CLICK=4),
            "kos": Counter(claimed=1),
            "": Counter(not_claimed=2),
        },
        {"deliveries dead": 1},
    )
    differ = compare(want, got, setup)
    assert differ == [
        ("Winter: attributed", 5, 4),
        ("Winter: CLICK", 5, 4),
        ("Spring: claimed", 0, 1),
        ("deliveries dead", 0, 1),
    ]
    assert any("Spring: claimed" in line for line in mismatch_lines(differ))


def test_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="postbackd demo")
    demo.add_arguments(parser)
    text = parser.format_help()
    for option in ("--events", "--seed", "--data-dir", "--keep-running"):
        assert option in text
    with pytest.raises(SystemExit):
        _args("--events", str(len(SCENARIOS) - 1))
    (tmp_path / "old.db").write_text("x")
    with pytest.raises(DemoError, match="new or empty"):
        demo.run(_args("--data-dir", str(tmp_path)))
