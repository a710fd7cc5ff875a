"""The fedcast command line: smoke runs with tiny sizes (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcast.bench.crypto import JSON_KEYS
from fedcast.cli import build_parser, main
from fedcast.shared.errors import ConfigurationError


def test_bench_crypto_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "crypto", "--json", "--params", "300", "--clients", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["scheme"] for r in rows] == ["elgamal", "paillier", "plaintext"]
    for row in rows:
        assert tuple(row) == JSON_KEYS
        assert row["n_params"] == 300 and row["n_clients"] == 2
    elgamal, paillier, plaintext = rows
    assert not elgamal["extrapolated"] and paillier["extrapolated"] and not plaintext["extrapolated"]
    assert plaintext["bytes_per_param"] == 4.0 and paillier["bytes_per_param"] == 512.0
    # 300 params = 5 data segments of 70 slots + the key segment: 6 x 512 B (mod N^2), A, B and the
    # proof's commitment 3 x 256 B (mod N), the proof's response 65 B (513 bits)
    assert elgamal["bytes_per_param"] == pytest.approx((6 * 512 + 3 * 256 + 65) / 300)


def test_bench_crypto_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "crypto", "--params", "100", "--clients", "2"]) == 0
    out = capsys.readouterr().out
    assert "elgamal" in out and "paillier" in out and "extrapolated" in out


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["bench", "crypto", "--modulus-bits", "1024"])
    assert excinfo.value.code == 2


@pytest.mark.parametrize("command", [["demo"], ["attack", "--demo"], ["bench", "crypto"]])
def test_group_size_flag_is_modulus_bits(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Protocol version 2 sizes an RSA modulus N: --p-bits (a prime p) is gone."""
    parser = build_parser()
    assert parser.parse_args([*command, "--modulus-bits", "3072"]).modulus_bits == 3072
    assert parser.parse_args(command).modulus_bits in (None, 2048)
    with pytest.raises(SystemExit) as excinfo:
        parser.parse_args([*command, "--p-bits", "2048"])
    assert excinfo.value.code == 2
    assert "--p-bits" in capsys.readouterr().err


@pytest.mark.parametrize("clients", ["1", "2"])
def test_demo_with_too_few_clients_fails_fast_with_a_clear_error(
    clients: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fedcast.demo
    from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE

    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("the demo must be refused before it starts (it would wait for a third client)")

    monkeypatch.setattr(fedcast.demo, "run_demo", never)
    monkeypatch.setattr(fedcast.demo, "run_demo_observed", never)
    with pytest.raises(SystemExit) as excinfo:  # argparse: usage error, exit status 2
        main(["demo", "--clients", clients, "--rounds", "1"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --clients: must be at least {DEFAULT_MIN_ONLINE}" in err and "online set" in err
    with pytest.raises(ConfigurationError, match=f"at least {DEFAULT_MIN_ONLINE} clients"):
        fedcast.demo.DemoConfig(n_clients=int(clients))  # the programmatic entry point refuses too


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["demo", "--rounds", "-5"], "--rounds"),  # ran one round
        (["demo", "--rounds", "0"], "--rounds"),
        (["demo", "--clients", "three"], "--clients"),
        (["demo", "--metrics-port", "65536"], "--metrics-port"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--frac-bits", "33"], "--frac-bits"),
        (["attack", "--demo", "--seed", "-3"], "--seed"),
        (["aggregator", "--rounds", "-5"], "--rounds"),
        (["aggregator", "--rounds", "0"], "--rounds"),  # was taken as "no limit": ran for ever
        (["edge", "--metrics-port", "-1"], "--metrics-port"),
        (["keyserver", "serve", "--metrics-port", "99999"], "--metrics-port"),
    ],
)
def test_out_of_range_integers_are_refused_before_anything_runs(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err
    assert "must be " in err or "expected a whole number" in err


def test_in_range_integers_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["demo", "--clients", "3", "--rounds", "1", "--metrics-port", "0", "--seed", "0"]
    )
    assert (args.clients, args.rounds, args.metrics_port, args.seed) == (3, 1, 0, 0)
    assert parser.parse_args(["demo", "--frac-bits", "0"]).frac_bits == 0
    assert parser.parse_args(["aggregator", "--rounds", "1", "--metrics-port", "65535"]).rounds == 1
    assert parser.parse_args(["aggregator"]).rounds is None


def test_bench_learning_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "learning", "--json", "--rounds", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {
        "rmse_centralized",
        "rmse_plaintext",
        "rmse_secure",
        "rmse_fedmmf",
        "mae_plaintext",
        "mae_secure",
        "mae_fedmmf",
        "rounds",
        "seed",
    }
    assert result["rounds"] == 2 and result["seed"] == 0
    assert abs(result["rmse_secure"] - result["rmse_plaintext"]) / result["rmse_plaintext"] < 0.005


def test_attack_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recovery_rmse"] < 1e-5 and result["secure_aggregate_recovery_rmse"] > 0.3
    assert main(["attack", "--demo"]) == 0
    assert "recovered" in capsys.readouterr().out


def _write_ml100k(directory: Path, n_users: int = 20, n_items: int = 15) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), size=8, replace=False):
            lines.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t88125{u:04d}")
    (directory / "u.data").write_text("\n".join(lines) + "\n")
    occupations = ["engineer", "technician", "other"]
    (directory / "u.user").write_text(
        "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|{occupations[u % 3]}|1000{u}\n" for u in range(1, n_users + 1))
    )
    genres = lambda i: "|".join("1" if g == i % 19 else "0" for g in range(19))  # noqa: E731
    (directory / "u.item").write_bytes(
        "".join(
            f"{i}|Part {i} (1995)|01-Jan-1995||http://x|{genres(i)}\n" for i in range(1, n_items + 1)
        ).encode("latin-1")
    )


def test_bench_masks_on_a_movielens_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_ml100k(tmp_path)
    assert main(["bench", "masks", "--ml100k", str(tmp_path), "--seeds", "0", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == "ml-100k" and result["seeds"] == [0, 1]
    assert result["fedmf_rmse"]["mean"] > 0 and result["fedmmf_rmse"]["std"] >= 0


def test_bench_masks_reports_bad_data_as_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "u.data").write_text("1\tnot-a-number\t3\t0\n")
    assert main(["bench", "masks", "--ml100k", str(tmp_path), "--seeds", "0"]) == 2
    assert "data_error" in capsys.readouterr().err


def test_bench_options_become_config_fields() -> None:
    """The shared override builder: given options only, lists as tuples, an empty list kept."""
    import argparse

    from fedcast.bench_cli import _overrides

    args = argparse.Namespace(
        seed=3,
        n_users=None,
        modulus_bits=3072,
        items=[40, 80],
        paillier_bits=[],
        texts=None,
        table_memory_mb=64,
        insecure_test_group=True,
    )
    changes = _overrides(
        args,
        ("n_users", "modulus_bits"),
        table_bytes=True,
        items="item_counts",
        paillier_bits="paillier_bits",
        texts="paillier_texts",
    )
    assert changes == {
        "seed": 3,
        "modulus_bits": 3072,
        "item_counts": (40, 80),
        "paillier_bits": (),  # `--paillier-bits` alone: no Paillier run, not the default
        "table_memory_bytes": 64 * 1024 * 1024,
        "insecure_group": True,
    }
    args.table_memory_mb, args.insecure_test_group = None, False
    assert "table_memory_bytes" not in _overrides(args, (), table_bytes=True)
    assert "insecure_group" not in _overrides(args, ())
