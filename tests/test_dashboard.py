"""The Grafana dashboard and its provisioning: it imports with no rewiring (fixed uids, every
panel on the provisioned datasource), answers an operator's questions row by row, shows every
metric, and asks Prometheus only cheap, correct queries. test_prometheus.py runs the queries."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from postbackd.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "postbackd.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
ROWS = [
    "Throughput",
    "X health",
    "Queues and lag",
    "Attribution outcomes",
    "Rate limiting",
    "Errors",
    "Retention",
    "Daemon",
    "Event stream",
]
# Series of Prometheus itself and of the process collector that panels may use.
OTHER_SERIES = {"up"}
NAME = re.compile(r"\b(?:postbackd|process)_[a-z_]+\b|\bup\b")


def yaml_values(path: Path, key: str) -> list[str]:
    """The values of `key:` in a small YAML file (the project has no YAML parser)."""
    return re.findall(rf"^\s*(?:- )?{key}:\s*(\S+)\s*$", path.read_text(), re.MULTILINE)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def exposed_series() -> dict[str, set[str]]:
    """Metric family -> the series names it exposes, from a fresh registry."""
    return {
        family.name: {s.name for s in family.samples} for family in Metrics().registry.collect()
    }


def test_the_provisioned_datasource_has_a_fixed_uid() -> None:
    datasources = PROVISIONING / "datasources" / "prometheus.yaml"
    assert yaml_values(datasources, "type") == ["prometheus"]
    assert yaml_values(datasources, "uid") == ["postbackd-prometheus"]


def test_the_dashboard_provider_loads_the_folder_the_docs_mount() -> None:
    provider = PROVISIONING / "dashboards" / "postbackd.yaml"
    (path,) = yaml_values(provider, "path")
    assert yaml_values(provider, "type") == ["file"]
    docs = (ROOT / "docs" / "observability.md").read_text()
    assert f"grafana/dashboards:{path}" in docs
    assert "grafana/provisioning:/etc/grafana/provisioning" in docs


def test_the_dashboard_has_a_fixed_uid_and_no_datasource_to_choose(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard["uid"] == "postbackd"
    assert dashboard["title"]
    assert not [v for v in dashboard["templating"]["list"] if v.get("type") == "datasource"]


def test_every_panel_queries_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (uid,) = yaml_values(PROVISIONING / "datasources" / "prometheus.yaml", "uid")
    datasource = {"type": "prometheus", "uid": uid}
    for panel in panels(dashboard):
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], f"{panel['title']} has no target"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_are_grouped_into_the_rows_an_operator_needs(dashboard: dict[str, Any]) -> None:
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ROWS
    assert dashboard["panels"][0]["type"] == "row"
    for row in rows:
        # Open rows keep their panels at the top level, after the row.
        assert row["collapsed"] is False and row["panels"] == [], row["title"]
    for this, following in itertools.pairwise([*dashboard["panels"], {"type": "row"}]):
        if this["type"] == "row":
            assert following["type"] != "row", f"row {this['title']!r} has no panels"


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_metric_is_shown_and_every_query_names_real_series(
    dashboard: dict[str, Any],
) -> None:
    families = exposed_series()
    known = set().union(*families.values()) | OTHER_SERIES
    used = {name for expr in exprs(dashboard) for name in NAME.findall(expr)}
    assert used <= known, used - known
    missing = [
        f for f, names in families.items() if f.startswith("postbackd_") and not names & used
    ]
    assert not missing, f"metrics on no panel: {missing}"


def test_queries_are_cheap_and_correct(dashboard: dict[str, Any]) -> None:
    for expr in exprs(dashboard):
        # Counters only through rate() or increase(); never a gauge through them.
        for match in re.finditer(r"\b\w+_(?:total|bucket)\b", expr):
            assert re.search(r"(?:rate|increase)\($", expr[: match.start()]), expr
        for match in re.finditer(r"\b(?:rate|increase)\((\w+)", expr):
            assert match.group(1).endswith(("_total", "_bucket")), expr
        # Quantiles over the buckets of all series summed, keeping only `le`.
        for match in re.finditer(r"histogram_quantile\(", expr):
            rest = expr[match.end() :]
            assert re.match(r"0\.\d+, sum by \(le\) \(rate\(\w+_bucket(\{[^}]*\})?\[", rest), expr
        # Windows follow the scrape interval (or the time range), never a fixed guess.
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window in ("$__rate_interval", "$__range"), expr


def test_every_query_keeps_the_daemons_the_instance_variable_chooses(
    dashboard: dict[str, Any],
) -> None:
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "instance" and variable["type"] == "query"
    assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
    assert variable["datasource"]["uid"] == "postbackd-prometheus"
    assert variable["query"]["query"] == 'label_values(up{job="postbackd"}, instance)'
    for expr in exprs(dashboard):
        for selector in re.finditer(r"\b(?:(?:postbackd|process)_[a-z_]+|up)\b(\{[^}]*\})?", expr):
            assert 'instance=~"$instance"' in (selector.group(1) or ""), expr
