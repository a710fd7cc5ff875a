"""An edge client's local data: a device file, or a shard of the seeded synthetic IIoT data.

FedMF devices read a CSV of ``user,item,rating`` rows: ``user`` is any local
label of a production line or machine on this device (re-indexed 0..k-1 here),
``item`` the federation-wide part/product index in [0, n_items). FedAvg devices
read feature vectors with labels (``.npy`` pair or ``.csv``, see
:mod:`fedcast.shared.learning.features`). The synthetic shard is what ``fedcast demo``
and the tests use: every client of a federation derives the same data set from
the seed and keeps only its own users (or samples).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import (
    RatingData,
    SyntheticConfig,
    make_synthetic,
    partition_users,
    train_test_split,
)
from fedcast.shared.learning.features import load_features, make_defect_features, partition_iid
from fedcast.shared.learning.features import train_test_split as split_features
from fedcast.shared.learning.plugin import ClientContext, plugin_client_task
from fedcast.shared.learning.tasks import ClientTask, FedAvgClientTask, FedMFClientTask, TaskSpec

__all__ = ["DataSource", "client_task", "load_device_ratings", "local_ratings", "synthetic_shard"]


@dataclass(frozen=True)
class DataSource:
    """Where a client's data comes from: ``path`` (device files) or a synthetic shard."""

    path: Path | None = None
    labels_path: Path | None = None  # FedAvg .npy labels
    shard: int = 0  # synthetic: this client's index
    n_shards: int = 8  # synthetic: clients in the federation
    users_per_client: int = 6  # synthetic FedMF: production lines per edge node
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.n_shards:
            raise ConfigurationError(f"shard {self.shard} is outside [0, {self.n_shards})")
        if self.users_per_client < 1 or not 0 <= self.test_fraction < 1:
            raise ConfigurationError("users_per_client >= 1 and test_fraction in [0, 1) required")


def local_ratings(data: RatingData, users: np.ndarray) -> RatingData:
    """The ratings of ``users`` with the users re-indexed 0..k-1 (items keep global ids)."""
    users = np.sort(np.asarray(users, dtype=np.int64))
    mask = np.isin(data.users, users)
    return RatingData(
        np.searchsorted(users, data.users[mask]),
        data.items[mask],
        data.ratings[mask],
        int(users.size),
        data.n_items,
        None if data.user_features is None else data.user_features[users],
        data.item_features,
    )


def synthetic_shard(spec: TaskSpec, source: DataSource) -> tuple[RatingData, RatingData]:
    """(train, test) ratings of one client's users in the seeded synthetic data set."""
    n_users = source.n_shards * source.users_per_client
    data = make_synthetic(SyntheticConfig(n_users=n_users, n_items=spec.n_items, seed=source.seed))
    train, test = train_test_split(data, test_fraction=source.test_fraction, seed=source.seed)
    shards = partition_users(train, users_per_client=source.users_per_client, seed=source.seed)
    users = shards[source.shard]
    return local_ratings(train, users), local_ratings(test, users)


def load_device_ratings(path: Path, n_items: int) -> RatingData:
    """A device's ``user,item,rating`` CSV (header required); users re-indexed, items checked."""
    labels: dict[str, int] = {}
    users, items, ratings = [], [], []
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:3]] != ["user", "item", "rating"]:
                raise DataError(f"{path}:1: expected the header user,item,rating")
            for line, row in enumerate(reader, start=2):
                if len(row) < 3:
                    raise DataError(f"{path}:{line}: expected 3 columns")
                try:
                    item, rating = int(row[1]), float(row[2])
                except ValueError:
                    raise DataError(f"{path}:{line}: item must be an integer, rating a number") from None
                users.append(labels.setdefault(row[0].strip(), len(labels)))
                items.append(item)
                ratings.append(rating)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if not users:
        raise DataError(f"{path} has no ratings")
    if min(items) < 0 or max(items) >= n_items:
        raise DataError(f"{path}: item ids must lie in [0, {n_items})")
    return RatingData(np.array(users), np.array(items), np.array(ratings), len(labels), n_items)


def client_task(spec: TaskSpec, source: DataSource) -> ClientTask:
    """The client half of ``spec`` on this device's data.

    A model plugin gets ``ClientContext(partition_id=shard, num_partitions=n_shards,
    seed=spec.seed, data_path=path, labels_path=labels_path, options=spec.options)``.
    """
    if spec.is_plugin:
        context = ClientContext(
            partition_id=source.shard,
            num_partitions=source.n_shards,
            seed=spec.seed,
            data_path=source.path,
            labels_path=source.labels_path,
            options=dict(spec.options),
        )
        return plugin_client_task(spec, context)
    if spec.name == "fedmf":
        if source.path is not None:
            data = load_device_ratings(source.path, spec.n_items)
            train, test = train_test_split(data, test_fraction=source.test_fraction, seed=source.seed)
        else:
            train, test = synthetic_shard(spec, source)
        return FedMFClientTask(spec, train, test, client_seed=source.shard)
    if source.path is not None:
        features = load_features(source.path, source.labels_path)
    else:
        pool = make_defect_features(400 * source.n_shards, n_features=spec.n_features, seed=source.seed)
        features = pool.subset(partition_iid(pool.n_samples, source.n_shards, seed=source.seed)[source.shard])
    if features.n_features != spec.n_features:
        raise DataError(f"device data has {features.n_features} features, the task {spec.n_features}")
    train_idx, test_idx = split_features(
        features.y, test_fraction=max(source.test_fraction, 0.05), seed=source.seed
    )
    return FedAvgClientTask(
        spec, features.subset(train_idx), features.subset(test_idx), client_seed=source.shard
    )
