"""The default ``precond`` optimizer: scale-free on heavy-tailed data, federated == centralized."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from fedcast.shared.errors import FedcastError, TrainingDivergedError
from fedcast.shared.learning.data import (
    FloatArray,
    PowerLawConfig,
    RatingData,
    SyntheticConfig,
    make_power_law,
    make_synthetic,
    partition_users,
    train_test_split,
)
from fedcast.shared.learning.fedmf import FedMF, FedMFRound, train_federated
from fedcast.shared.learning.metrics import rmse
from fedcast.shared.learning.mf import (
    MFConfig,
    evaluate,
    init_model,
    mf_loss,
    precond_step,
    train_centralized,
)
from fedcast.shared.secure_sum import ExactSum, PlaintextSum, RoundStats

HEAVY = PowerLawConfig(n_users=600, n_items=800, seed=2)


@pytest.fixture(scope="module")
def light() -> RatingData:
    return make_synthetic(SyntheticConfig(n_users=24, n_items=30, ratings_per_user=15, seed=5))


@pytest.fixture(scope="module")
def heavy() -> tuple[RatingData, RatingData]:
    return train_test_split(make_power_law(HEAVY), test_fraction=0.2, seed=2)


def _baseline(train: RatingData, test: RatingData) -> float:
    return rmse(test.ratings, np.full(test.n_ratings, train.ratings.mean()))


def test_power_law_data_is_heavy_tailed(heavy: tuple[RatingData, RatingData]) -> None:
    data = make_power_law(HEAVY)
    users = np.sort(data.user_counts())
    items = np.sort(np.bincount(data.items, minlength=data.n_items))
    assert list(users[-3:]) == [720, 760, 800] and np.median(users) < 40
    assert items[-1] >= 500 and np.median(items) < 40
    again = make_power_law(HEAVY)
    assert np.array_equal(again.ratings, data.ratings) and np.array_equal(again.items, data.items)
    assert set(np.unique(data.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.user_features is not None and data.item_features is not None


@pytest.mark.parametrize(("k", "scheme"), [(1, "iid"), (3, "iid"), (4, "size_skewed")])
@pytest.mark.parametrize("step_size", [1.0, 0.6])
def test_federated_precond_equals_centralized_step_for_step(
    light: RatingData, k: int, scheme: str, step_size: float
) -> None:
    cfg = MFConfig(latent_dim=4, seed=2, step_size=step_size, local_steps=2)
    partition = partition_users(light, users_per_client=k, scheme=scheme, seed=3)  # type: ignore[arg-type]
    fed = FedMF(light, partition, cfg, ExactSum())
    central = init_model(light.n_users, light.n_items, cfg)
    for _ in range(25):
        fed.run_round()
        central = precond_step(central, light, cfg)
        model = fed.model()
        assert np.max(np.abs(model.item_factors - central.item_factors)) < 1e-10
        assert np.max(np.abs(model.user_factors - central.user_factors)) < 1e-10
    assert not np.allclose(central.item_factors, init_model(24, 30, cfg).item_factors)


def test_upload_layout_is_full_text_gradient_then_curvature(light: RatingData) -> None:
    cfg = MFConfig(latent_dim=3, seed=4)
    partition = partition_users(light, users_per_client=2, seed=0)
    record = FedMF(light, partition, cfg, ExactSum()).run_round()
    assert record.curvature is not None
    total = np.zeros(light.n_items)
    for upload, users in zip(record.uploads, partition, strict=True):
        rated = np.unique(light.for_users(users).items)
        unrated = np.setdiff1d(np.arange(light.n_items), rated)
        assert upload.curvature is not None
        assert upload.vector.shape == (light.n_items * 4,)
        np.testing.assert_array_equal(upload.vector[: light.n_items * 3], upload.gradient)
        assert np.all(upload.curvature[unrated] == 0) and np.all(upload.curvature[rated] > 0)
        total += upload.curvature
    np.testing.assert_allclose(record.curvature, total)
    gd = FedMF(light, partition, dataclasses.replace(cfg, optimizer="gd"), ExactSum()).run_round()
    assert gd.curvature is None and all(u.vector is u.gradient for u in gd.uploads)


@pytest.mark.parametrize("step_size", [1.0, 0.5])
def test_precond_never_increases_the_loss_on_heavy_data(
    heavy: tuple[RatingData, RatingData], step_size: float
) -> None:
    train, _ = heavy
    cfg = MFConfig(step_size=step_size)
    current = init_model(train.n_users, train.n_items, cfg)
    losses = [mf_loss(current, train, cfg)]
    for _ in range(12):
        current = precond_step(current, train, cfg)
        losses.append(mf_loss(current, train, cfg))
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.9 * losses[0]


def test_same_defaults_converge_on_light_and_heavy_tailed_data(
    light: RatingData, heavy: tuple[RatingData, RatingData]
) -> None:
    """One MFConfig() for both: a 24-user set with ~15 ratings each and users with 700+ ratings."""
    full = make_synthetic(SyntheticConfig(seed=1))
    sets = [train_test_split(full, test_fraction=0.2, seed=1), heavy]
    for train, test in sets:
        rounds: list[FedMFRound] = []
        partition = partition_users(train, users_per_client=max(1, train.n_users // 40), seed=0)
        model = train_federated(train, partition, MFConfig(), PlaintextSum(), on_round=rounds.append)
        assert np.all(np.isfinite(model.item_factors)) and np.all(np.isfinite(model.user_factors))
        result = evaluate(model, test).rmse
        assert result < 0.85 * _baseline(train, test), (train.n_users, result, _baseline(train, test))
        assert rounds[-1].train_rmse < 0.7 * rounds[0].train_rmse
    central = train_centralized(heavy[0], MFConfig())
    assert evaluate(central, heavy[1]).rmse < 0.85 * _baseline(*heavy)


def test_the_old_gd_default_diverges_on_heavy_data_with_a_typed_error(
    heavy: tuple[RatingData, RatingData],
) -> None:
    train, _ = heavy
    gd = MFConfig(optimizer="gd", learning_rate=0.004, reg_user=0.5, reg_item=0.5, epochs=50)
    seen: list[FedMFRound] = []
    with pytest.raises(TrainingDivergedError) as caught:
        train_federated(
            train, partition_users(train, users_per_client=30), gd, PlaintextSum(), on_round=seen.append
        )
    assert caught.value.reason == "training_diverged" and isinstance(caught.value, FedcastError)
    assert "learning_rate" in str(caught.value) and len(seen) < 50
    assert all(math.isfinite(r.train_sse) for r in seen)
    with pytest.raises(TrainingDivergedError):
        train_centralized(train, gd)


class _ClippingSum:
    """A plaintext sum that reports a made-up clipped count, like an encoding scheme does."""

    name = "clipping"

    def __init__(self) -> None:
        self._last = RoundStats()
        self.calls = 0

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        self.calls += 1
        self._last = RoundStats(n_clients=len(vectors), clipped_values=self.calls)
        out: FloatArray = np.sum(vectors, axis=0)
        return out


def test_on_round_reports_every_round(light: RatingData) -> None:
    rounds: list[FedMFRound] = []
    partition = partition_users(light, users_per_client=3, seed=1)
    cfg = MFConfig(epochs=15, seed=3)
    train_federated(light, partition, cfg, _ClippingSum(), online_fraction=0.5, on_round=rounds.append)
    assert [r.round for r in rounds] == list(range(1, 16))
    assert [r.clipped for r in rounds] == list(range(1, 16))
    assert all(r.n_online == 4 and r.seconds >= 0 for r in rounds)
    counts = light.user_counts()
    assert all(0 < r.n_ratings < counts.sum() for r in rounds)
    assert all(r.train_rmse == pytest.approx(math.sqrt(r.train_sse / r.n_ratings)) for r in rounds)
    assert rounds[-1].train_rmse < rounds[0].train_rmse


def test_items_no_online_client_rated_keep_their_vector(light: RatingData) -> None:
    partition = partition_users(light, users_per_client=1, seed=0)
    fed = FedMF(light, partition, MFConfig(latent_dim=3, seed=6), ExactSum())
    before = fed.item_factors
    fed.run_round([0])
    after = fed.item_factors
    rated = np.unique(light.for_users(partition[0]).items)
    unrated = np.setdiff1d(np.arange(light.n_items), rated)
    assert unrated.size > 0
    np.testing.assert_array_equal(after[unrated], before[unrated])
    assert not np.allclose(after[rated], before[rated])
