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

Two optimizers (``MFConfig.optimizer``):

* ``"precond"`` (default): scale-free preconditioned alternating steps on the
  *count-weighted* objective (weighted-lambda regularization, as in ALS-WR,
  Zhou et al. 2008)::

      F_w(U, V) = sum_{(i,j) in M} (r_ij - <u_i, v_j>)^2
                  + lambda sum_i n_i |u_i|^2 + mu sum_j n_j |v_j|^2

  with ``n_i`` / ``n_j`` the ratings of user ``i`` / item ``j``: every rating
  brings its own share of the penalty, so one ``lambda`` suits a user with 5
  ratings and one with 800 (a constant ``lambda`` is negligible for the heavy
  user and dominant for the light one). Because ``F`` is a *sum* over
  ratings, its curvature in ``u_i`` grows with ``n_i`` (in ``v_j`` with
  ``n_j``): a fixed gradient step that is stable for light users diverges on
  a user with 700 ratings. Instead every user takes the exact ridge (ALS)
  solve ``u_i* = (sum_j v_j v_j^T + lambda n_i I)^-1 sum_j r_ij v_j`` against
  the current ``V`` (damped by ``step_size``), and every item one majorized
  Newton step with the scalar curvature bound
  ``h_j = sum_{i rated j} (|u_i|^2 + mu)`` (the trace bound: ``2 h_j`` bounds
  the item Hessian ``2 sum_i (u_i u_i^T + mu I)`` from above)::

      v_j <- v_j - step_size * g_j / (2 h_j),   g_j = sum_{i rated j} (-2 e_ij u_i + 2 mu v_j)

  with ``g_j`` taken at the *updated* users. With ``0 < step_size <= 1`` both
  half-steps minimize a majorizer of ``F_w``, so ``F_w`` never increases,
  whatever the rating counts or the rating scale: no learning rate to
  retune. An item no rating touches keeps its vector. The item regularizer
  is part of each rating's contribution, so the server only divides two sums
  (:func:`item_curvature_step`): :func:`precond_step` is the centralized
  reference; the federated version has the clients upload ``h`` next to
  ``g`` (summed by the same secure sum) and keeps the server stateless.
* ``"gd"``: the paper's full-batch gradient descent on ``F`` above (constant
  ``lambda``, ``mu``), eq. 3 and 4 applied to all rows at once with both
  gradients taken at the same ``(U, V)`` (:func:`gradient_step`);
  ``learning_rate`` must shrink as the heaviest user or item grows.

The federated version (:mod:`fedcast.shared.learning.fedmf`) reproduces either
step for step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from fedcast.shared.errors import ConfigurationError, DataError, TrainingDivergedError
from fedcast.shared.learning.data import FloatArray, IntArray, RatingData
from fedcast.shared.learning.metrics import mae, rmse

__all__ = [
    "DIVERGENCE_FACTOR",
    "OPTIMIZERS",
    "Evaluation",
    "MFConfig",
    "MFModel",
    "Optimizer",
    "check_divergence",
    "evaluate",
    "gradient_step",
    "init_model",
    "item_curvature_step",
    "item_gradient_and_curvature",
    "mf_gradients",
    "mf_loss",
    "precond_step",
    "residuals",
    "solve_users",
    "train_centralized",
]

Optimizer = Literal["precond", "gd"]
OPTIMIZERS: tuple[Optimizer, ...] = ("precond", "gd")

# Training stops with TrainingDivergedError once the training MSE exceeds this
# multiple of its first measured value (10x the RMSE): no sane MF run gets there.
DIVERGENCE_FACTOR = 100.0


@dataclass(frozen=True)
class MFConfig:
    """Hyper-parameters of (federated) MF; validated on construction (ConfigurationError).

    * ``latent_dim``: d, the length of every user and item vector.
    * ``optimizer``: ``"precond"`` (default, see the module docstring: exact
      per-user ridge solve, curvature-normalized item step; no learning rate to
      tune) or ``"gd"`` (the paper's eq. 3/4 gradient descent).
    * ``step_size``: ``precond`` only. Fraction of the user solve and of the
      majorized item Newton step taken per round, in (0, 1]; 1 is the full
      step, and every value in (0, 1] keeps the loss non-increasing.
    * ``learning_rate``: ``gd`` only. gamma of eq. 3/4; the stable value
      shrinks like 1 / (ratings of the heaviest user or item).
    * ``reg_user``, ``reg_item``: lambda and mu. With ``precond`` they are per
      rating (``F_w`` above: user ``i`` pays ``lambda n_i |u_i|^2``); with
      ``gd`` the paper's constants of eq. 2 (sum form). The default 0.08 was
      chosen on four data sets (light and dense synthetic, power-law,
      MovieLens 100K; docs/LEARNING.md); larger values pull the predictions
      towards 0, since the model has no bias terms.
    * ``epochs``: the number of full-batch steps (centralized) or rounds
      (federated).
    * ``local_steps``: how many user updates a client makes per round against
      the downloaded ``V`` (eq. 3 steps for ``gd``; damped solves for
      ``precond``, which with ``step_size = 1`` all give the same vector).
    * ``init_scale``, ``init_mean``: factors start as
      ``init_mean + init_scale * N(0, 1)`` per entry. The mean 0.8 makes
      ``<u_i, v_j>`` start near 3.2 with ``d = 5``, the middle of 1-5 star
      ratings, with ``|u| ~ |v|``. ``precond`` soon forgets the start, but the
      first uploads scale with it: against a small ``V`` the first user solve
      gives a large ``u`` (``|u| ~ r / |v|``), so with 0.3 the first item
      gradients were 3x larger (25 instead of 8 with two users per client),
      beyond a secure sum's clip bound. For zero-mean targets (FedMMF's masked
      ratings) use 0.
    * ``seed``: the initialization (and client sampling) seed.
    """

    latent_dim: int = 5
    learning_rate: float = 0.004
    reg_user: float = 0.08
    reg_item: float = 0.08
    epochs: int = 100
    local_steps: int = 1
    init_scale: float = 0.1
    init_mean: float = 0.8
    seed: int = 0
    optimizer: Optimizer = "precond"
    step_size: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigurationError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.latent_dim < 1:
            raise ConfigurationError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(self.step_size) and 0 < self.step_size <= 1):
            raise ConfigurationError(f"step_size must be in (0, 1], got {self.step_size}")
        for name, value in (("reg_user", self.reg_user), ("reg_item", self.reg_item)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be finite and >= 0, got {value}")
        # Eq. 9: u^{t+1} = (1 - 2 lambda gamma) u^t + ...; a factor <= 0 flips or kills u.
        if self.optimizer == "gd" and 2 * self.learning_rate * max(self.reg_user, self.reg_item) >= 1:
            raise ConfigurationError("need 2 * learning_rate * regularization < 1")
        if self.optimizer == "precond" and self.reg_user <= 0:
            raise ConfigurationError("optimizer 'precond' needs reg_user > 0 (the user solve is a ridge)")
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


def _reg_weights(data: RatingData, config: MFConfig) -> tuple[FloatArray, FloatArray]:
    """Per-row penalty weights: the rating counts ``n_i``, ``n_j`` (precond) or ones (gd)."""
    if config.optimizer == "gd":
        return np.ones(data.n_users), np.ones(data.n_items)
    n_u = np.bincount(data.users, minlength=data.n_users).astype(np.float64)
    n_v = np.bincount(data.items, minlength=data.n_items).astype(np.float64)
    return n_u, n_v


def mf_loss(model: MFModel, data: RatingData, config: MFConfig) -> float:
    """The objective the optimizer minimizes: ``F_w`` (precond) or ``F`` (gd), see above."""
    e = residuals(model, data)
    w_u, w_v = _reg_weights(data, config)
    reg = config.reg_user * float(w_u @ np.sum(model.user_factors**2, axis=1))
    reg += config.reg_item * float(w_v @ np.sum(model.item_factors**2, axis=1))
    return float(e @ e) + reg


def mf_gradients(model: MFModel, data: RatingData, config: MFConfig) -> tuple[FloatArray, FloatArray]:
    """Gradients of :func:`mf_loss` (eq. 5 and 6 for gd), both at the given ``(U, V)``.

    Row ``i`` of the first is ``-2 sum_j v_j e_ij + 2 lambda w_i u_i``, row ``j`` of
    the second ``-2 sum_i u_i e_ij + 2 mu w_j v_j``, with ``w`` the rating counts
    (precond) or 1 (gd). Scattered with ``np.add.at``.
    """
    e = residuals(model, data)
    u, v = model.user_factors, model.item_factors
    w_u, w_v = _reg_weights(data, config)
    grad_u = 2.0 * config.reg_user * w_u[:, None] * u
    grad_v = 2.0 * config.reg_item * w_v[:, None] * v
    np.add.at(grad_u, data.users, -2.0 * e[:, None] * v[data.items])
    np.add.at(grad_v, data.items, -2.0 * e[:, None] * u[data.users])
    return grad_u, grad_v


def gradient_step(model: MFModel, data: RatingData, config: MFConfig) -> MFModel:
    """One full-batch ``gd`` step: eq. 3 and 4 for every user and item simultaneously."""
    grad_u, grad_v = mf_gradients(model, data, config)
    gamma = config.learning_rate
    return MFModel(model.user_factors - gamma * grad_u, model.item_factors - gamma * grad_v)


def solve_users(
    user_factors: FloatArray,
    item_factors: FloatArray,
    rows: IntArray,
    items: IntArray,
    ratings: FloatArray,
    config: MFConfig,
) -> FloatArray:
    """The ``precond`` user update: damped exact ridge solve of every row of ``user_factors``.

    Rating ``n`` belongs to row ``rows[n]`` and item ``items[n]``. Row ``k`` with
    ``n_k`` ratings moves to ``u* + (1 - step_size)^local_steps (u_k - u*)`` with
    ``u* = (sum_n v_n v_n^T + lambda n_k I)^-1 sum_n r_n v_n`` over its ratings,
    i.e. ``local_steps`` damped solves against the fixed ``V``. Rows without
    ratings keep their vector. All rows in one batched solve.
    """
    n, d = user_factors.shape
    vi = item_factors[items]
    counts = np.bincount(rows, minlength=n).astype(np.float64)
    gram = _scatter(rows, np.einsum("nk,nl->nkl", vi, vi).reshape(-1, d * d), n).reshape(n, d, d)
    gram += (config.reg_user * np.maximum(counts, 1.0))[:, None, None] * np.eye(d)
    rhs = _scatter(rows, ratings[:, None] * vi, n)
    solved = np.linalg.solve(gram, rhs[..., None])[..., 0]
    target: FloatArray = np.where((counts > 0)[:, None], solved, user_factors)
    keep = (1.0 - config.step_size) ** config.local_steps
    if not keep:
        return target
    out: FloatArray = target + keep * (user_factors - target)
    return out


def item_gradient_and_curvature(
    user_factors: FloatArray,
    item_factors: FloatArray,
    rows: IntArray,
    items: IntArray,
    ratings: FloatArray,
    config: MFConfig,
) -> tuple[FloatArray, FloatArray, float]:
    """``(g, c, sse)``: the item gradient of ``F_w``, the per-coordinate curvature, ``sum e^2``.

    Over the given ratings (a client's: rating ``n`` by row ``rows[n]`` of
    item ``items[n]``): ``g`` is ``n_items x d`` with row
    ``j = sum_n (-2 e_n u_{rows[n]} + 2 mu v_j)``, the item's regularizer included
    per rating; ``c`` has ``n_items`` entries,
    ``c_j = sum_n (|u_{rows[n]}|^2 + mu) / d``: the curvature bound ``h_j``
    divided by ``d``, i.e. per *coordinate*, on the same per-value scale as
    the gradient entries, so a secure sum's clip bound suits both. Both are
    zero on items without ratings. What a client uploads under ``precond``.
    """
    n_items, d = item_factors.shape
    u = user_factors[rows]
    v = item_factors[items]
    e = ratings - np.einsum("nk,nk->n", u, v)
    mu = config.reg_item
    grad = _scatter(items, -2.0 * e[:, None] * u + 2.0 * mu * v, n_items)
    curvature = np.bincount(items, weights=(np.einsum("nk,nk->n", u, u) + mu) / d, minlength=n_items)
    return grad, curvature.astype(np.float64), float(e @ e)


def item_curvature_step(
    item_factors: FloatArray, gradient: FloatArray, curvature: FloatArray, config: MFConfig
) -> FloatArray:
    """The ``precond`` item update from the summed ``(g, c)``; the server's whole job.

    ``v_j - step_size * g_j / (2 d c_j)`` where ``c_j > 0`` (see
    :func:`item_gradient_and_curvature`; ``d c_j = h_j``). An item with
    ``c_j <= 0`` (no rating of it in this round, e.g. all its raters offline)
    keeps its vector. Needs no hyper-parameter besides ``step_size``: the
    regularizer came with the uploads.
    """
    v = item_factors
    c = np.asarray(curvature, dtype=np.float64).reshape(-1)
    g = np.asarray(gradient, dtype=np.float64).reshape(v.shape)
    rated = c > 0
    step = config.step_size * g / (2.0 * v.shape[1] * np.where(rated, c, 1.0))[:, None]
    out: FloatArray = np.where(rated[:, None], v - step, v)
    return out


def precond_step(model: MFModel, data: RatingData, config: MFConfig) -> MFModel:
    """One centralized ``precond`` round: users solve against ``V^t``, then the item step.

    The item gradient and curvature are taken at ``(U^{t+1}, V^t)`` (alternating
    order), which is exactly what a federated client uploads after its local
    update; :class:`fedcast.shared.learning.fedmf.FedMF` reproduces this step.
    """
    _check(model, data)
    u = solve_users(model.user_factors, model.item_factors, data.users, data.items, data.ratings, config)
    v = model.item_factors
    grad, curvature, _ = item_gradient_and_curvature(u, v, data.users, data.items, data.ratings, config)
    return MFModel(u, item_curvature_step(v, grad, curvature, config))


def check_divergence(mse: float, first_mse: float, round_index: int, *, what: str = "MF") -> None:
    """Raise :class:`TrainingDivergedError` on a non-finite or exploding training error.

    ``mse`` is the mean squared training error measured in round ``round_index``,
    ``first_mse`` the one of the first round; "exploding" is more than
    :data:`DIVERGENCE_FACTOR` times it.
    """
    if not math.isfinite(mse) or mse > DIVERGENCE_FACTOR * max(first_mse, 1e-12):
        raise TrainingDivergedError(
            f"{what} diverged in round {round_index}: training MSE {mse:.4g} "
            f"(first round {first_mse:.4g}); with optimizer='gd' lower learning_rate "
            "(it must shrink as the heaviest user/item grows) or use optimizer='precond'"
        )


def train_centralized(data: RatingData, config: MFConfig, *, model: MFModel | None = None) -> MFModel:
    """Centralized batch MF: ``config.epochs`` calls of :func:`precond_step` or :func:`gradient_step`.

    Starts from ``model`` or :func:`init_model`. This is the reference the
    federated version must match step for step. Raises
    :class:`TrainingDivergedError` when the loss stops being finite or explodes.
    """
    current = model if model is not None else init_model(data.n_users, data.n_items, config)
    step = precond_step if config.optimizer == "precond" else gradient_step
    n = max(data.n_ratings, 1)
    first = float(np.sum(residuals(current, data) ** 2)) / n
    check_divergence(first, first, 0)
    for epoch in range(1, config.epochs + 1):
        current = step(current, data, config)
        check_divergence(float(np.sum(residuals(current, data) ** 2)) / n, first, epoch)
    if not (np.all(np.isfinite(current.item_factors)) and np.all(np.isfinite(current.user_factors))):
        raise TrainingDivergedError("MF diverged: non-finite factors")
    return current


def _scatter(index: IntArray, values: FloatArray, n_rows: int) -> FloatArray:
    """``out[index[n]] += values[n]`` for a 2-D ``values``, as one bincount."""
    width = values.shape[1]
    flat = (index[:, None] * width + np.arange(width)[None, :]).reshape(-1)
    out = np.bincount(flat, weights=values.reshape(-1), minlength=n_rows * width)
    return out.reshape(n_rows, width).astype(np.float64)


def evaluate(model: MFModel, data: RatingData, *, offset: FloatArray | None = None) -> Evaluation:
    """RMSE / MAE of ``<u_i, v_j> (+ offset)`` against ``data.ratings``.

    ``offset`` adds a per-rating term to the prediction, e.g. the FedMMF mask of
    eq. 12.
    """
    prediction = model.predict(data.users, data.items)
    if offset is not None:
        prediction = prediction + offset
    return Evaluation(rmse=rmse(data.ratings, prediction), mae=mae(data.ratings, prediction))
