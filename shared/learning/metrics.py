"""Evaluation metrics: RMSE / MAE for ratings (FedMF Table 2, FedMMF Table 4), accuracy / F1.

Inputs are array-likes of equal, non-empty shape; a mismatch raises
:class:`fedcast.shared.errors.DataError` rather than broadcasting silently.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedcast.shared.errors import DataError

__all__ = ["accuracy", "f1_score", "mae", "rmse"]


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.shape != pred.shape:
        raise DataError(f"y_true and y_pred differ in shape: {true.shape} vs {pred.shape}")
    if true.size == 0:
        raise DataError("cannot score an empty set of predictions")
    return true, pred


def _binary(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    true, pred = _pair(y_true, y_pred)
    for name, values in (("y_true", true), ("y_pred", pred)):
        if not np.all((values == 0) | (values == 1)):
            raise DataError(f"{name} must contain only 0 and 1")
    return true == 1, pred == 1


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((y - y_hat)^2))``."""
    true, pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((true - pred) ** 2)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error ``mean(|y - y_hat|)``."""
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(true - pred)))


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of 0/1 labels predicted correctly."""
    true, pred = _binary(y_true, y_pred)
    return float(np.mean(true == pred))


def f1_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """F1 of the positive class, ``2 TP / (2 TP + FP + FN)``, on 0/1 labels.

    Defined as 0.0 when there are neither positive labels nor positive
    predictions (the ratio is 0/0 there; 0.0 is the conservative convention).
    """
    true, pred = _binary(y_true, y_pred)
    tp = int(np.sum(true & pred))
    fp = int(np.sum(~true & pred))
    fn = int(np.sum(true & ~pred))
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2.0 * tp / denominator
