"""Smoke test of ``fedcast bench fedmf`` at tiny sizes (insecure 512-bit groups; no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcast.bench.fedmf import (
    JSON_KEYS,
    PAPER_RATINGS,
    FedMFBenchConfig,
    fedmf_notes,
    load_workload,
    paper_rating_count,
    run_fedmf_bench,
)
from fedcast.cli import main


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_fedmf_bench(FedMFBenchConfig.small())


def test_rows_have_every_key_and_scheme(rows: list[dict]) -> None:
    assert [r["scheme"] for r in rows] == [
        "plaintext",
        "elgamal-512",
        "paillier-512-full",
        "paillier-512-part",
    ]
    for row in rows:
        assert set(JSON_KEYS) <= set(row)
        assert row["n_users"] == 20 and row["items"] == 5 and row["latent_dim"] == 4
        assert row["iteration_s"] == pytest.approx(row["user_s_max"] + row["server_s"])
        assert row["user_s_max"] >= row["user_s_mean"] > 0
        assert row["single_core_s"] >= row["iteration_s"] - 1e-12
        # the reference is the paper's 610-user, 40-item workload: no ratio for any other
        assert row["speedup_iteration"] is None and row["bytes_ratio"] is None
    json.dumps(rows)  # JSON-serializable as is


def test_elgamal_learning_matches_plaintext(rows: list[dict]) -> None:
    plain = next(r for r in rows if r["scheme"] == "plaintext")
    secure = next(r for r in rows if r["scheme"].startswith("elgamal"))
    assert secure["rmse"] == pytest.approx(plain["rmse"], rel=1e-4)
    assert secure["rmse"] != pytest.approx(secure["rmse_start"], rel=1e-6)  # it did learn something
    assert secure["max_abs_v_diff"] < 1e-4
    assert secure["clipped"] == 0 and secure["clip"] > 0
    assert not secure["extrapolated"] and secure["users_measured"] == 20


def test_elgamal_bytes_and_folding_are_v2(rows: list[dict]) -> None:
    secure = next(r for r in rows if r["scheme"].startswith("elgamal"))
    # 20 values fit one data segment of a 512-bit N. The Upload carries the key segment and that
    # segment (128 B each, mod N^2), A, B and the proof's commitment (64 B each, mod N), the proof's
    # response (65 B) and the first component's signature (64 B); the Response carries T, the equality
    # proof (2 x 64 B + 65 B) and the challenge digest (32 B); framing and message signatures come on top.
    assert secure["upload_bytes"] > 2 * 128 + 3 * 64 + 65 + 64 + (64 + 2 * 64 + 65 + 32)
    assert secure["fold_workers"] >= 0 and secure["serial_fold_s"] > 0
    assert set(secure["server_breakdown_s"]) >= {"fold_uploads", "challenge", "decrypt"}


def test_paillier_costs_and_bytes(rows: list[dict]) -> None:
    full = next(r for r in rows if r["scheme"] == "paillier-512-full")
    part = next(r for r in rows if r["scheme"] == "paillier-512-part")
    assert full["values_per_user"] == 5 * 4
    assert full["upload_bytes"] == 20 * 128  # one 1024-bit ciphertext (n^2) per value
    assert part["values_per_user"] < full["values_per_user"]
    assert not full["extrapolated"] and full["users_measured"] == 20  # all fit the budget


def test_paillier_extrapolates_past_the_budget() -> None:
    config = FedMFBenchConfig(
        **{**FedMFBenchConfig.small().__dict__, "paillier_budget_s": 0.0, "paillier_texts": ("full",)}
    )
    rows = run_fedmf_bench(config)
    row = next(r for r in rows if r["scheme"] == "paillier-512-full")
    assert row["extrapolated"] and row["users_measured"] == 1
    assert any("EXTRAPOLATED from 1 whole user" in line for line in fedmf_notes(config, rows))


def test_synthetic_workload_matches_table_1_counts() -> None:
    assert paper_rating_count(40) == PAPER_RATINGS[40]
    assert paper_rating_count(160) == PAPER_RATINGS[160]
    data, description = load_workload(FedMFBenchConfig(n_users=610), 40)
    assert data.n_users == 610 and data.n_items == 40 and data.n_ratings == PAPER_RATINGS[40]
    assert "13.6 per user" in description


def test_movielens_keeps_the_top_items(tmp_path: Path) -> None:
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 5):
        for movie in (10, 20, 30):
            if movie != 30 or user == 1:
                lines.append(f"{user},{movie},{(user + movie) % 5 + 1},0")
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    data, _ = load_workload(FedMFBenchConfig(movielens=str(path)), 2)
    assert data.n_items == 2 and data.n_users == 4 and data.n_ratings == 8


def test_cli_writes_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fedmf.json"
    assert main(["bench", "fedmf", "--small", "--quiet", "--texts", "full", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "elgamal-512" in table and "extrapolated" in table
    rows = json.loads(out.read_text())
    assert {r["scheme"] for r in rows} == {"plaintext", "elgamal-512", "paillier-512-full"}
