"""Matrix factorization: the L2 loss of FedMF eq. 2, its gradients (eq. 5, 6), batch training.

The objective minimized everywhere in fedcast is the sum form whose exact
gradients are the paper's eq. 5 and 6::

    F(U, V) = sum_{(i,j) in M} (r_ij - <u_i, v_j>)^2 + lambda ||U||_F^2 + mu ||V||_F^2

Eq. 2 divides the data term by ``M = |M|``; ``F = M * eq.2`` with the
regularizers rescaled by ``M``, so both have the same minimizers. We keep the
sum form because a client can compute its share of it (and of its gradient)
without knowing the global rating count ``M``, which would otherwise leak
through the protocol. (Eq. 6 writes ``lambda`` for the item regularizer; we use
``mu`` as in eq. 2.)

Training is full-batch gradient descent, eq. 3 and 4 applied to all rows at once
with both gradients taken at the same ``(U, V)``. The federated version
(:mod:`fedcast.shared.learning.fedmf`) is built to reproduce it step for step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import FloatArray, RatingData
from fedcast.shared.learning.metrics import mae, rmse

__all__ = [
    "Evaluation",
    "MFConfig",
    "MFModel",
    "evaluate",
    "gradient_step",
    "init_model",
    "mf_gradients",
    "mf_loss",
    "residuals",
    "train_centralized",
]


@dataclass(frozen=True)
class MFConfig:
    """Hyper-parameters of (federated) MF; validated on construction.

    ``learning_rate`` is gamma of eq. 3/4, ``reg_user`` lambda and ``reg_item`` mu
    of eq. 2. ``epochs`` is the number of full-batch steps (centralized) or
    rounds (federated). ``local_steps`` is how many eq. 3 user updates a client
    makes per round against the downloaded ``V``. Factors start as
    ``init_mean + init_scale * N(0, 1)`` per entry; the small positive mean
    gives every ``<u_i, v_j>`` a head start towards the positive ratings.
    """

    latent_dim: int = 5
    learning_rate: float = 0.004
    reg_user: float = 0.5
    reg_item: float = 0.5
    epochs: int = 300
    local_steps: int = 1
    init_scale: float = 0.1
    init_mean: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ConfigurationError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name, value in (("reg_user", self.reg_user), ("reg_item", self.reg_item)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be finite and >= 0, got {value}")
        # Eq. 9: u^{t+1} = (1 - 2 lambda gamma) u^t + ...; a factor <= 0 flips or kills u.
        if 2 * self.learning_rate * max(self.reg_user, self.reg_item) >= 1:
            raise ConfigurationError("need 2 * learning_rate * regularization < 1")
        if self.epochs < 0:
            raise ConfigurationError(f"epochs must be >= 0, got {self.epochs}")
        if self.local_steps < 1:
            raise ConfigurationError(f"local_steps must be >= 1, got {self.local_steps}")
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ConfigurationError(f"init_scale must be > 0, got {self.init_scale}")
        if not math.isfinite(self.init_mean):
            raise ConfigurationError(f"init_mean must be finite, got {self.init_mean}")
        if self.seed < 0:
            raise ConfigurationError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)
class MFModel:
    """User profile ``U`` (n_users x d) and item profile ``V`` (n_items x d)."""

    user_factors: FloatArray
    item_factors: FloatArray

    def __post_init__(self) -> None:
        u = np.asarray(self.user_factors, dtype=np.float64)
        v = np.asarray(self.item_factors, dtype=np.float64)
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
            raise ConfigurationError(f"factor shapes {u.shape} and {v.shape} do not match")
        object.__setattr__(self, "user_factors", u)
        object.__setattr__(self, "item_factors", v)

    def predict(self, users: ArrayLike, items: ArrayLike) -> FloatArray:
        """``<u_i, v_j>`` for every pair (the MF prediction of section 3.1)."""
        ui = np.asarray(users, dtype=np.int64)
        ij = np.asarray(items, dtype=np.int64)
        out: FloatArray = np.einsum("nk,nk->n", self.user_factors[ui], self.item_factors[ij])
        return out


@dataclass(frozen=True)
class Evaluation:
    """RMSE and MAE of a model on a rating set."""

    rmse: float
    mae: float


def init_model(n_users: int, n_items: int, config: MFConfig) -> MFModel:
    """Seeded initial factors (see :class:`MFConfig`); ``V`` is drawn before ``U``."""
    rng = np.random.default_rng(config.seed)
    d = config.latent_dim
    v = config.init_mean + config.init_scale * rng.standard_normal((n_items, d))
    u = config.init_mean + config.init_scale * rng.standard_normal((n_users, d))
    return MFModel(u, v)


def _check(model: MFModel, data: RatingData) -> None:
    if model.user_factors.shape[0] != data.n_users or model.item_factors.shape[0] != data.n_items:
        raise DataError(
            f"model is {model.user_factors.shape[0]} x {model.item_factors.shape[0]}, "
            f"data is {data.n_users} x {data.n_items}"
        )


def residuals(model: MFModel, data: RatingData) -> FloatArray:
    """``e_ij = r_ij - <u_i, v_j>`` for every observed rating."""
    _check(model, data)
    return data.ratings - model.predict(data.users, data.items)


def mf_loss(model: MFModel, data: RatingData, config: MFConfig) -> float:
    """``F(U, V)`` above: squared error sum plus ``lambda ||U||^2 + mu ||V||^2``."""
    e = residuals(model, data)
    reg = config.reg_user * float(np.sum(model.user_factors**2))
    reg += config.reg_item * float(np.sum(model.item_factors**2))
    return float(e @ e) + reg


def mf_gradients(model: MFModel, data: RatingData, config: MFConfig) -> tuple[FloatArray, FloatArray]:
    """``(grad_U F, grad_V F)``, eq. 5 and 6, both at the given ``(U, V)``.

    Row ``i`` of the first is ``-2 sum_j v_j e_ij + 2 lambda u_i``, row ``j`` of the
    second ``-2 sum_i u_i e_ij + 2 mu v_j``. Scattered with ``np.add.at``.
    """
    e = residuals(model, data)
    u, v = model.user_factors, model.item_factors
    grad_u = 2.0 * config.reg_user * u
    grad_v = 2.0 * config.reg_item * v
    np.add.at(grad_u, data.users, -2.0 * e[:, None] * v[data.items])
    np.add.at(grad_v, data.items, -2.0 * e[:, None] * u[data.users])
    return grad_u, grad_v


def gradient_step(model: MFModel, data: RatingData, config: MFConfig) -> MFModel:
    """One full-batch step: eq. 3 and 4 for every user and item simultaneously."""
    grad_u, grad_v = mf_gradients(model, data, config)
    gamma = config.learning_rate
    return MFModel(model.user_factors - gamma * grad_u, model.item_factors - gamma * grad_v)


def train_centralized(data: RatingData, config: MFConfig, *, model: MFModel | None = None) -> MFModel:
    """Centralized batch-gradient MF: ``config.epochs`` calls of :func:`gradient_step`.

    Starts from ``model`` or :func:`init_model`. This is the reference the
    federated version must match step for step.
    """
    current = model if model is not None else init_model(data.n_users, data.n_items, config)
    for _ in range(config.epochs):
        current = gradient_step(current, data, config)
    if not np.all(np.isfinite(current.item_factors)):
        raise ConfigurationError("MF diverged: lower the learning rate")
    return current


def evaluate(model: MFModel, data: RatingData, *, offset: FloatArray | None = None) -> Evaluation:
    """RMSE / MAE of ``<u_i, v_j> (+ offset)`` against ``data.ratings``.

    ``offset`` adds a per-rating term to the prediction, e.g. the FedMMF mask of
    eq. 12.
    """
    prediction = model.predict(data.users, data.items)
    if offset is not None:
        prediction = prediction + offset
    return Evaluation(rmse=rmse(data.ratings, prediction), mae=mae(data.ratings, prediction))
