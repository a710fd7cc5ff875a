"""The Grafana dashboard is well formed and only queries metrics that exist.

Whether every expression returns data against a live federation is checked with a
real Prometheus in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

import fedcast.shared.metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "base" / "grafana" / "fedcast-dashboard.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def _series_names() -> set[str]:
    names = set()
    for attr in fedcast.shared.metrics.__all__:
        metric = getattr(fedcast.shared.metrics, attr)
        assert isinstance(metric, MetricWrapperBase)
        base = metric._name
        if metric._type == "counter":
            names.add(base + "_total")
        elif metric._type == "histogram":
            names.update({base + "_bucket", base + "_sum", base + "_count"})
        else:
            names.add(base)
    return names


def test_dashboard_identity_and_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "fedcast-overview"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_uses_the_datasource_variable_and_has_a_query() -> None:
    ids = set()
    for panel in _panels(_dashboard()):
        assert panel["id"] not in ids, "panel ids are unique"
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_queried_series_is_a_fedcast_metric_and_every_metric_is_shown() -> None:
    known = _series_names()
    queried = set()
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            queried.update(re.findall(r"\bfedcast_[a-z0-9_]+", target["expr"]))
    assert queried <= known, f"unknown series in the dashboard: {sorted(queried - known)}"
    shown_bases = {re.sub(r"_(bucket|sum|count)$", "", q) for q in queried}
    missing = [
        getattr(fedcast.shared.metrics, a)._name for a in fedcast.shared.metrics.__all__
    ]  # every metric is on some panel
    for base in missing:
        assert base in shown_bases or base + "_total" in shown_bases, f"{base} has no panel"


def test_grid_positions_fit_the_24_column_grid() -> None:
    for panel in _panels(_dashboard()):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]


def test_panels_do_not_overlap() -> None:
    """Every panel on the page (rows included) has its own cells of the grid.

    Panels inside a collapsed row are placed as if it were expanded and are not checked.
    """
    taken: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["y"] >= 0, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r} at x={x}, y={y}"
                taken[(x, y)] = panel["title"]


def test_rows_come_in_order_of_their_position() -> None:
    """Grafana lays rows out in list order: the JSON order and the y order must agree."""
    ys = [panel["gridPos"]["y"] for panel in _dashboard()["panels"] if panel["type"] == "row"]
    assert ys == sorted(ys)
