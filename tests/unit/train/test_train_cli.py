"""``fedcast train`` end to end in this process: files, summaries, JSON lines, divergence, settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcast.cli import main
from fedcast.train.cli import EXIT_DIVERGED

SUMMARY_KEYS_MF = {"task", "scheme", "rounds", "rmse_test", "mae_test", "seconds", "diverged", "files"}


def _strict(text: str) -> dict:  # type: ignore[type-arg]
    def refuse(name: str) -> float:
        raise AssertionError(f"non-JSON constant {name} in output")

    parsed = json.loads(text, parse_constant=refuse)
    assert isinstance(parsed, dict)
    return parsed


def _summary(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return _strict(lines[-1])


def test_fedmf_plaintext_writes_a_model_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = main(["train", "--task", "fedmf", "--rounds", "40", "--out", str(out), "--json"])
    assert code == 0
    summary = _summary(capsys)
    assert set(summary) == SUMMARY_KEYS_MF
    assert summary["diverged"] is False and summary["rounds"] == 40 and summary["scheme"] == "plaintext"
    meta = _strict((out / "model.json").read_text())
    # Better than predicting every test rating with the training mean.
    assert summary["rmse_test"] < meta["global_mean_rmse_test"]
    with np.load(out / "model.npz", allow_pickle=False) as model:
        assert model["item_factors"].shape == (meta["n_items"], meta["mf_config"]["latent_dim"])
        assert model["user_factors"].shape[0] == meta["n_users"]
    assert len(meta["history"]) == 40 and meta["history"][-1]["rmse_test"] == pytest.approx(
        summary["rmse_test"]
    )
    assert meta["settings"]["task"] == "fedmf"


def test_fedavg_logreg_learns_the_defects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--task", "fedavg-logreg", "--rounds", "15", "--out", str(tmp_path), "--json"])
    assert code == 0
    summary = _summary(capsys)
    assert {"accuracy_test", "loss_test"} <= set(summary)
    assert summary["accuracy_test"] > 0.85
    with np.load(tmp_path / "model.npz", allow_pickle=False) as model:
        assert model["params"].ndim == 1


def test_a_generic_csv_with_string_ids_is_remapped_and_the_mapping_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    lines = ["user,item,rating"]
    users = [f"line-{k}" for k in range(30)]
    items = [f"part/{k:03d}" for k in range(20)]
    for u in users:
        for i in rng.choice(len(items), 12, replace=False):
            lines.append(f"{u},{items[i]},{rng.integers(1, 6)}")
    data = tmp_path / "ratings.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["train", "--data", str(data), "--rounds", "5", "--out", str(out), "--json"]) == 0
    assert _summary(capsys)["diverged"] is False
    assert sorted((out / "users.txt").read_text().split()) == sorted(users)
    assert sorted((out / "items.txt").read_text().split()) == sorted(items)


def test_divergence_exits_non_zero_and_never_prints_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--optimizer",
            "gd",
            "--learning-rate",
            "0.2",
            "--rounds",
            "30",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert code == EXIT_DIVERGED
    captured = capsys.readouterr()
    summary = _strict(captured.out.strip().splitlines()[-1])
    assert summary["diverged"] is True and summary["rmse_test"] is None and summary["mae_test"] is None
    assert "diverged" in captured.err
    assert not (tmp_path / "model.npz").exists()


def test_one_json_line_per_round_and_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "curve.png"
    code = main(
        [
            "train",
            "--rounds",
            "6",
            "--out",
            str(tmp_path / "m"),
            "--log-json",
            "-",
            "--plot",
            str(plot),
            "--json",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rounds = [_strict(line) for line in lines[:-1]]
    assert [r["round"] for r in rounds] == list(range(1, 7))
    assert all({"seconds", "clipped", "rmse_test", "rmse_train", "mae_test"} <= set(r) for r in rounds)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_toml_file_sets_everything_and_flags_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text('[train]\ntask = "fedavg-logreg"\nrounds = 3\nlearning-rate = 0.05\nclients = 4\n')
    assert (
        main(["train", "--config", str(config), "--rounds", "2", "--out", str(tmp_path / "m"), "--json"]) == 0
    )
    assert _summary(capsys)["rounds"] == 2
    meta = _strict((tmp_path / "m" / "model.json").read_text())
    assert meta["settings"]["learning_rate"] == 0.05 and meta["settings"]["clients"] == 4
    assert meta["n_clients"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nonsense"], "task must be one of"),
        (["--rounds", "0"], "rounds must be a whole number >= 1"),
        (["--learning-rate", "-1"], "learning_rate must be a finite number > 0"),
        (["--data", "/nonexistent/ratings.csv"], "/nonexistent/ratings.csv"),
    ],
)
def test_bad_settings_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["train", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedcast: error:") and message in err


def test_an_unknown_toml_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.toml"
    config.write_text("learning_rat = 0.1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown setting(s) learning_rat" in capsys.readouterr().err


def test_your_own_model_trains_through_the_same_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the repository root, as docs/MODELS.md says: the current directory is on the import path.
    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    out = tmp_path / "m"
    argv = [
        "train",
        "--task",
        "examples.sklearn_defects:Client",
        "--rounds",
        "4",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    summary = _summary(capsys)
    assert summary["task"] == "examples.sklearn_defects:Client" and summary["accuracy_test"] > 0.8
    with np.load(out / "model.npz", allow_pickle=False) as model:
        assert "weight_0" in model.files


def test_a_toml_value_of_the_wrong_type_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text("task = 5\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "task must be a string" in capsys.readouterr().err


@pytest.mark.slow
def test_the_secure_scheme_runs_the_protocol_and_learns_what_plaintext_learns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real 2048-bit modulus, every client a protocol client in worker processes."""
    plain_log, secure_log = tmp_path / "plain.jsonl", tmp_path / "secure.jsonl"
    common = ["train", "--rounds", "3", "--json"]
    assert main([*common, "--out", str(tmp_path / "p"), "--log-json", str(plain_log)]) == 0
    capsys.readouterr()
    argv = [*common, "--scheme", "secure", "--workers", "2", "--out", str(tmp_path / "s")]
    assert main([*argv, "--log-json", str(secure_log)]) == 0
    summary = _summary(capsys)
    assert summary["scheme"] == "secure" and summary["diverged"] is False
    plain = [_strict(line) for line in plain_log.read_text().splitlines()]
    secure = [_strict(line) for line in secure_log.read_text().splitlines()]
    # The decrypted sums equal the plaintext sums up to the fixed-point quantum: same curve.
    for p, s in zip(plain, secure, strict=True):
        assert s["rmse_test"] == pytest.approx(p["rmse_test"], abs=1e-4)
        assert s["clipped"] == 0
    meta = _strict((tmp_path / "s" / "model.json").read_text())
    assert meta["secure_clip"] >= 1.0
