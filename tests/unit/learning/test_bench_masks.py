"""``fedcast bench masks``: strict JSON, a typed error instead of a NaN table; FedMMF divergence."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from fedcast.bench_cli import _json_safe
from fedcast.cli import main
from fedcast.shared.errors import TrainingDivergedError
from fedcast.shared.learning.data import SyntheticConfig, make_synthetic, partition_users
from fedcast.shared.learning.fedmf import FedMFRound
from fedcast.shared.learning.masks import (
    MaskConfig,
    compare_fedmf_fedmmf,
    fedmmf_mf_config,
    fit_masks,
    train_fedmmf,
)
from fedcast.shared.learning.mf import MFConfig
from fedcast.shared.secure_sum import ExactSum


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"bare {name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "masks", "--seeds", "0", "--rounds", "5", "--json"]) == 0
    result = _strict(capsys.readouterr().out)
    assert result["data"] == "synthetic" and result["seeds"] == [0]
    assert all(math.isfinite(result[k]["mean"]) for k in ("fedmf_rmse", "fedmmf_rmse", "local_rmse"))


def test_non_finite_values_become_null() -> None:
    payload = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "x", "e": 2}
    assert json.dumps(_json_safe(payload), allow_nan=False) == (
        '{"a": null, "b": [1.0, null, {"c": null}], "d": "x", "e": 2}'
    )


def test_divergence_exits_non_zero_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fedcast.shared.learning.masks as masks

    def diverge(**_: Any) -> Any:
        raise TrainingDivergedError("FedMF diverged in round 3: training MSE nan")

    monkeypatch.setattr(masks, "compare_fedmf_fedmmf", diverge)
    assert main(["bench", "masks", "--seeds", "0", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "training_diverged" in captured.err and "round 3" in captured.err


def test_compare_raises_instead_of_reporting_nan() -> None:
    syn = SyntheticConfig(n_users=12, n_items=15, ratings_per_user=8)
    too_fast = MFConfig(optimizer="gd", learning_rate=0.2, reg_user=0.5, reg_item=0.5, epochs=40)
    with pytest.raises(TrainingDivergedError):
        compare_fedmf_fedmmf(seeds=(0,), synthetic=syn, mf_config=too_fast)


def test_fedmmf_reports_rounds_and_starts_at_zero_mean() -> None:
    data = make_synthetic(SyntheticConfig(n_users=12, n_items=15, ratings_per_user=8))
    cfg = fedmmf_mf_config(MFConfig(epochs=7, reg_user=0.3))
    assert cfg.init_mean == 0.0 and cfg.reg_user == 0.3 and cfg.epochs == 7
    rounds: list[FedMFRound] = []
    train_fedmmf(data, partition_users(data), None, ExactSum(), on_round=rounds.append)
    assert len(rounds) == MFConfig().epochs and rounds[-1].train_rmse < rounds[0].train_rmse


def test_two_order_masks_raise_instead_of_returning_nan() -> None:
    data = make_synthetic(SyntheticConfig(n_users=12, n_items=15, ratings_per_user=8))
    with pytest.raises(TrainingDivergedError, match="fm_learning_rate"):
        fit_masks(data, MaskConfig(order=2, fm_learning_rate=50.0, fm_epochs=50))
