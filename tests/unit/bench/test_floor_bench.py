"""``fedcast bench simulate --floor``: the per-client crypto of a round, step by step, and its floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcast.bench.floor import FloorConfig, run_floor
from fedcast.cli import main
from fedcast.shared.crypto.elgamal import proof_sample_size


def test_every_required_step_is_timed_and_the_floor_follows_from_them() -> None:
    config = FloorConfig(members=120, params=300, insecure_test_group=True, repeats=2, cores=2)
    rows = run_floor(config)
    steps, total = rows[:-1], rows[-1]
    k = proof_sample_size(120, config.min_online)
    assert k < 119  # the sample is a sample at this size
    assert [r["count"] for r in steps] == [total["n_segments"] + 1, 120, k, 120, k + 1, 119, 1]
    assert all(r["ms"] > 0 and 0 < r["ms_min"] <= r["ms"] for r in steps)
    assert total["ms"] == pytest.approx(sum(r["ms"] for r in steps))
    assert total["floor_round_s"] == pytest.approx(120 * total["ms"] / 1e3 / 2)
    assert total["sample"] == k and total["modulus_bits"] == 512 and total["cores"] == 2


def test_the_cli_prints_the_table_and_writes_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "floor.json"
    argv = ["bench", "simulate", "--floor", "--insecure-test-group", "--clients", "8", "--params", "50"]
    assert main([*argv, "--workers", "1", "--quiet", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[-1]["clients"] == 8 and rows[-1]["cores"] == 1
    text = capsys.readouterr().out
    assert "element rule (Jacobi) on every first component" in text and "floor of a round of 8" in text


def test_a_federation_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 members"):
        run_floor(FloorConfig(members=1, insecure_test_group=True))
