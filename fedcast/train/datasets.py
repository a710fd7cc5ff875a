"""The data of a ``fedcast train`` run and its per-client holdout.

**Holdout (documented in docs/TRAINING.md).** Every client keeps part of its own data for
testing, drawn with the run's ``--seed``; nothing of a client's test part is ever trained on,
and the reported test metrics are over the union of every client's test part.

* Ratings (fedmf, fedmmf): each user holds out ``round(test_fraction * n_u)`` random ratings
  of its own, keeping at least one for training. A user belongs to exactly one client, so
  this is a per-client holdout too.
* Features (fedavg-*, plugins): the samples are cut into clients first (IID, or label-skewed
  with ``--dirichlet-alpha``); each client then splits its own samples, stratified by label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedcast.shared.errors import DataError
from fedcast.shared.learning.data import RatingData, make_synthetic
from fedcast.shared.learning.data import train_test_split as rating_split
from fedcast.shared.learning.features import (
    FeatureData,
    load_features,
    make_defect_features,
    partition_dirichlet,
    partition_iid,
)
from fedcast.shared.learning.features import train_test_split as feature_split
from fedcast.shared.learning.loaders import load_ratings
from fedcast.train.config import TrainConfig

__all__ = [
    "DEFAULT_FEDAVG_CLIENTS",
    "FeatureSplit",
    "RatingSplit",
    "load_features_split",
    "load_rating_split",
]

DEFAULT_FEDAVG_CLIENTS = 10


@dataclass(frozen=True, eq=False)
class RatingSplit:
    """Train and test ratings over the same users and items, and where they came from."""

    train: RatingData
    test: RatingData
    source: str
    # Original ids of the dense user / item indices, when the file had its own ids.
    id_maps: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class FeatureSplit:
    """Each client's own train and test samples, and where they came from."""

    clients: list[FeatureData]
    tests: list[FeatureData]
    source: str

    @property
    def test(self) -> FeatureData:
        """The union of every client's test part (what the reported metrics are over)."""
        x = np.concatenate([t.x for t in self.tests])
        y = np.concatenate([t.y for t in self.tests])
        return FeatureData(x, y, self.clients[0].n_classes)

    @property
    def n_features(self) -> int:
        return self.clients[0].n_features

    @property
    def n_classes(self) -> int:
        return self.clients[0].n_classes


def load_rating_split(config: TrainConfig) -> RatingSplit:
    """The rating data of ``--data`` (or the synthetic set), split per user."""
    if config.data is None:
        data, source, id_maps = (
            make_synthetic(),
            "synthetic (fedcast.shared.learning.data.make_synthetic)",
            {},
        )
    else:
        loaded = load_ratings(config.data)
        data, source = loaded.data, f"{loaded.format}: {config.data}"
        id_maps = {"users": list(loaded.user_ids), "items": list(loaded.item_ids)}
    train, test = rating_split(data, test_fraction=config.test_fraction, seed=config.seed)
    if test.n_ratings == 0:
        raise DataError(f"{source}: no user has enough ratings to hold any out for testing")
    return RatingSplit(train, test, source, id_maps)


def load_features_split(config: TrainConfig) -> FeatureSplit:
    """The feature data of ``--data`` (or the synthetic defects), cut into clients, each split."""
    if config.data is None:
        data = make_defect_features(2000, seed=config.seed)
        source = "synthetic (fedcast.shared.learning.features.make_defect_features, 2000 samples)"
    else:
        data = _load_feature_file(config.data)
        source = f"features: {config.data}"
    n_clients = config.clients or DEFAULT_FEDAVG_CLIENTS
    if data.n_samples < 4 * n_clients:
        raise DataError(f"{source}: {data.n_samples} samples are too few for {n_clients} clients")
    if config.dirichlet_alpha is None:
        parts = partition_iid(data.n_samples, n_clients, seed=config.seed)
    else:
        parts = partition_dirichlet(
            data.y, n_clients, alpha=config.dirichlet_alpha, seed=config.seed, min_samples=4
        )
    clients, tests = [], []
    for k, part in enumerate(parts):
        local = data.subset(part)
        train_idx, test_idx = feature_split(local.y, test_fraction=config.test_fraction, seed=config.seed + k)
        clients.append(local.subset(train_idx))
        tests.append(local.subset(test_idx))
    return FeatureSplit(clients, tests, source)


def _load_feature_file(path: Path) -> FeatureData:
    """``.csv`` (label in a ``label`` column or the last one) or ``.npz`` with arrays ``x`` and ``y``."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive or "y" not in archive:
                    raise DataError(f"{path}: an .npz needs arrays named x (features) and y (labels)")
                x, y = archive["x"], archive["y"]
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the .npz: {exc}") from exc
        return FeatureData(x, y)
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8") as handle:
                header = [name.strip() for name in handle.readline().split(",")]
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        return load_features(path, label_column="label" if "label" in header else None)
    raise DataError(f"{path}: unsupported feature file (use .csv with a label column, or .npz with x and y)")
