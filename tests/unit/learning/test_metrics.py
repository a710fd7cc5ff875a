"""Metrics: known values, edge cases, input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.errors import DataError
from fedcast.shared.learning.metrics import accuracy, f1_score, mae, rmse


def test_rmse_and_mae_known_values() -> None:
    y = [1.0, 2.0, 3.0, 4.0]
    p = [2.0, 2.0, 3.0, 1.0]
    assert rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 0 + 9) / 4))
    assert mae(y, p) == pytest.approx((1 + 0 + 0 + 3) / 4)


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=30), st.integers(0, 10_000))
def test_rmse_dominates_mae(values: list[float], seed: int) -> None:
    y = np.asarray(values)
    p = y + np.random.default_rng(seed).normal(size=y.size)
    assert rmse(y, p) >= mae(y, p) - 1e-12
    assert rmse(y, y) == 0.0


@pytest.mark.parametrize("metric", [rmse, mae, accuracy, f1_score])
def test_shape_mismatch_and_empty_raise(metric: object) -> None:
    assert callable(metric)
    with pytest.raises(DataError):
        metric([1, 0], [1, 0, 1])
    with pytest.raises(DataError):
        metric([], [])


def test_accuracy_and_f1_known_values() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([1, 0, 0, 1, 1, 0])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # TP = 2, FP = 1, FN = 1 -> F1 = 4 / 6
    assert f1_score(y, p) == pytest.approx(4 / 6)


def test_f1_edge_cases() -> None:
    assert f1_score([0, 0, 0], [0, 0, 0]) == 0.0
    assert f1_score([1, 1], [1, 1]) == 1.0
    assert f1_score([1, 0], [0, 1]) == 0.0
    assert accuracy([0, 0, 0], [0, 0, 0]) == 1.0


def test_binary_metrics_reject_non_binary_labels() -> None:
    with pytest.raises(DataError):
        accuracy([0, 2], [0, 1])
    with pytest.raises(DataError):
        f1_score([0, 1], [0.5, 1])
