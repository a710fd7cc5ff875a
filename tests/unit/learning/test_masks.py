"""FedMMF personalized masks (eq. 10-12)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import RatingData, SyntheticConfig, make_synthetic, partition_users
from fedcast.shared.learning.masks import (
    MaskConfig,
    compare_fedmf_fedmmf,
    fit_masks,
    mask_ratings,
    train_fedmmf,
)
from fedcast.shared.learning.metrics import rmse
from fedcast.shared.learning.mf import MFConfig
from fedcast.shared.secure_sum import ExactSum


def _linear_users(n_users: int = 5, n_items: int = 40, seed: int = 0) -> tuple[RatingData, np.ndarray]:
    """Every user's ratings are an exact private linear function of the item features."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_items, 3))
    theta = rng.normal(size=(n_users, 4))
    users = np.repeat(np.arange(n_users), n_items)
    items = np.tile(np.arange(n_items), n_users)
    ratings = theta[users, 0] + np.einsum("nf,nf->n", features[items], theta[users, 1:])
    data = RatingData(users, items, ratings, n_users, n_items, item_features=features)
    return data, theta


def test_one_order_mask_recovers_private_linear_models() -> None:
    data, theta = _linear_users()
    masks = fit_masks(data, MaskConfig(ridge=1e-6))
    np.testing.assert_allclose(masks.intercept, theta[:, 0], atol=1e-5)
    np.testing.assert_allclose(masks.weights, theta[:, 1:], atol=1e-5)
    assert np.max(np.abs(mask_ratings(data, masks).ratings)) < 1e-5  # eq. 11 residuals vanish


def test_masks_are_private_per_user() -> None:
    data, _ = _linear_users()
    base = fit_masks(data, MaskConfig(order=2, fm_epochs=50))
    changed = data.with_ratings(np.where(data.users == 1, data.ratings + 3.0, data.ratings))
    other = fit_masks(changed, MaskConfig(order=2, fm_epochs=50))
    keep = np.arange(data.n_users) != 1
    np.testing.assert_allclose(other.intercept[keep], base.intercept[keep])
    np.testing.assert_allclose(other.weights[keep], base.weights[keep])
    assert other.factors is not None and base.factors is not None
    np.testing.assert_allclose(other.factors[keep], base.factors[keep])
    assert other.intercept[1] == pytest.approx(base.intercept[1] + 3.0, abs=0.05)


def test_two_order_mask_captures_feature_interactions() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 3))
    ratings = 3.0 + 1.5 * features[:, 0] * features[:, 1]
    data = RatingData(np.zeros(60, dtype=np.int64), np.arange(60), ratings, 1, 60, item_features=features)
    one = fit_masks(data, MaskConfig(order=1, ridge=0.1))
    two = fit_masks(data, MaskConfig(order=2, ridge=0.1, fm_epochs=600, fm_learning_rate=0.05))
    z = features
    err_one = rmse(ratings, one.predict(data.users, z))
    err_two = rmse(ratings, two.predict(data.users, z))
    assert err_two < 0.3 * err_one


def test_fedmmf_prediction_adds_the_mask_back() -> None:
    data = make_synthetic(SyntheticConfig(n_users=12, n_items=20, ratings_per_user=10))
    cfg = MFConfig(latent_dim=3, epochs=5)
    model = train_fedmmf(data, partition_users(data), cfg, ExactSum())
    assert data.item_features is not None
    expected = model.mf.predict(data.users, data.items) + model.masks.predict(
        data.users, data.item_features[data.items]
    )
    np.testing.assert_allclose(model.predict(data.users, data.items), expected)


def test_masks_improve_rmse_with_informative_features() -> None:
    syn = SyntheticConfig(n_users=40, n_items=50, ratings_per_user=25)
    result = compare_fedmf_fedmmf(seeds=(0, 1), synthetic=syn, mf_config=MFConfig(epochs=150))
    assert result.fedmmf_rmse.mean < result.fedmf_rmse.mean - 0.02
    assert result.fedmmf_mae.mean < result.fedmf_mae.mean
    # The ensemble beats the private models alone (FedMMF Table 4's LocalLR row).
    assert result.fedmmf_rmse.mean < result.local_rmse.mean
    assert result.seeds == (0, 1) and result.fedmf_rmse.std >= 0


def test_mask_inputs_are_validated() -> None:
    data = make_synthetic(SyntheticConfig(n_users=6, n_items=10, ratings_per_user=4))
    with pytest.raises(DataError):
        fit_masks(dataclasses.replace(data, item_features=None))
    with pytest.raises(ConfigurationError):
        MaskConfig(order=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MaskConfig(ridge=0.0)
    with pytest.raises(ConfigurationError):
        compare_fedmf_fedmmf(seeds=())
