"""The casting-defect feature data both examples train on: a device's files or a synthetic partition.

A simulation may hand the split over in memory (``context.data`` with ``x_train``,
``y_train``, ``x_test``, ``y_test``: what ``fedcast train --data`` does). Else, with
``context.data_path``, the client reads its device's features (``.csv`` with a
label column, or a ``.npy`` features file plus ``context.labels_path``); otherwise
partition ``context.partition_id`` of ``context.num_partitions`` of fedcast's seeded
synthetic "ok vs defect" embeddings (every client derives the same pool from the
federation seed and keeps its own IID share). Options (strings, from
``FEDCAST_TASK_OPTIONS`` or ``run_numpy_federation(options=...)``): ``n_features``
(16), ``n_classes`` (2), ``samples_per_partition`` (400).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcast.api import ClientContext
from fedcast.shared.learning.features import (
    FeatureData,
    load_features,
    make_defect_features,
    partition_iid,
    train_test_split,
)

__all__ = ["defect_metrics", "load_partition", "option"]


def option(options: Mapping[str, str], key: str, default: float) -> float:
    """A numeric option (``default`` when absent); ValueError names a malformed one."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"option {key}={raw!r} is not a number") from None


def load_partition(context: ClientContext) -> tuple[FeatureData, FeatureData]:
    """``(train, test)`` of this client (80/20 stratified, seeded, unless handed over split)."""
    if "x_train" in context.data:
        arrays = context.data
        n_classes = int(option(context.options, "n_classes", 2))
        return (
            FeatureData(arrays["x_train"], arrays["y_train"], n_classes),
            FeatureData(arrays["x_test"], arrays["y_test"], n_classes),
        )
    if context.data_path is not None:
        data = load_features(context.data_path, context.labels_path)
    elif context.partition_id is None:
        raise ValueError("no data: this context has neither a data path nor a partition id (aggregator?)")
    else:
        per_partition = int(option(context.options, "samples_per_partition", 400))
        pool = make_defect_features(
            per_partition * context.num_partitions,
            n_features=int(option(context.options, "n_features", 16)),
            n_classes=int(option(context.options, "n_classes", 2)),
            seed=context.seed,
        )
        parts = partition_iid(pool.n_samples, context.num_partitions, seed=context.seed)
        data = pool.subset(parts[context.partition_id])
    train_idx, test_idx = train_test_split(data.y, test_fraction=0.2, seed=context.seed)
    return data.subset(train_idx), data.subset(test_idx)


def defect_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, and F1 of "defect" (any class but 0) against "ok"."""
    accuracy = float(np.mean(y_true == y_pred)) if y_true.size else 0.0
    true_defect, pred_defect = y_true != 0, y_pred != 0
    tp = float(np.sum(true_defect & pred_defect))
    denominator = float(np.sum(true_defect) + np.sum(pred_defect))
    return {"accuracy": accuracy, "f1": 2 * tp / denominator if denominator else 0.0}
