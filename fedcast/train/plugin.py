"""``fedcast train --task package.module:Name``: FedAvg of your own model (a ``NumPyClient``).

The module is imported as ``python -m`` would: the current directory comes first on the
import path (like ``uvicorn``'s default ``--app-dir .``), so ``examples.sklearn_defects:Client``
works from the repository root without setting PYTHONPATH. Every client gets its own train
and test samples in ``context.data`` (``x_train``, ``y_train``, ``x_test``, ``y_test``) and the
run's settings in ``context.options``; see docs/MODELS.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from fedcast.shared.learning.plugin import RoundRecord, load_client_factory, run_numpy_federation
from fedcast.shared.secure_sum import SecureSum
from fedcast.train.config import TrainConfig
from fedcast.train.datasets import FeatureSplit
from fedcast.train.results import DivergenceWatch, RoundCallback, RoundLog, TrainResult

__all__ = ["import_path_with_cwd", "train_plugin"]


def import_path_with_cwd() -> None:
    """Put the current directory first on ``sys.path`` (once), as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def train_plugin(
    config: TrainConfig,
    split: FeatureSplit,
    scheme_for: Callable[[int], SecureSum],
    record: RoundCallback,
) -> TrainResult:
    import_path_with_cwd()
    factory = load_client_factory(config.task)
    n = len(split.clients)
    per_round = min(config.clients_per_round or n, n)
    options = {
        "n_features": str(split.n_features),
        "n_classes": str(split.n_classes),
        "hidden": str(config.hidden),
    }
    for name in ("learning_rate", "local_epochs", "batch_size"):
        if getattr(config, name) is not None:
            options[name] = str(getattr(config, name))
    data = [
        {"x_train": c.x, "y_train": c.y, "x_test": t.x, "y_test": t.y}
        for c, t in zip(split.clients, split.tests, strict=True)
    ]
    watch = DivergenceWatch()

    def on_round(rec: RoundRecord) -> None:
        watch.check(rec.round, rec.loss, [])
        metrics = {"loss_test": rec.loss, **{f"{name}_test": value for name, value in rec.metrics.items()}}
        record(RoundLog(rec.round, rec.seconds, metrics, rec.clipped))

    result = run_numpy_federation(
        factory,
        n_clients=n,
        rounds=config.rounds,
        secure=scheme_for(per_round),
        seed=config.seed,
        weight_bound=max(c.n_samples for c in split.clients),
        value_bound=config.clip or 4.0,
        options=options,
        client_data=data,
        clients_per_round=per_round,
        on_round=on_round,
    )
    final = result.history[-1]
    metrics = {"loss_test": final.loss, **{f"{name}_test": value for name, value in final.metrics.items()}}
    arrays: dict[str, np.ndarray[Any, Any]] = {f"weight_{i}": w for i, w in enumerate(result.weights)}
    metadata = {
        "data": split.source,
        "n_features": split.n_features,
        "n_classes": split.n_classes,
        "n_clients": n,
        "clients_per_round": per_round,
        "n_test_samples": split.test.n_samples,
        "model": config.task,
        "weights": "weight_0, weight_1, ...: the NumPyClient's get_weights() order",
    }
    return TrainResult(
        config.task, config.scheme, config.rounds, metrics, 0.0, False, arrays=arrays, metadata=metadata
    )
