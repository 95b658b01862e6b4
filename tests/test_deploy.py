"""deploy/postbackd.service: the systemd unit docs/operations.md installs. `systemd-analyze
verify` checks it where systemd is installed; the directives an operator relies on are
checked everywhere."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "postbackd.service"
# Where docs/operations.md installs postbackd; the test points it at this checkout's.
INSTALLED = "/opt/postbackd/bin/postbackd"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if (m := re.fullmatch(r"(\w+)=(.*)", line.strip())) is not None:
            found.setdefault(m.group(1), []).append(m.group(2))
    return found


def test_the_unit_restarts_runs_as_its_own_user_and_is_hardened() -> None:
    d = directives()
    expected = {
        "Restart": ["on-failure"],
        "User": ["postbackd"],
        "Group": ["postbackd"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "ProtectHome": ["yes"],
        "ProtectSystem": ["strict"],
        "CapabilityBoundingSet": [""],
        "KillSignal": ["SIGTERM"],
        "EnvironmentFile": ["/etc/postbackd/postbackd.env"],
        "StateDirectory": ["postbackd"],
    }
    for name, value in expected.items():
        assert d.get(name) == value, (name, d.get(name))
    assert int(d["LimitNOFILE"][0]) >= 65536
    assert "/var/lib/postbackd" in d["ReadWritePaths"][0].split()
    (start,) = d["ExecStart"]
    assert start.startswith(f"{INSTALLED} serve ") and "--data-dir /var/lib/postbackd" in start
    # Stopping waits longer than the daemon's default drain (shutdown_grace_s, 10 s).
    assert int(d["TimeoutStopSec"][0].removesuffix("s")) > 10


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    entry_point = Path(sys.executable).with_name("postbackd")
    assert entry_point.exists(), entry_point
    # verify checks that ExecStart's program exists: this checkout's stands in for the
    # installed one, and the unit is otherwise as shipped.
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED} ") == 1
    unit = tmp_path / "postbackd.service"
    unit.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={entry_point} "))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr
