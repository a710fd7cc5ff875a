"""``fedcast aggregator export``: the newest good checkpoint as npz (arrays only) + JSON sidecar, 0600."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fedcast.cli import build_parser, main
from fedcast.demo import DemoConfig, run_demo
from fedcast.services.aggregator.checkpoint import CheckpointStore
from fedcast.services.aggregator.export import export_model, sidecar_path
from fedcast.shared import __version__
from fedcast.shared.errors import ExportError
from fedcast.shared.learning.tasks import TaskSpec

MF = TaskSpec(n_items=7, latent_dim=3)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FEDCAST_* setting of the developer's shell leaks into the CLI tests."""
    for name in [n for n in os.environ if n.startswith("FEDCAST_")]:
        monkeypatch.delenv(name)


def store(state_dir: Path) -> CheckpointStore:
    return CheckpointStore(state_dir / "checkpoint")


def mf_model(offset: float = 0.0) -> np.ndarray:
    return np.arange(MF.model_size, dtype=np.float64) / 10 + offset


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:  # arrays only: no pickle needed, none allowed
        return {name: npz[name] for name in npz.files}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_fedmf_export_round_trips_with_its_metadata(tmp_path: Path) -> None:
    ckpt = store(tmp_path).save(
        4, "fedmf", mf_model(), attempt=1, members=("member-1", "member-2", "member-3")
    )
    out = tmp_path / "out" / "model.npz"

    info = export_model(tmp_path, out, MF, federation="plant-7", now=1_700_000_000.0)

    arrays = load(out)
    assert set(arrays) == {"item_factors", "metadata"}
    assert arrays["item_factors"].shape == (7, 3) and arrays["item_factors"].dtype == np.float64
    np.testing.assert_array_equal(arrays["item_factors"], mf_model().reshape(7, 3))
    embedded = json.loads(str(arrays["metadata"]))
    sidecar = json.loads(sidecar_path(out).read_text())
    assert info.metadata_path == tmp_path / "out" / "model.json" == sidecar_path(out)
    assert {k: v for k, v in sidecar.items() if k != "npz"} == embedded == info.metadata
    assert sidecar["npz"] == {"file": "model.npz", "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    assert embedded["task"] == "fedmf" and embedded["round"] == 4 and embedded["attempt"] == 1
    assert embedded["task_spec"]["n_items"] == 7 and embedded["task_spec"]["latent_dim"] == 3
    assert embedded["task_spec"]["learning_rate"] == MF.learning_rate
    assert embedded["arrays"] == {"item_factors": {"shape": [7, 3], "dtype": "float64"}}
    assert embedded["federation"] == "plant-7" and embedded["fedcast_version"] == __version__
    assert embedded["created"] == "2023-11-14T22:13:20Z" and embedded["n_members"] == 3
    assert embedded["checkpoint"] == {
        "file": ckpt.name,
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
    }
    assert "member-" not in sidecar_path(out).read_text()  # member ids are not exported, only their number
    assert (info.round, info.array, info.shape, info.skipped) == (4, "item_factors", (7, 3), ())
    assert mode(out) == mode(sidecar_path(out)) == 0o600  # the model is the aggregator's alone


def test_fedavg_exports_the_flat_params(tmp_path: Path) -> None:
    spec = TaskSpec(name="fedavg-logreg", n_features=4, n_classes=3)
    model = np.linspace(-1, 1, spec.model_size)
    store(tmp_path).save(2, spec.name, model, attempt=0, members=("a", "b"))

    info = export_model(tmp_path, tmp_path / "clf.npz", spec)

    arrays = load(tmp_path / "clf.npz")
    np.testing.assert_array_equal(arrays["params"], model)
    assert info.array == "params" and info.shape == (spec.model_size,)
    assert json.loads(str(arrays["metadata"]))["task"] == "fedavg-logreg"


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    checkpoints.save(5, "fedmf", mf_model(), attempt=0)
    newest = checkpoints.save(6, "fedmf", mf_model(1.0), attempt=0)
    raw = bytearray(newest.read_bytes())
    raw[-40] ^= 1
    newest.write_bytes(bytes(raw))

    info = export_model(tmp_path, tmp_path / "model.npz", MF)

    assert info.round == 5 and info.skipped == (newest.name,)
    assert info.metadata["skipped_damaged_checkpoints"] == [newest.name]
    np.testing.assert_array_equal(load(tmp_path / "model.npz")["item_factors"], mf_model().reshape(7, 3))


def test_missing_damaged_or_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "model.npz"
    with pytest.raises(ExportError, match="no checkpoint"):
        export_model(tmp_path, out, MF)
    only = store(tmp_path).save(3, "fedmf", mf_model(), attempt=0)
    with pytest.raises(ExportError, match="for task 'fedmf', configured 'fedavg-mlp'"):
        export_model(tmp_path, out, TaskSpec(name="fedavg-mlp"))
    with pytest.raises(ExportError, match="has 21 parameters"):
        export_model(tmp_path, out, TaskSpec(n_items=8, latent_dim=3))
    with pytest.raises(ExportError, match=r"\.json"):
        export_model(tmp_path, tmp_path / "model.json", MF)
    only.write_bytes(only.read_bytes()[:-1])  # truncated: the digest no longer matches
    with pytest.raises(ExportError, match="damaged"):
        export_model(tmp_path, out, MF)
    assert not out.exists() and not sidecar_path(out).exists()


def test_cli_export_and_its_refusals(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "aggregator"
    monkeypatch.setenv("FEDCAST_TASK_N_ITEMS", "7")
    monkeypatch.setenv("FEDCAST_TASK_LATENT_DIM", "3")
    monkeypatch.setenv("FEDCAST_FEDERATION", "plant-7")
    out = tmp_path / "model.npz"

    assert main(["aggregator", "export", "--state-dir", str(state), "--out", str(out)]) == 2
    _, err = capsys.readouterr()
    assert "no checkpoint" in err and "[export_refused]" in err and "Traceback" not in err

    store(state).save(9, "fedmf", mf_model(), attempt=2)
    monkeypatch.setenv("FEDCAST_STATE_DIR", str(state))  # as the aggregator reads it
    assert main(["aggregator", "export", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["round"] == 9 and printed["federation"] == "plant-7" and printed["out"] == str(out)
    assert load(out)["item_factors"].shape == (7, 3) and mode(out) == 0o600

    monkeypatch.setenv("FEDCAST_TASK_N_ITEMS", "8")
    assert main(["aggregator", "export", "--out", str(out)]) == 2
    assert "[export_refused]" in capsys.readouterr().err
    monkeypatch.setenv("FEDCAST_TASK_N_ITEMS", "7")
    for argv in (["--task", "fedavg-mlp", "export"], ["export", "--task", "fedavg-mlp"]):
        assert main(["aggregator", *argv, "--out", str(out)]) == 2  # --task before or after the action
        assert "configured 'fedavg-mlp'" in capsys.readouterr().err


def test_aggregator_without_an_action_still_runs_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    run = parser.parse_args(["aggregator", "--rounds", "3", "--state-dir", "/s"])
    export = parser.parse_args(["aggregator", "export", "--out", "m.npz"])
    assert run.action is None and run.handler.__name__ == "_cmd_aggregator" and run.rounds == 3
    assert run.state_dir == "/s"
    assert export.action == "export" and export.handler.__name__ == "_cmd_aggregator_export"
    given_before = parser.parse_args(["aggregator", "--state-dir", "/s", "export", "--out", "m.npz"])
    assert given_before.state_dir == "/s"  # not reset by the action's own --state-dir
    with pytest.raises(SystemExit):
        parser.parse_args(["aggregator", "export"])  # --out is required
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["aggregator", "export", "--help"])
    assert "0600" in " ".join(capsys.readouterr().out.split())


async def test_export_after_a_real_run(tmp_path: Path) -> None:
    config = DemoConfig(n_clients=3, rounds=2, users_per_client=2, n_items=20, insecure_small_group=True)
    result = await run_demo(DemoConfig(**{**config.__dict__, "state_dir": tmp_path}))
    assert result.rounds_completed == 2

    spec = TaskSpec(n_items=20, latent_dim=config.latent_dim, learning_rate=config.learning_rate)
    info = export_model(tmp_path / "aggregator", tmp_path / "model.npz", spec, federation="demo")

    assert info.round == 2 and info.shape == (20, config.latent_dim)
    factors = load(tmp_path / "model.npz")["item_factors"]
    assert factors.shape == (20, config.latent_dim) and np.all(np.isfinite(factors))
