"""``fedcast bench modulus``: every run generates a real modulus of the asked size and is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcast.bench.modulus import ModulusBenchConfig, run_modulus_bench, summarize
from fedcast.cli import main


def test_rows_and_summary_are_one_per_run_and_per_size() -> None:
    rows = run_modulus_bench(ModulusBenchConfig(sizes=(2048,), runs=(2,)))
    assert [(r["modulus_bits"], r["run"]) for r in rows] == [(2048, 1), (2048, 2)]
    assert all(r["seconds"] > 0 for r in rows)
    (summary,) = summarize(rows)
    assert summary["runs"] == 2 and summary["min_s"] <= summary["median_s"] <= summary["max_s"]


def test_the_cli_prints_the_table_and_writes_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "modulus.json"
    assert main(["bench", "modulus", "--quick", "--runs", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["modulus_bits"] for r in rows] == [2048]
    assert "median s" in capsys.readouterr().out
