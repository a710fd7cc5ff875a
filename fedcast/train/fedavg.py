"""``fedcast train --task fedavg-logreg|fedavg-mlp``: FedAvg of the built-in numpy classifiers.

Each round samples ``--clients-per-round`` clients (default: all), each trains
``--local-epochs`` of mini-batch SGD from the global parameters, and uploads its weighted
update with the weight inside the encrypted sum (see :mod:`fedcast.shared.learning.fedavg`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from fedcast.shared.learning.fedavg import FedAvgConfig, RoundRecord, run_fedavg
from fedcast.shared.learning.models import MLP, LogisticRegression, Model
from fedcast.shared.secure_sum import SecureSum
from fedcast.train.config import TrainConfig
from fedcast.train.datasets import FeatureSplit
from fedcast.train.results import DivergenceWatch, RoundCallback, RoundLog, TrainResult

__all__ = ["fedavg_config", "new_model", "train_fedavg"]


def fedavg_config(config: TrainConfig, split: FeatureSplit) -> FedAvgConfig:
    """FedAvgConfig from the run's settings: what the user set, the library default otherwise."""
    values: dict[str, Any] = {
        name: getattr(config, name)
        for name in ("local_epochs", "batch_size", "learning_rate")
        if getattr(config, name) is not None
    }
    n_clients = len(split.clients)
    return FedAvgConfig(
        rounds=config.rounds,
        clients_per_round=min(config.clients_per_round or n_clients, n_clients),
        seed=config.seed,
        # The public bound N_max: here every client's size is known to the simulation.
        weight_bound=max(c.n_samples for c in split.clients),
        **values,
    )


def new_model(config: TrainConfig, split: FeatureSplit) -> Model:
    if config.task == "fedavg-logreg":
        return LogisticRegression(split.n_features, split.n_classes, seed=config.seed)
    return MLP(split.n_features, config.hidden, split.n_classes, seed=config.seed)


def train_fedavg(
    config: TrainConfig,
    split: FeatureSplit,
    scheme_for: Callable[[int], SecureSum],
    record: RoundCallback,
) -> TrainResult:
    cfg = fedavg_config(config, split)
    model = new_model(config, split)
    secure = scheme_for(cfg.clients_per_round)
    watch = DivergenceWatch()
    last = time.perf_counter()

    def on_round(rec: RoundRecord) -> None:
        nonlocal last
        watch.check(rec.round, rec.test_loss, [model.get_params()])
        metrics = {"loss_test": rec.test_loss, "accuracy_test": rec.test_accuracy, "f1_test": rec.test_f1}
        now = time.perf_counter()
        record(RoundLog(rec.round, now - last, metrics, rec.clipped_values))
        last = now

    result = run_fedavg(model, split.clients, split.test, secure, cfg, on_round=on_round)
    final = result.history[-1]
    metrics = {"loss_test": final.test_loss, "accuracy_test": final.test_accuracy, "f1_test": final.test_f1}
    metadata = {
        "data": split.source,
        "n_features": split.n_features,
        "n_classes": split.n_classes,
        "n_clients": len(split.clients),
        "n_test_samples": split.test.n_samples,
        "fedavg_config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "model": type(model).__name__,
    }
    return TrainResult(
        config.task,
        config.scheme,
        config.rounds,
        metrics,
        0.0,
        False,
        arrays={"params": result.params},
        metadata=metadata,
    )
