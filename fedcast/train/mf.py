"""``fedcast train --task fedmf|fedmmf``: federated matrix factorization, round by round.

FedMMF (personalized masks) fits each user's private mask model on that user's own
training ratings, then runs FedMF on the masked ratings; its prediction adds the mask back.
The masks never leave a client: only FedMF's item gradients go through the scheme.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE
from fedcast.shared.learning.data import IntArray, RatingData
from fedcast.shared.learning.fedmf import FedMFRound, train_federated
from fedcast.shared.learning.masks import (
    MaskConfig,
    PersonalizedMasks,
    fedmmf_mf_config,
    fit_masks,
    mask_ratings,
)
from fedcast.shared.learning.mf import MFConfig, evaluate
from fedcast.shared.secure_sum import SecureSum
from fedcast.train.config import TrainConfig
from fedcast.train.datasets import RatingSplit
from fedcast.train.results import RoundCallback, RoundLog, TrainResult

__all__ = ["mf_config", "train_mf"]

# TrainConfig fields passed to MFConfig when set (the rest keep MFConfig's defaults).
_MF_FIELDS = (
    "latent_dim",
    "optimizer",
    "step_size",
    "learning_rate",
    "reg_user",
    "reg_item",
    "local_steps",
    "init_mean",
    "init_scale",
)


def mf_config(config: TrainConfig) -> MFConfig:
    """MFConfig from the run's settings: what the user set, the library default otherwise."""
    values: dict[str, Any] = {
        name: getattr(config, name) for name in _MF_FIELDS if getattr(config, name) is not None
    }
    return MFConfig(**values, epochs=config.rounds, seed=config.seed)


def _partition(train: RatingData, config: TrainConfig) -> list[IntArray]:
    """One user per client by default (the FedMF setting); ``--clients K`` groups users into K."""
    users = np.arange(train.n_users, dtype=np.int64)
    if config.clients is None or config.clients >= train.n_users:
        return [users[i : i + 1] for i in range(train.n_users)]
    order = np.random.default_rng([config.seed, 2]).permutation(train.n_users)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, config.clients)]


def train_mf(
    config: TrainConfig,
    split: RatingSplit,
    scheme_for: Callable[[int], SecureSum],
    record: RoundCallback,
) -> TrainResult:
    cfg = mf_config(config)
    train, test = split.train, split.test
    masks: PersonalizedMasks | None = None
    if config.task == "fedmmf":
        mask_cfg = MaskConfig(order=1 if config.mask_order == 1 else 2, seed=config.seed)
        if config.mask_ridge is not None:
            mask_cfg = MaskConfig(order=mask_cfg.order, ridge=config.mask_ridge, seed=config.seed)
        masks = fit_masks(train, mask_cfg)
        train, test = mask_ratings(train, masks), mask_ratings(test, masks)
        # Masked ratings have mean 0: start the factors there (unless the user set the start).
        masked = fedmmf_mf_config(cfg)
        cfg = dataclasses.replace(
            masked,
            init_mean=cfg.init_mean if config.init_mean is not None else masked.init_mean,
            init_scale=cfg.init_scale if config.init_scale is not None else masked.init_scale,
        )
    partition = _partition(train, config)
    secure = scheme_for(len(partition))
    metrics: dict[str, float] = {}

    def on_round(progress: FedMFRound) -> None:
        on_train, on_test = evaluate(progress.model, train), evaluate(progress.model, test)
        metrics.update(rmse_train=on_train.rmse, rmse_test=on_test.rmse, mae_test=on_test.mae)
        record(RoundLog(progress.round, progress.seconds, dict(metrics), progress.clipped))

    # train_federated raises TrainingDivergedError on a non-finite or exploding training error.
    model = train_federated(
        train,
        partition,
        cfg,
        secure,
        online_fraction=config.online_fraction,
        # the protocol's default minimum online set (3), or every client when there are fewer
        min_online=DEFAULT_MIN_ONLINE,
        on_round=on_round,
    )
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "item_factors": model.item_factors,
        "user_factors": model.user_factors,
    }
    if masks is not None:
        arrays["mask_intercept"] = masks.intercept
        arrays["mask_weights"] = masks.weights
        if masks.factors is not None:
            arrays["mask_factors"] = masks.factors
    baseline = float(np.sqrt(np.mean((split.test.ratings - np.mean(split.train.ratings)) ** 2)))
    metadata = {
        "data": split.source,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "n_train_ratings": train.n_ratings,
        "n_test_ratings": test.n_ratings,
        "n_clients": len(partition),
        "mf_config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "global_mean_rmse_test": baseline if math.isfinite(baseline) else None,
        "note": "user_factors (and mask_*) are each client's private state, assembled here only "
        "because the simulation holds every client; a deployment never gathers them",
    }
    return TrainResult(
        config.task,
        config.scheme,
        config.rounds,
        metrics,
        0.0,
        False,
        arrays=arrays,
        metadata=metadata,
        id_maps=split.id_maps,
    )
