"""Smoke test of ``fedcast bench scale`` at tiny sizes (insecure group; no timed assertions)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fedcast.bench.scale import (
    _FEDERATION,
    JSON_KEYS,
    ScaleBenchConfig,
    _public_from_values,
    _public_values,
    run_scale_bench,
)
from fedcast.cli import main
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.crypto.modulus import insecure_test_group
from fedcast.shared.errors import ConfigurationError, InvalidKeyError


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_scale_bench(ScaleBenchConfig.small())


def test_rows_have_every_key(rows: list[dict]) -> None:
    for row in rows:
        assert list(row)[: len(JSON_KEYS)] == list(JSON_KEYS)
    kinds = [(r["kind"], r["n_clients"], r["n_params"]) for r in rows]
    assert kinds == [
        ("client", 1, 200),
        ("aggregator", 3, 200),
        ("aggregator", 5, 200),
        ("client", 1, 1000),
        ("aggregator", 3, 1000),
        ("aggregator", 5, 1000),
        ("pi", 1, 1000),
        ("pi", 1, 1000),
    ]
    json.dumps(rows)


def test_aggregator_cells_decrypt_the_exact_sum(rows: list[dict]) -> None:
    for row in rows:
        assert row["status"] == "ok", row
        assert row["proofs_s"] > 0  # proofs were batch-verified on both sides
        if row["kind"] == "aggregator":
            assert row["detail"] == "max |sum error| 0.00e+00"
            assert row["aggregate_s"] > 0  # the aggregator's lazy proof check is measured apart (proofs_s)
            assert row["decrypt_s"] > 0 and row["peak_rss_mb"] > 0
            assert row["members"] == row["n_clients"]
        else:
            assert row["round_s"] >= row["client_encrypt_s"] > 0
            assert row["round_s"] >= row["respond_s"] >= row["proofs_s"]
            assert row["members"] == 5  # check_challenge over every member of the challenge
            assert row["tables_s"] > 0


def test_pi_rows_carry_their_limits(rows: list[dict]) -> None:
    pi = [r for r in rows if r["kind"] == "pi"]
    assert [r["table_budget_mb"] for r in pi] == [1, 4]
    assert all(r["limits"] == "1 core, AS 4096 MB" for r in pi)


def test_the_client_subprocess_gets_verified_public_values() -> None:
    """The aggregator key crosses to the client subprocess as plain hex, re-verified there."""
    group = insecure_test_group(512, seed=1)
    public = AggregatorSecretKey.generate(group).public(federation=_FEDERATION, verify_key=bytes(32))
    values = json.loads(json.dumps(_public_values(public)))
    assert set(values) == {"beta", "delivery", "beta_proof", "delivery_proof"}
    assert _public_from_values(group, values) == public
    other = AggregatorSecretKey.generate(group).public(federation=_FEDERATION, verify_key=bytes(32))
    with pytest.raises(InvalidKeyError):  # another key's beta under this key's proof
        _public_from_values(group, {**values, "beta": format(other.beta, "x")})
    with pytest.raises(InvalidKeyError):  # proofs bound to another federation
        wrong = AggregatorSecretKey.generate(group).public(federation="elsewhere", verify_key=bytes(32))
        _public_from_values(group, _public_values(wrong))


def test_cells_below_the_clients_minimum_online_set_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 3 clients"):
        replace(ScaleBenchConfig.small(), n_clients=(2, 5))
    with pytest.raises(ConfigurationError, match="at least 3 members"):
        replace(ScaleBenchConfig.small(), challenge_members=2)


def test_cells_over_budget_are_skipped_and_say_why() -> None:
    config = replace(ScaleBenchConfig.small(), n_params=(200,), cell_budget_s=0.0, pi=False)
    rows = run_scale_bench(config)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 2
    assert all("budget" in r["detail"] and r["projected_s"] > 0 for r in skipped)


def test_an_impossible_address_space_limit_is_reported_as_failed() -> None:
    config = replace(
        ScaleBenchConfig.small(), n_clients=(), n_params=(), pi_address_space_mb=16, pi_table_budgets_mb=(1,)
    )
    (row,) = run_scale_bench(config)
    assert row["status"] == "failed" and row["detail"]


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    args = ["bench", "scale", "--small", "--quiet", "--params", "200", "--clients", "3", "--no-pi"]
    assert main([*args, "--json", str(out)]) == 0
    assert "aggregator" in capsys.readouterr().out
    assert [r["kind"] for r in json.loads(out.read_text())] == ["client", "aggregator"]
