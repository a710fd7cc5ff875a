"""Learning parity and the attack demo, as the CLI and benchmarks call them."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from fedcast.shared.learning.experiments import run_attack_demo, run_learning_parity
from fedcast.shared.secure_sum import PlaintextSum, RoundStats, check_vectors

KEYS = {
    "rmse_centralized",
    "rmse_plaintext",
    "rmse_secure",
    "rmse_fedmmf",
    "mae_plaintext",
    "mae_secure",
    "mae_fedmmf",
    "rounds",
    "seed",
}


class FixedPointSum:
    """A stand-in scheme: quantizes every upload to a fixed-point grid before adding."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.calls = 0
        self._last = RoundStats()

    @property
    def name(self) -> str:
        return "fixed-point"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def sum(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        check_vectors(vectors)
        self.calls += 1
        total: np.ndarray = np.sum([np.round(v / self.step) * self.step for v in vectors], axis=0)
        return total


def test_parity_keys_and_values() -> None:
    scheme = FixedPointSum(1e-3)
    result = run_learning_parity(scheme, seed=0, rounds=120)
    assert set(result) == KEYS
    json.dumps(result)
    assert result["rounds"] == 120 and result["seed"] == 0 and scheme.calls == 120
    # FedMF == centralized up to the float32 wire of PlaintextSum.
    assert abs(result["rmse_plaintext"] - result["rmse_centralized"]) < 1e-5
    # A coarse fixed-point scheme perturbs the result, but only slightly.
    assert result["rmse_secure"] != result["rmse_plaintext"]
    assert abs(result["rmse_secure"] - result["rmse_plaintext"]) < 0.01
    assert result["rmse_plaintext"] < 0.6  # the trivial mean predictor is ~0.8 here
    assert result["rmse_fedmmf"] < result["rmse_plaintext"]


def test_parity_with_plaintext_is_exactly_plaintext() -> None:
    result = run_learning_parity(PlaintextSum(), seed=1, rounds=30, n_users=16, n_items=20)
    assert result["rmse_secure"] == result["rmse_plaintext"]
    assert result["mae_secure"] == result["mae_plaintext"]


def test_attack_demo() -> None:
    demo = run_attack_demo(0)
    json.dumps(demo)
    assert demo["rated_items_recovered"] is True
    assert demo["recovery_rmse"] < 1e-5
    assert np.allclose(demo["recovered_ratings"], demo["true_ratings"], atol=1e-5)
    assert demo["sum_of_two_recovery_rmse"] > 0.1
    assert demo["plaintext_attack_feasible"] is True
    assert demo["secure_attack_feasible"] is False
    assert ">= 2 clients" in demo["statement"]
