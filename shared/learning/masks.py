"""FedMMF personalized masks (FedMMF paper section 3.2, eq. 10-12).

Every user ``u`` first fits a private model ``f_u^mask`` on its own ratings only
(eq. 10), then takes part in FedMF on the *masked* ratings
``r_ui - f_u^mask(i)`` (eq. 11); predictions add the mask back,
``r_hat_ui = <p_u, q_i> + f_u^mask(i)`` (eq. 12).

The private models read the item attributes ``y_i`` (public: every line knows
the part catalogue). The user's own profile ``x_u`` is constant over its
ratings, so in a purely local model it is absorbed by the intercept and is not
used as an input. Two model families:

* one-order (the paper's LocalLR): ``f_u(i) = w0_u + w_u . y_i``, ridge
  regression solved in closed form (the intercept is not penalized);
* two-order (LocalFM): a factorization machine
  ``w0_u + w_u . y_i + sum_{k<l} <p_uk, p_ul> y_ik y_il``, started from the
  one-order solution and refined by gradient descent on eq. 10 plus ridge.

All users are fitted in one batched computation (block-diagonal: every
parameter row only receives gradient from its own user's ratings), which is
numerically the same as fitting them one client at a time.

**FedMF settings for masked ratings.** The masked targets ``r - f_u^mask(i)``
are residuals around 0, so FedMF on them starts from zero-mean factors
(:func:`fedmmf_mf_config`: ``init_mean = 0``, ``init_scale = 0.3``, large
enough that the ridge does not pull the small random start to the all-zero
saddle). The per-rating (count-weighted) ridge of the default ``precond``
optimizer needs no retuning for the masked data. Started at mean 0.3 the
masked factors first had to unlearn a bias of ``d * 0.09`` that the residuals
do not have, and with the earlier constant ridge the masked model over-fitted:
FedMMF came out worse than FedMF on MovieLens 100K (docs/LEARNING.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from fedcast.shared.errors import ConfigurationError, DataError, TrainingDivergedError
from fedcast.shared.learning.data import (
    FloatArray,
    IntArray,
    RatingData,
    SyntheticConfig,
    make_synthetic,
    partition_users,
    train_test_split,
)
from fedcast.shared.learning.fedmf import RoundCallback, train_federated
from fedcast.shared.learning.metrics import mae, rmse
from fedcast.shared.learning.mf import Evaluation, MFConfig, MFModel, evaluate
from fedcast.shared.secure_sum import ExactSum, SecureSum

__all__ = [
    "FedMMFModel",
    "MaskComparison",
    "MaskConfig",
    "MeanStd",
    "PersonalizedMasks",
    "compare_fedmf_fedmmf",
    "fedmmf_mf_config",
    "fit_masks",
    "mask_ratings",
    "train_fedmmf",
]


def fedmmf_mf_config(base: MFConfig | None = None) -> MFConfig:
    """FedMF settings for masked (zero-mean) ratings: ``base`` with ``init_mean = 0``, ``init_scale = 0.3``.

    Everything else (optimizer, regularization, rounds, seed, ``latent_dim``) is
    kept from ``base`` (default :class:`MFConfig`), so FedMF and FedMMF compare
    at equal budgets.
    """
    return dataclasses.replace(base or MFConfig(), init_mean=0.0, init_scale=0.3)


@dataclass(frozen=True)
class MaskConfig:
    """Private-model hyper-parameters: ``order`` 1 (linear) or 2 (factorization machine).

    ``ridge`` is the L2 penalty of the weights (the intercept is free), in sum
    form like MF's: with ~20-60 ratings per user and 20 item attributes
    (MovieLens 100K), 20 keeps the genre weights from over-fitting a light
    user's few ratings (5 over-fitted: FedMMF test RMSE 0.936 vs 0.926 on
    MovieLens 100K, seed 0; docs/LEARNING.md).
    ``fm_*`` configure the two-order refinement: latent size, gradient
    step on the per-user mean loss, epochs, initial scale. ``seed`` seeds the
    FM initialization.
    """

    order: Literal[1, 2] = 1
    ridge: float = 20.0
    fm_factors: int = 2
    fm_learning_rate: float = 0.02
    fm_epochs: int = 300
    fm_init_scale: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.order not in (1, 2):
            raise ConfigurationError(f"order must be 1 or 2, got {self.order}")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ConfigurationError(f"ridge must be > 0, got {self.ridge}")
        if self.fm_factors < 1 or self.fm_epochs < 0:
            raise ConfigurationError("need fm_factors >= 1 and fm_epochs >= 0")
        for name, value in (
            ("fm_learning_rate", self.fm_learning_rate),
            ("fm_init_scale", self.fm_init_scale),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be > 0, got {value}")
        if self.seed < 0:
            raise ConfigurationError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)
class PersonalizedMasks:
    """Parameters of every user's private model; row ``u`` is user ``u``'s alone."""

    intercept: FloatArray  # (n_users,)
    weights: FloatArray  # (n_users, f)
    factors: FloatArray | None  # (n_users, f, k) for the two-order model

    def predict(self, users: ArrayLike, item_features: FloatArray) -> FloatArray:
        """``f_u^mask(i)`` for rating rows with user ``users[n]`` and attributes ``item_features[n]``."""
        u = np.asarray(users, dtype=np.int64)
        z = item_features
        out: FloatArray = self.intercept[u] + np.einsum("nf,nf->n", z, self.weights[u])
        if self.factors is not None:
            p = self.factors[u]
            s = np.einsum("nf,nfk->nk", z, p)
            out = out + 0.5 * (np.sum(s**2, axis=1) - np.einsum("nf,nfk->n", z**2, p**2))
        return out


def _item_features(data: RatingData) -> FloatArray:
    if data.item_features is None:
        raise DataError("personalized masks need item features")
    return data.item_features


def _fit_linear(data: RatingData, ridge: float) -> tuple[FloatArray, FloatArray]:
    """Per-user ridge regression on ``[1, y_i]``, all users in one batched solve."""
    z = np.column_stack([np.ones(data.n_ratings), _item_features(data)[data.items]])
    f1 = z.shape[1]
    gram = np.zeros((data.n_users, f1, f1))
    rhs = np.zeros((data.n_users, f1))
    np.add.at(gram, data.users, np.einsum("ni,nj->nij", z, z))
    np.add.at(rhs, data.users, z * data.ratings[:, None])
    # A user with no ratings gets the zero model: the tiny intercept penalty keeps
    # its system non-singular without visibly shrinking anyone else's intercept.
    penalty = np.full(f1, ridge)
    penalty[0] = 1e-9
    theta = np.linalg.solve(gram + np.diag(penalty), rhs[..., None])[..., 0]
    return theta[:, 0].copy(), theta[:, 1:].copy()


def _refine_fm(data: RatingData, masks: PersonalizedMasks, config: MaskConfig) -> PersonalizedMasks:
    """Gradient descent on eq. 10 (+ ridge) for the two-order model, per-user mean loss."""
    rng = np.random.default_rng(config.seed)
    z = _item_features(data)[data.items]
    users = data.users
    weight = 1.0 / np.maximum(data.user_counts(), 1)[users]  # eq. 10's 1/|K_u|
    w0, w = masks.intercept.copy(), masks.weights.copy()
    p = config.fm_init_scale * rng.standard_normal((data.n_users, z.shape[1], config.fm_factors))
    lr, ridge = config.fm_learning_rate, config.ridge / np.maximum(data.user_counts(), 1)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below, typed
        for _ in range(config.fm_epochs):
            current = PersonalizedMasks(w0, w, p)
            g = 2.0 * weight * (current.predict(users, z) - data.ratings)  # dL_u / d f
            s = np.einsum("nf,nfk->nk", z, p[users])
            grad_w0 = np.bincount(users, weights=g, minlength=data.n_users)
            grad_w = 2.0 * ridge[:, None] * w + _scatter_rows(users, g[:, None] * z, data.n_users)
            dp = z[:, :, None] * s[:, None, :] - p[users] * (z**2)[:, :, None]
            flat_dp = (g[:, None, None] * dp).reshape(users.size, -1)
            grad_p = _scatter_rows(users, flat_dp, data.n_users).reshape(p.shape)
            grad_p += 2.0 * ridge[:, None, None] * p
            w0, w, p = w0 - lr * grad_w0, w - lr * grad_w, p - lr * grad_p
    if not (np.all(np.isfinite(w0)) and np.all(np.isfinite(w)) and np.all(np.isfinite(p))):
        raise TrainingDivergedError(
            f"the two-order mask models diverged: lower fm_learning_rate ({config.fm_learning_rate})"
        )
    return PersonalizedMasks(w0, w, p)


def _scatter_rows(index: IntArray, values: FloatArray, n_rows: int) -> FloatArray:
    """``out[index[n]] += values[n]`` for 2-D ``values``, as one bincount (np.add.at is slow)."""
    width = values.shape[1]
    flat = (index[:, None] * width + np.arange(width)[None, :]).reshape(-1)
    out = np.bincount(flat, weights=values.reshape(-1), minlength=n_rows * width)
    result: FloatArray = out.reshape(n_rows, width).astype(np.float64)
    return result


def fit_masks(train: RatingData, config: MaskConfig | None = None) -> PersonalizedMasks:
    """Fit every user's private model on its own training ratings (eq. 10)."""
    cfg = config or MaskConfig()
    w0, w = _fit_linear(train, cfg.ridge)
    masks = PersonalizedMasks(w0, w, None)
    if cfg.order == 2:
        masks = _refine_fm(train, masks, cfg)
    return masks


def mask_ratings(data: RatingData, masks: PersonalizedMasks) -> RatingData:
    """Eq. 11: ``r_masked = r - f_u^mask(i)``, what the client trains FedMF on."""
    mask = masks.predict(data.users, _item_features(data)[data.items])
    return data.with_ratings(data.ratings - mask)


@dataclass(frozen=True, eq=False)
class FedMMFModel:
    """The federated MF factors plus each user's private mask model."""

    mf: MFModel
    masks: PersonalizedMasks
    item_features: FloatArray

    def predict(self, users: ArrayLike, items: ArrayLike) -> FloatArray:
        """Eq. 12: ``<p_u, q_i> + f_u^mask(i)``."""
        u: IntArray = np.asarray(users, dtype=np.int64)
        i: IntArray = np.asarray(items, dtype=np.int64)
        return self.mf.predict(u, i) + self.masks.predict(u, self.item_features[i])

    def evaluate(self, data: RatingData) -> Evaluation:
        """RMSE / MAE on a rating set (e.g. the test split)."""
        prediction = self.predict(data.users, data.items)
        return Evaluation(rmse=rmse(data.ratings, prediction), mae=mae(data.ratings, prediction))


def train_fedmmf(
    train: RatingData,
    partition: Sequence[IntArray],
    mf_config: MFConfig | None,
    secure: SecureSum,
    mask_config: MaskConfig | None = None,
    *,
    on_round: RoundCallback | None = None,
) -> FedMMFModel:
    """FedMMF (FedMMF Algorithm 2 without its secret-sharing transport): masks, then FedMF.

    Each client fits its users' private models (eq. 10), masks their ratings
    (eq. 11) and runs :func:`fedcast.shared.learning.fedmf.train_federated` on them
    (``mf_config``, default :func:`fedmmf_mf_config`); the aggregation goes
    through ``secure`` exactly as in FedMF. ``on_round`` is passed on; its
    training RMSE is that of the full FedMMF prediction (mask included). Raises
    :class:`fedcast.shared.errors.TrainingDivergedError` like FedMF.
    """
    masks = fit_masks(train, mask_config)
    cfg = mf_config if mf_config is not None else fedmmf_mf_config()
    mf = train_federated(mask_ratings(train, masks), partition, cfg, secure, on_round=on_round)
    return FedMMFModel(mf, masks, _item_features(train))


@dataclass(frozen=True)
class MeanStd:
    """Mean and (population) standard deviation over seeds, as in FedMMF Table 4."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd:
        array = np.asarray(values, dtype=np.float64)
        return cls(float(array.mean()), float(array.std()))

    def __str__(self) -> str:
        return f"{self.mean:.4f} +- {self.std:.4f}"


@dataclass(frozen=True)
class MaskComparison:
    """Test RMSE / MAE of FedMF, the private models alone (LocalLR/LocalFM) and FedMMF."""

    fedmf_rmse: MeanStd
    fedmf_mae: MeanStd
    local_rmse: MeanStd
    local_mae: MeanStd
    fedmmf_rmse: MeanStd
    fedmmf_mae: MeanStd
    seeds: tuple[int, ...]


def compare_fedmf_fedmmf(
    *,
    seeds: Sequence[int] = (0, 1, 2),
    data: RatingData | None = None,
    synthetic: SyntheticConfig | None = None,
    mf_config: MFConfig | None = None,
    mask_config: MaskConfig | None = None,
    test_fraction: float = 0.2,
    secure: SecureSum | None = None,
    fedmmf_config: MFConfig | None = None,
) -> MaskComparison:
    """FedMF vs FedMMF over several seeds (FedMMF Table 4 style), one user per client.

    Per seed: the data (given ``data``, else synthetic data generated with that
    seed), a per-user train/test split, the MF initialisation and the mask
    model all use that seed. Aggregation uses ``secure`` (default: exact sums).
    FedMF runs ``mf_config`` (default :class:`MFConfig`), FedMMF
    ``fedmmf_config`` (default ``fedmmf_mf_config(mf_config)``: the same
    settings with a zero-mean start). A run whose test
    metrics are not finite raises
    :class:`fedcast.shared.errors.TrainingDivergedError` (never a NaN table).
    """
    if not seeds:
        raise ConfigurationError("need at least one seed")
    base_mf = mf_config or MFConfig()
    base_fedmmf = fedmmf_config or fedmmf_mf_config(base_mf)
    base_mask = mask_config or MaskConfig()
    summer: SecureSum = secure if secure is not None else ExactSum()
    rows: list[tuple[float, float, float, float, float, float]] = []
    for seed in seeds:
        dataset = data
        if dataset is None:
            dataset = make_synthetic(dataclasses.replace(synthetic or SyntheticConfig(), seed=seed))
        train, test = train_test_split(dataset, test_fraction=test_fraction, seed=seed)
        partition = partition_users(train, seed=seed)
        mf_cfg = dataclasses.replace(base_mf, seed=seed)
        plain = evaluate(train_federated(train, partition, mf_cfg, summer), test)
        mmf_cfg = dataclasses.replace(base_fedmmf, seed=seed)
        fedmmf = train_fedmmf(train, partition, mmf_cfg, summer, dataclasses.replace(base_mask, seed=seed))
        local = fedmmf.masks.predict(test.users, _item_features(test)[test.items])
        masked = fedmmf.evaluate(test)
        rows.append(
            (
                plain.rmse,
                plain.mae,
                rmse(test.ratings, local),
                mae(test.ratings, local),
                masked.rmse,
                masked.mae,
            )
        )
        if not all(math.isfinite(value) for value in rows[-1]):
            raise TrainingDivergedError(f"seed {seed}: non-finite test metrics {rows[-1]}")
    cols = list(zip(*rows, strict=True))
    s = [MeanStd.of(col) for col in cols]
    return MaskComparison(s[0], s[1], s[2], s[3], s[4], s[5], seeds=tuple(seeds))
