"""docs/METRICS.md lists exactly the registered fedcast metrics, and they follow Prometheus conventions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import fedcast.shared.metrics
from fedcast.services.observability import initialize_series
from fedcast.shared import errors

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "METRICS.md"

# Base units (Prometheus naming: seconds and bytes, never ms or KiB) and the dimensionless ones.
TIME_OR_SIZE_UNITS = {"seconds": "_seconds", "bytes": "_bytes"}
FORBIDDEN_UNIT_SUFFIXES = ("_ms", "_milliseconds", "_minutes", "_hours", "_kb", "_kib", "_mb", "_mib")


@dataclass(frozen=True)
class Documented:
    name: str
    type: str
    unit: str
    labels: tuple[str, ...]
    meaning: str


def _documented() -> dict[str, Documented]:
    """The rows of the metrics table: | `name` | type | unit | `l1`, `l2` | set by | meaning |."""
    rows: dict[str, Documented] = {}
    section = DOC.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = re.match(r"^\|\s*`(fedcast_[a-z0-9_]+)`\s*\|(.*)\|\s*$", line)
        if match is None:
            continue
        cells = [c.strip() for c in match.group(2).split("|")]
        assert len(cells) == 5, f"metrics table row needs 6 cells: {line}"
        kind, unit, labels, _set_by, meaning = cells
        name = match.group(1)
        assert name not in rows, f"{name} documented twice"
        rows[name] = Documented(name, kind, unit, tuple(sorted(re.findall(r"`([a-z_]+)`", labels))), meaning)
    return rows


def _exposed_name(metric: MetricWrapperBase) -> str:
    """The name operators query: prometheus_client keeps a counter's ``_total`` out of ``_name``."""
    name: str = metric._name  # no public accessor; stable across prometheus_client releases
    return name + "_total" if metric._type == "counter" else name


def _defined() -> dict[str, MetricWrapperBase]:
    metrics = [getattr(fedcast.shared.metrics, n) for n in fedcast.shared.metrics.__all__]
    assert all(isinstance(m, MetricWrapperBase) for m in metrics)
    return {_exposed_name(m): m for m in metrics}


def test_the_table_documents_exactly_the_defined_metrics() -> None:
    documented, defined = _documented(), _defined()
    assert sorted(documented) == sorted(defined)
    for name, metric in defined.items():
        row = documented[name]
        assert row.type == metric._type, name
        assert row.labels == tuple(sorted(metric._labelnames)), name
        assert row.meaning, name


def test_every_registered_fedcast_collector_is_defined_in_shared_metrics() -> None:
    # A metric defined elsewhere (a service module) would dodge the table: the registry is the truth.
    registered: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("fedcast_"):
            name = family.name + "_total" if family.type == "counter" else family.name
            registered[name] = family.type
    defined = _defined()
    assert registered == {name: m._type for name, m in defined.items()}


@pytest.mark.parametrize("name", sorted(_documented()))
def test_names_follow_prometheus_conventions(name: str) -> None:
    row = _documented()[name]
    assert re.fullmatch(r"fedcast_[a-z][a-z0-9_]*[a-z0-9]", name)
    assert "__" not in name
    if row.type == "counter":
        assert name.endswith("_total"), "counters end in _total"
    else:
        assert not name.endswith("_total"), "only counters end in _total"
    assert row.type in {"counter", "gauge", "histogram"}
    stem = name.removesuffix("_total")
    if row.unit in TIME_OR_SIZE_UNITS:
        assert stem.endswith(TIME_OR_SIZE_UNITS[row.unit]), f"a metric in {row.unit} ends in _{row.unit}"
    else:
        assert not stem.endswith(("_seconds", "_bytes")), "unit column and name disagree"
    assert not stem.endswith(FORBIDDEN_UNIT_SUFFIXES), "use base units"
    if row.type == "histogram":
        assert row.unit == "seconds", "fedcast histograms time things: they are in seconds"


def test_labels_are_bounded_and_service_is_always_there() -> None:
    for name, metric in _defined().items():
        labels = set(metric._labelnames)
        assert "service" in labels, name
        # Never a per-client label on the exported series: the target's instance carries that.
        assert not labels & {"client", "client_id", "instance", "sender", "member"}, name


# -- reason codes and the protocol-version-2 wording -------------------------------------------------


def _documented_reasons() -> list[str]:
    """The first column of the Reason codes table: | `reason` | counted when |."""
    text = DOC.read_text()
    section = text.split("## Reason codes", 1)[1].split("\n## ", 1)[0]
    reasons = []
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([a-z_]+)`\s*\|(.*)\|\s*$", line)
        if match is not None:
            assert match.group(2).strip(), f"reason {match.group(1)} has no description"
            reasons.append(match.group(1))
    return reasons


def test_the_reason_table_lists_exactly_the_reason_codes() -> None:
    documented = _documented_reasons()
    assert len(documented) == len(set(documented)), "a reason documented twice"
    codes = {getattr(errors, name).reason for name in errors.__all__}
    assert set(documented) == codes
    for v2 in ("invalid_proof", "model_already_answered", "legacy_state"):
        assert v2 in documented


def test_the_doc_describes_protocol_version_2() -> None:
    text = DOC.read_text()
    for v1_only in ("Legendre", "subgroup", "p_bits", "P_BITS"):
        assert v1_only not in text, f"{v1_only} is protocol version 1's"
    rows = _documented()
    dropouts = rows["fedcast_dropouts_total"].meaning
    assert "invalid_proof" in dropouts and "fedcast_challenge_resends_total" in dropouts
    assert "evidence" in dropouts
    assert "challenge" in rows["fedcast_challenge_resends_total"].meaning
    assert "invalid_proof" in rows["fedcast_messages_rejected_total"].meaning


def test_the_documented_dropout_phases_are_the_ones_exported_from_start_up() -> None:
    match = re.search(r"dropouts only ((?:`[a-z]+`(?:, | and )?)+)\)", DOC.read_text())
    assert match is not None, "the phase label's dropout values are documented"
    documented = set(re.findall(r"`([a-z]+)`", match.group(1)))
    initialize_series("aggregator")
    exported = {
        sample.labels["phase"]
        for family in REGISTRY.collect()
        if family.name == "fedcast_dropouts"
        for sample in family.samples
        if sample.name == "fedcast_dropouts_total" and sample.labels["service"] == "aggregator"
    }
    assert documented == {"upload", "response", "decrypt"}
    assert documented <= exported
    resends = REGISTRY.get_sample_value("fedcast_challenge_resends_total", {"service": "aggregator"})
    assert resends is not None  # exported from start-up, as documented
