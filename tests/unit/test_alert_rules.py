"""The shipped Prometheus alerting rules: valid, consistent everywhere they ship, and right.

* ``deploy/prometheus/fedcast-alerts.yml`` (compose) and the PrometheusRule in
  ``k8s/base/monitoring/prometheusrule.yaml`` carry the same rules.
* Every ``fedcast_*`` series a rule queries is defined in ``shared/metrics.py``.
* ``promtool check rules`` accepts them, and ``promtool test rules`` shows on synthetic
  series that they fire when they should and stay quiet otherwise: above all that a
  federation waiting for clients is told apart from a stalled one (skipped, saying why,
  when promtool is not installed).
* The Grafana dashboard shows each alert's quantities, with its threshold.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

import fedcast.shared.metrics

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_RULES = ROOT / "deploy" / "prometheus" / "fedcast-alerts.yml"
COMPOSE_PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
K8S_RULE = ROOT / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"
K8S_KUSTOMIZATION = ROOT / "k8s" / "base" / "kustomization.yaml"
DASHBOARD = ROOT / "k8s" / "base" / "grafana" / "fedcast-dashboard.json"
METRICS_DOC = ROOT / "docs" / "METRICS.md"

EXPECTED_ALERTS = {
    "FedcastFederationStalled",
    "FedcastWaitingForClients",
    "FedcastRejectedMessagesSpike",
    "FedcastDropoutRateHigh",
    "FedcastClippingHigh",
    "FedcastCheckpointDamaged",
    "FedcastRoundRetriesHigh",
}
SEVERITIES = {"critical", "warning", "info"}


# -- reading the rules ----------------------------------------------------------------------------


def compose_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(COMPOSE_RULES.read_text())["groups"]
    return groups


def k8s_rule() -> dict[str, Any]:
    rule: dict[str, Any] = yaml.safe_load(K8S_RULE.read_text())
    return rule


def alerts() -> list[dict[str, Any]]:
    return [rule for group in compose_groups() for rule in group["rules"] if "alert" in rule]


def normalize(expr: str) -> str:
    """One space between tokens, as the dashboard writes an expression on one line."""
    return " ".join(expr.split())


def _strip_parens(text: str) -> str:
    """Drop parentheses that enclose the whole of ``text``."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text  # the first "(" closes before the end: "(a) / (b)"
        text = text[1:-1].strip()
    return text


def top_level_parts(expr: str) -> list[str]:
    """Split ``expr`` at its top-level set operators (and, or, unless)."""
    text = normalize(expr)
    parts: list[str] = []
    depth, start, i, quoted = 0, 0, 0, False
    while i < len(text):
        ch = text[i]
        if quoted:
            quoted = not (ch == '"' and text[i - 1] != "\\")
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            match = re.match(r" (and|or|unless) ", text[i:])
            if match is not None:
                parts.append(text[start:i])
                i += match.end()
                start = i
                continue
        i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


_COMPARISON = re.compile(r"(?P<quantity>.*?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[-+]?\d+(?:\.\d+)?)")


def quantities(expr: str) -> list[tuple[str, str | None, float | None]]:
    """Each top-level operand of ``expr`` as (quantity, comparison, threshold).

    ``a > 1800 and b == 0`` gives ``[("a", ">", 1800.0), ("b", "==", 0.0)]``: what a
    dashboard panel must plot to show what the alert sees, and where to draw its line.
    """
    found: list[tuple[str, str | None, float | None]] = []
    for part in top_level_parts(expr):
        match = _COMPARISON.fullmatch(part)
        if match is None:
            found.append((_strip_parens(part), None, None))
        else:
            found.append((_strip_parens(match["quantity"]), match["op"], float(match["value"])))
    return found


def defined_series() -> set[str]:
    """Every series name shared/metrics.py exports (counters with _total, histograms' three)."""
    names = set()
    for attr in fedcast.shared.metrics.__all__:
        metric = getattr(fedcast.shared.metrics, attr)
        assert isinstance(metric, MetricWrapperBase)
        base: str = metric._name  # no public accessor; stable across prometheus_client releases
        if metric._type == "counter":
            names.add(base + "_total")
        elif metric._type == "histogram":
            names.update({base + "_bucket", base + "_sum", base + "_count"})
        else:
            names.add(base)
    return names


# -- the helpers themselves can tell right from wrong ------------------------------------------------


def test_quantities_split_set_operators_and_comparisons() -> None:
    expr = '(time() - x{a="b and c"}) > 1800\n  and max_over_time(y[30m]) == 0'
    assert quantities(expr) == [
        ('time() - x{a="b and c"}', ">", 1800.0),
        ("max_over_time(y[30m])", "==", 0.0),
    ]
    assert quantities("a / (b * (c + d)) >= 0.2") == [("a / (b * (c + d))", ">=", 0.2)]
    assert quantities("(a) / (b) > 1") == [("(a) / (b)", ">", 1.0)]
    assert quantities("up") == [("up", None, None)]


# -- structure and consistency -----------------------------------------------------------------------


def test_the_expected_alerts_ship_each_once() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "an alert defined twice"
    assert set(names) == EXPECTED_ALERTS


def test_every_alert_says_how_urgent_it_is_and_what_to_do() -> None:
    for rule in alerts():
        name = rule["alert"]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: for: {rule['for']!r}"
        assert rule["labels"]["severity"] in SEVERITIES, name
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert summary.strip() and len(description.split()) >= 20, f"{name}: say what to do"


def test_the_waiting_and_stalled_alerts_are_told_apart() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    stalled = normalize(by_name["FedcastFederationStalled"]["expr"])
    waiting = normalize(by_name["FedcastWaitingForClients"]["expr"])
    assert "fedcast_round_started_timestamp_seconds" in stalled
    assert "fedcast_waiting_for_clients" in stalled and "fedcast_waiting_for_clients" in waiting
    assert by_name["FedcastFederationStalled"]["labels"]["severity"] == "critical"


def test_kubernetes_and_compose_carry_the_same_rules() -> None:
    rule = k8s_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == compose_groups()  # names, exprs, for, labels, annotations
    resources = yaml.safe_load(K8S_KUSTOMIZATION.read_text())["resources"]
    assert "monitoring/prometheusrule.yaml" in resources


def test_compose_prometheus_loads_the_rules_file() -> None:
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    (path,) = config["rule_files"]
    volumes = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["volumes"]
    assert f"./deploy/prometheus/fedcast-alerts.yml:{path}:ro" in volumes


def test_every_series_the_rules_query_is_a_fedcast_metric() -> None:
    known = defined_series()
    referenced: set[str] = set()
    for rule in alerts():
        names = set(re.findall(r"\bfedcast_\w+", rule["expr"]))
        assert names, f"{rule['alert']} queries no fedcast metric"
        referenced |= names
    assert referenced <= known, f"unknown series in the rules: {sorted(referenced - known)}"
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in referenced}
    for progress in (
        "fedcast_round_started_timestamp_seconds",
        "fedcast_waiting_for_clients",
        "fedcast_messages_rejected_total",
        "fedcast_dropouts_total",
        "fedcast_clipped_values_total",
        "fedcast_checkpoints_damaged_total",
        "fedcast_round_retries_total",
    ):
        assert progress in base, progress


def test_metrics_doc_lists_every_alert() -> None:
    section = METRICS_DOC.read_text().split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = {m[1]: m[2] for m in re.finditer(r"^\|\s*`(Fedcast\w+)`\s*\|(.*)\|\s*$", section, re.M)}
    assert set(rows) == EXPECTED_ALERTS
    for rule in alerts():
        cells = [cell.strip() for cell in rows[rule["alert"]].split("|")]
        assert f"`{rule['for']}`" in cells, rule["alert"]
        assert rule["labels"]["severity"] in cells, rule["alert"]


# -- the dashboard shows what each alert sees --------------------------------------------------------


def _panels() -> list[dict[str, Any]]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_the_dashboard_has_a_panel_for_every_alert() -> None:
    panels = _panels()
    for rule in alerts():
        name = rule["alert"]
        showing = [p for p in panels if re.search(rf"\b{name}\b", p.get("description", ""))]
        assert showing, f"no panel names {name} in its description"
        exprs = {normalize(t["expr"]) for p in showing for t in p["targets"]}
        steps = {
            step["value"]
            for p in showing
            for step in p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        }
        for quantity, op, threshold in quantities(rule["expr"]):
            assert quantity in exprs, f"{name}: no panel plots {quantity}"
            if op in {">", ">=", "<", "<="}:
                assert threshold in steps, f"{name}: no threshold line at {threshold}"


# -- promtool ----------------------------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool not found on PATH: install Debian's prometheus package (apt-get install -y "
            "prometheus, which ships /usr/bin/promtool) to check and unit-test the alerting rules"
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_both_rule_files(tmp_path: Path) -> None:
    promtool = _promtool()
    k8s_as_file = tmp_path / "k8s-rules.yml"
    k8s_as_file.write_text(yaml.safe_dump({"groups": k8s_rule()["spec"]["groups"]}))
    for path in (COMPOSE_RULES, k8s_as_file):
        proc = _run(promtool, "check", "rules", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in proc.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """Guard the guard: a rule promtool cannot parse must fail the check above."""
    promtool = _promtool()
    groups = compose_groups()
    groups[0]["rules"][0]["expr"] = "sum by (service (fedcast_current_round)"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": groups}))
    assert _run(promtool, "check", "rules", str(broken)).returncode != 0


AGG = {"service": "aggregator", "instance": "agg"}


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{selector}}}", "values": values}


def _fires(alert: str, at: str, *label_sets: dict[str, str]) -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for r in alerts() if r["alert"] == alert)
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": {**labels, "severity": severity}} for labels in label_sets],
    }


def _scenarios() -> list[dict[str, Any]]:
    """promtool unit tests; one-minute samples, ``time()`` is 0 at the start of each."""
    started_at_0 = _series("fedcast_round_started_timestamp_seconds", "0x200", **AGG)
    return [
        {  # no clients: waiting, never "stalled"
            "interval": "1m",
            "input_series": [started_at_0, _series("fedcast_waiting_for_clients", "1x200", **AGG)],
            "alert_rule_test": [
                _fires("FedcastWaitingForClients", "20m"),  # pending: for 30m
                _fires("FedcastWaitingForClients", "40m", AGG),
                _fires("FedcastFederationStalled", "40m"),
                _fires("FedcastFederationStalled", "190m"),
            ],
        },
        {  # clients online, the round makes no progress: stalled after 30 min (+ for 5m)
            "interval": "1m",
            "input_series": [started_at_0, _series("fedcast_waiting_for_clients", "0x200", **AGG)],
            "alert_rule_test": [
                _fires("FedcastFederationStalled", "33m"),  # pending
                _fires("FedcastFederationStalled", "40m", AGG),
                _fires("FedcastWaitingForClients", "40m"),
            ],
        },
        {  # waited 60 min for clients, then the round stalls: counted from the clients' arrival
            "interval": "1m",
            "input_series": [started_at_0, _series("fedcast_waiting_for_clients", "1x59 0x140", **AGG)],
            "alert_rule_test": [
                _fires("FedcastWaitingForClients", "50m", AGG),
                _fires("FedcastWaitingForClients", "70m"),
                _fires("FedcastFederationStalled", "80m"),
                _fires("FedcastFederationStalled", "100m", AGG),
            ],
        },
        {  # healthy: a round a minute
            "interval": "1m",
            "input_series": [
                _series("fedcast_round_started_timestamp_seconds", "0+60x200", **AGG),
                _series("fedcast_waiting_for_clients", "0x200", **AGG),
                _series("fedcast_rounds_completed_total", "0+1x200", **AGG),
                _series("fedcast_round_retries_total", "0x200", **AGG),
                _series("fedcast_online_set_size", "3x200", **AGG),
                _series("fedcast_dropouts_total", "0x200", phase="upload", **AGG),
                _series("fedcast_checkpoints_damaged_total", "0x200", **AGG),
            ],
            "alert_rule_test": [
                _fires(name, "190m")
                for name in sorted(EXPECTED_ALERTS - {"FedcastRejectedMessagesSpike", "FedcastClippingHigh"})
            ],
        },
        {  # one reason spikes (1/s), another trickles (0.1/s)
            "interval": "1m",
            "input_series": [
                _series("fedcast_messages_rejected_total", "0+60x30", reason="unknown_sender", **AGG),
                _series("fedcast_messages_rejected_total", "0+6x30", reason="stale", **AGG),
            ],
            "alert_rule_test": [
                _fires(
                    "FedcastRejectedMessagesSpike",
                    "10m",
                    {"service": "aggregator", "reason": "unknown_sender"},
                )
            ],
        },
        {  # a third of the members offered drop out (agg); a sixth does (agg2)
            "interval": "1m",
            "input_series": [
                *(
                    _series(name, values, service="aggregator", instance=instance)
                    for instance, dropouts in (("agg", "0+2x60"), ("agg2", "0+1x60"))
                    for name, values in (
                        ("fedcast_online_set_size", "3x60"),
                        ("fedcast_rounds_completed_total", "0+1x60"),
                        ("fedcast_round_retries_total", "0+1x60"),
                    )
                ),
                _series("fedcast_dropouts_total", "0+2x60", phase="upload", **AGG),
                _series(
                    "fedcast_dropouts_total", "0+1x60", phase="upload", service="aggregator", instance="agg2"
                ),
            ],
            "alert_rule_test": [
                _fires("FedcastDropoutRateHigh", "10m"),  # pending: for 15m
                _fires("FedcastDropoutRateHigh", "50m", AGG),
            ],
        },
        {  # e1 clips 10 values per update, e2 none
            "interval": "1m",
            "input_series": [
                _series("fedcast_clipped_values_total", "0+10x150", service="edge", instance="e1"),
                _series("fedcast_client_train_seconds_count", "0+1x150", service="edge", instance="e1"),
                _series("fedcast_clipped_values_total", "0x150", service="edge", instance="e2"),
                _series("fedcast_client_train_seconds_count", "0+1x150", service="edge", instance="e2"),
            ],
            "alert_rule_test": [
                _fires("FedcastClippingHigh", "50m"),  # pending: for 1h
                _fires("FedcastClippingHigh", "130m", {"service": "edge", "instance": "e1"}),
            ],
        },
        {  # agg started from an older checkpoint; agg2 did not
            "interval": "1m",
            "input_series": [
                _series("fedcast_checkpoints_damaged_total", "1x10", **AGG),
                _series("fedcast_checkpoints_damaged_total", "0x10", service="aggregator", instance="agg2"),
            ],
            "alert_rule_test": [_fires("FedcastCheckpointDamaged", "2m", AGG)],
        },
        {  # a retry per completed round (agg); retries without any completed round (agg3)
            "interval": "1m",
            "input_series": [
                _series("fedcast_round_retries_total", "0+1x60", **AGG),
                _series("fedcast_rounds_completed_total", "0+1x60", **AGG),
                _series("fedcast_round_retries_total", "0x60", service="aggregator", instance="agg2"),
                _series("fedcast_rounds_completed_total", "0+1x60", service="aggregator", instance="agg2"),
                _series("fedcast_round_retries_total", "0+1x60", service="aggregator", instance="agg3"),
                _series("fedcast_rounds_completed_total", "0x60", service="aggregator", instance="agg3"),
            ],
            "alert_rule_test": [
                _fires("FedcastRoundRetriesHigh", "10m"),  # pending: for 15m
                _fires(
                    "FedcastRoundRetriesHigh",
                    "40m",
                    AGG,
                    {"service": "aggregator", "instance": "agg3"},
                ),
            ],
        },
    ]


def _without_annotations(tmp_path: Path) -> Path:
    """The rules minus annotations: promtool compares rendered annotations verbatim otherwise."""
    groups = compose_groups()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def test_promtool_unit_tests_fire_when_they_should(tmp_path: Path) -> None:
    promtool = _promtool()
    tests = tmp_path / "tests.yml"
    spec = {
        "rule_files": [str(_without_annotations(tmp_path))],
        "evaluation_interval": "1m",
        "tests": _scenarios(),
    }
    tests.write_text(yaml.safe_dump(spec))
    proc = _run(promtool, "test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """Guard the guard: expecting the stalled alert while clients are away must fail."""
    promtool = _promtool()
    scenario = _scenarios()[0]
    scenario["alert_rule_test"] = [_fires("FedcastFederationStalled", "190m", AGG)]
    tests = tmp_path / "tests.yml"
    spec = {
        "rule_files": [str(_without_annotations(tmp_path))],
        "evaluation_interval": "1m",
        "tests": [scenario],
    }
    tests.write_text(yaml.safe_dump(spec))
    assert _run(promtool, "test", "rules", str(tests)).returncode != 0
