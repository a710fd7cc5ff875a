"""Centralized MF (eq. 2-6) and user-level federated MF (Algorithm 1)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.data import (
    RatingData,
    SyntheticConfig,
    make_synthetic,
    partition_users,
    train_test_split,
)
from fedcast.shared.learning.fedmf import FedMF, scatter_part_text, train_federated
from fedcast.shared.learning.metrics import rmse
from fedcast.shared.learning.mf import (
    MFConfig,
    MFModel,
    evaluate,
    gradient_step,
    init_model,
    mf_gradients,
    mf_loss,
    train_centralized,
)
from fedcast.shared.secure_sum import ExactSum, PlaintextSum

SMALL = SyntheticConfig(n_users=24, n_items=30, ratings_per_user=15, seed=5)


@pytest.fixture(scope="module")
def data() -> RatingData:
    return make_synthetic(SMALL)


@pytest.mark.parametrize(
    "change",
    [
        {"latent_dim": 0},
        {"learning_rate": 0.0},
        {"learning_rate": float("nan")},
        {"reg_user": -0.1},
        {"learning_rate": 0.5, "reg_item": 1.0, "optimizer": "gd"},  # 2 gamma mu >= 1
        {"optimizer": "adam"},
        {"step_size": 0.0},
        {"step_size": 1.5},
        {"step_size": float("nan")},
        {"reg_user": 0.0},  # precond: the user solve is a ridge
        {"local_steps": 0},
        {"init_scale": 0.0},
        {"epochs": -1},
        {"seed": -3},
    ],
)
def test_config_validation(change: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        MFConfig(**change)  # type: ignore[arg-type]


def test_gradients_match_finite_differences(data: RatingData) -> None:
    cfg = MFConfig(latent_dim=3, reg_user=0.3, reg_item=0.7, seed=1)
    rng = np.random.default_rng(0)
    model = MFModel(rng.normal(size=(data.n_users, 3)), rng.normal(size=(data.n_items, 3)))
    grad_u, grad_v = mf_gradients(model, data, cfg)
    h = 1e-6
    for which, grad in (("user_factors", grad_u), ("item_factors", grad_v)):
        base = getattr(model, which)
        for row, col in [(0, 0), (3, 2), (base.shape[0] - 1, 1), (7, 1)]:
            plus, minus = base.copy(), base.copy()
            plus[row, col] += h
            minus[row, col] -= h
            f_plus = mf_loss(dataclasses.replace(model, **{which: plus}), data, cfg)
            f_minus = mf_loss(dataclasses.replace(model, **{which: minus}), data, cfg)
            numeric = (f_plus - f_minus) / (2 * h)
            assert grad[row, col] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_gd_is_still_available_and_validated_like_before() -> None:
    assert MFConfig(learning_rate=0.5, reg_item=1.0).optimizer == "precond"  # gd-only constraint
    assert MFConfig(optimizer="gd", reg_user=0.0).reg_user == 0.0


def test_centralized_converges_well_below_mean_predictor() -> None:
    full = make_synthetic(SyntheticConfig(seed=1))
    train, test = train_test_split(full, test_fraction=0.2, seed=1)
    cfg = MFConfig(epochs=200, seed=1, optimizer="gd", reg_user=0.5, reg_item=0.5, init_mean=0.3)
    start = init_model(train.n_users, train.n_items, cfg)
    model = train_centralized(train, cfg)
    baseline = rmse(test.ratings, np.full(test.n_ratings, train.ratings.mean()))
    assert evaluate(model, test).rmse < 0.65 * baseline
    assert mf_loss(model, train, cfg) < 0.1 * mf_loss(start, train, cfg)
    # Gradient descent with a stable step size never increases the objective.
    losses = []
    current = start
    for _ in range(30):
        current = gradient_step(current, train, cfg)
        losses.append(mf_loss(current, train, cfg))
    assert all(b <= a for a, b in itertools.pairwise(losses))


@pytest.mark.parametrize(("k", "scheme"), [(1, "iid"), (3, "iid"), (4, "size_skewed")])
def test_federated_equals_centralized_step_for_step(data: RatingData, k: int, scheme: str) -> None:
    cfg = MFConfig(latent_dim=4, seed=2, optimizer="gd")
    partition = partition_users(data, users_per_client=k, scheme=scheme, seed=3)  # type: ignore[arg-type]
    fed = FedMF(data, partition, cfg, ExactSum())
    central = init_model(data.n_users, data.n_items, cfg)
    for _ in range(40):
        fed.run_round()
        central = gradient_step(central, data, cfg)
        model = fed.model()
        assert np.max(np.abs(model.item_factors - central.item_factors)) < 1e-10
        assert np.max(np.abs(model.user_factors - central.user_factors)) < 1e-10
    assert not np.allclose(central.item_factors, init_model(24, 30, cfg).item_factors)


def test_plaintext_sum_matches_up_to_float32(data: RatingData) -> None:
    cfg = MFConfig(latent_dim=4, epochs=60, seed=2, optimizer="gd")
    partition = partition_users(data)
    exact = train_federated(data, partition, cfg, ExactSum())
    wire = train_federated(data, partition, cfg, PlaintextSum())
    diff = np.max(np.abs(exact.item_factors - wire.item_factors))
    assert 0 < diff < 1e-5


def test_uploads_are_full_text_and_part_text_is_equivalent(data: RatingData) -> None:
    cfg = MFConfig(latent_dim=3, seed=4)
    partition = partition_users(data, users_per_client=2, seed=0)
    record = FedMF(data, partition, cfg, ExactSum()).run_round()
    for upload, users in zip(record.uploads, partition, strict=True):
        rows = upload.gradient.reshape(data.n_items, 3)
        rated = np.unique(data.for_users(users).items)
        assert upload.gradient.shape == (data.n_items * 3,)
        assert np.array_equal(upload.rated_items, rated)
        assert np.all(rows[np.setdiff1d(np.arange(data.n_items), rated)] == 0)
        assert np.all(np.abs(rows[rated]).sum(axis=1) > 0)
        assert upload.part_rows().shape == (rated.size, 3)
    np.testing.assert_allclose(scatter_part_text(record.uploads, data.n_items), record.aggregate)


def test_partial_rounds_touch_only_online_clients(data: RatingData) -> None:
    cfg = MFConfig(latent_dim=3, seed=6, optimizer="gd")
    partition = partition_users(data, users_per_client=4, seed=0)
    fed = FedMF(data, partition, cfg, ExactSum())
    before = fed.model()
    online = [0, 2]
    fed.run_round(online)
    after = fed.model()
    users_online = np.concatenate([partition[c] for c in online])
    offline = np.setdiff1d(np.arange(data.n_users), users_online)
    assert np.array_equal(after.user_factors[offline], before.user_factors[offline])
    assert not np.allclose(after.user_factors[users_online], before.user_factors[users_online])
    # V moves by the item gradient of the online clients' ratings only (plus mu V).
    _, grad_v = mf_gradients(before, data.for_users(users_online), cfg)
    expected = before.item_factors - cfg.learning_rate * grad_v
    np.testing.assert_allclose(after.item_factors, expected, atol=1e-12)
    for bad in ([], [0, 0], [len(partition)]):
        with pytest.raises(ConfigurationError):
            fed.run_round(bad)


def test_local_steps_and_online_fraction_change_the_trajectory(data: RatingData) -> None:
    cfg = MFConfig(latent_dim=3, epochs=20, seed=7, optimizer="gd")
    partition = partition_users(data)
    one = train_federated(data, partition, cfg, ExactSum())
    two = train_federated(data, partition, dataclasses.replace(cfg, local_steps=2), ExactSum())
    half = train_federated(data, partition, cfg, ExactSum(), online_fraction=0.5)
    assert not np.allclose(one.user_factors, two.user_factors)
    assert not np.allclose(one.item_factors, half.item_factors)
    with pytest.raises(ConfigurationError):
        train_federated(data, partition, cfg, ExactSum(), online_fraction=0.0)


def test_partition_must_cover_users(data: RatingData) -> None:
    partition = partition_users(data)
    with pytest.raises(ConfigurationError):
        FedMF(data, partition[1:], MFConfig(), ExactSum())
    with pytest.raises(ConfigurationError):
        FedMF(data, [*partition, partition[0]], MFConfig(), ExactSum())
