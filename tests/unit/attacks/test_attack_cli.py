"""``fedcast attack``: the JSON shape of ``--scenario all`` and the text output (512-bit, fast)."""

from __future__ import annotations

import json

import pytest

from fedcast.attacks import SCENARIO_NAMES
from fedcast.cli import main


def test_json_of_all_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--scenario", "all", "--json", "--bits", "512"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == {"scenario", "construction", "recovered", "detail"}
        assert isinstance(row["recovered"], bool) and isinstance(row["detail"], str) and row["detail"]
    assert list(dict.fromkeys(r["scenario"] for r in rows)) == list(SCENARIO_NAMES)
    for name in SCENARIO_NAMES:
        mine = [r for r in rows if r["scenario"] == name]
        assert len(mine) >= 2 and mine[-1]["construction"] == "v2" and not mine[-1]["recovered"]
        assert all(r["recovered"] and r["construction"] != "v2" for r in mine[:-1])


def test_text_output_of_one_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--scenario", "prime-modulus", "--bits", "512"]) == 0
    out = capsys.readouterr().out
    assert "INSECURE" in out and "RECOVERED" in out and "not recovered" in out
    assert "opened 4 of 4" in out and "opened 0 of 4" in out


def test_demo_and_scenario_are_exclusive() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["attack", "--demo", "--scenario", "copy"])
    assert excinfo.value.code == 2
