"""The gradient leakage attack on plaintext FedMF (FedMF paper section 4, eq. 7-25).

An honest-but-curious server that reads one user's item-gradient uploads from
two consecutive participations, together with the item matrices it published
for them (``V^t``, ``V^{t+1}``) and the public hyper-parameters, recovers which
items the user rated and the ratings themselves.

With fedcast's upload ``G_j = -2 e_j u`` (see :mod:`fedcast.shared.learning.fedmf`;
the paper's eq. 7 omits the constant ``-2``) the paper's steps become:

* eq. 7/10: every non-zero row of ``G^t`` is a multiple of ``u^t``; the non-zero
  rows are the rated items (FullText zeros are exact). So ``G^t`` has rank 1,
  ``u^t = s w`` with ``w`` its top right singular vector and one unknown scalar
  ``s`` (eq. 13 says the same coordinate by coordinate), and
  ``e_j = alpha_j / s`` with ``alpha_j = -(G_j . w) / 2`` (eq. 14).
* eq. 9/16: ``u^{t+1} = (1 - 2 gamma lambda) s w + (2 gamma / s) b`` with the
  known ``b = sum_j alpha_j v_j^t``; and ``u^{t+1} = s' w'`` from ``G^{t+1}``.
* eq. 17-24 eliminate the unknowns to one scalar equation solved by Newton's
  method. Here the same constraint is linear: ``c1 w + c2 b - s' w' = 0`` with
  ``c1 = (1 - 2 gamma lambda) s`` and ``c2 = 2 gamma / s``. Its least-squares
  null vector (SVD) fixes ``(c1, c2, s')`` up to scale, and
  ``c1 c2 = 2 gamma (1 - 2 gamma lambda)`` fixes the scale up to sign.
* eq. 25: ``r_j = alpha_j / s + s <w, v_j^t>``.

The data itself only determines ``(u, r)`` up to a joint sign flip (``-u``,
``-r`` give identical uploads), so the attacker picks the sign whose ratings fit
the public rating range. Needs ``d >= 2`` and one user per client with
``local_steps == 1`` (the paper's setting); several users per client already
make the upload a sum.

Under a secure scheme the server decrypts only sums over online sets of at
least two clients; :func:`isolated_uploads` makes that precondition explicit.

The default ``precond`` optimizer leaks even more in plaintext: a one-user
upload carries ``G_j = -2 e_j u + 2 mu v_j`` *and* ``c_j = (|u|^2 + mu) / d`` on
the rated items,
so ``u`` is known up to sign from a single round and
:func:`precond_leakage_attack` reads the ratings off one upload. That is why
FedMF uploads must only ever be seen summed (a secure scheme).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.data import FloatArray, IntArray
from fedcast.shared.learning.fedmf import RoundRecord
from fedcast.shared.learning.mf import MFConfig

__all__ = [
    "AggregatorView",
    "AttackResult",
    "attack_feasible",
    "gradient_leakage_attack",
    "isolated_uploads",
    "precond_leakage_attack",
    "recovery_rmse",
]


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Recovered data of one user and two self-checks the server can compute alone.

    ``consistency`` is the relative disagreement of the ratings implied by round
    ``t`` and by round ``t+1`` (about 1e-12 for a genuine single-user pair).
    ``rank_one_ratio`` is ``sigma_2 / sigma_1`` of the round-``t`` upload: 0 for one
    user, clearly positive for a sum of several users' gradients.
    """

    rated_items: IntArray
    ratings: FloatArray
    user_vector: FloatArray
    consistency: float
    rank_one_ratio: float


def _rank_one(rows: FloatArray) -> tuple[FloatArray, FloatArray, float]:
    """``rows ~ alpha_raw (x) w``: returns ``(w, rows @ w, sigma_2 / sigma_1)``."""
    _, sigma, vt = np.linalg.svd(rows, full_matrices=False)
    ratio = float(sigma[1] / sigma[0]) if sigma.size > 1 and sigma[0] > 0 else 0.0
    w = vt[0]
    return w, rows @ w, ratio


def gradient_leakage_attack(
    upload_t: ArrayLike,
    upload_next: ArrayLike,
    item_factors_t: ArrayLike,
    item_factors_next: ArrayLike,
    config: MFConfig,
    *,
    rating_range: tuple[float, float] = (1.0, 5.0),
    zero_tol: float = 1e-12,
) -> AttackResult:
    """Recover a user's rated items and ratings from two consecutive plaintext uploads.

    ``upload_*`` are the flattened FullText gradients (``n_items * d``),
    ``item_factors_*`` the ``V`` the user downloaded in those two rounds;
    ``config`` supplies ``gamma`` (learning rate) and ``lambda`` (reg_user);
    it must be ``optimizer="gd"`` (the update rule eq. 9 the attack inverts).
    """
    v_t = np.asarray(item_factors_t, dtype=np.float64)
    v_next = np.asarray(item_factors_next, dtype=np.float64)
    n_items, d = v_t.shape
    if d < 2 or v_next.shape != v_t.shape:
        raise ConfigurationError("the attack needs matching item matrices with d >= 2")
    if config.optimizer != "gd":
        raise ConfigurationError("the attack models the paper's gradient descent (optimizer='gd')")
    if config.local_steps != 1:
        raise ConfigurationError("the attack models one local user step per round")
    g_t = np.asarray(upload_t, dtype=np.float64).reshape(n_items, d)
    g_next = np.asarray(upload_next, dtype=np.float64).reshape(n_items, d)

    scale = max(float(np.abs(g_t).max()), np.finfo(float).tiny)
    rated = np.flatnonzero(np.abs(g_t).max(axis=1) > zero_tol * scale)
    if rated.size == 0:
        raise ConfigurationError("the upload is all zeros: nothing to recover")
    w, proj, ratio = _rank_one(g_t[rated])
    w_next, proj_next, _ = _rank_one(g_next[rated])
    alpha, alpha_next = -0.5 * proj, -0.5 * proj_next
    b = v_t[rated].T @ alpha

    gamma, lam = config.learning_rate, config.reg_user
    shrink = 1.0 - 2.0 * gamma * lam
    system = np.column_stack([w, b, -w_next])
    null = np.linalg.svd(system)[2][-1]  # least-squares solution of system @ n = 0, |n| = 1
    product = float(null[0] * null[1])
    if product <= 0:  # no single user fits both uploads: keep going, consistency will show it
        product = max(abs(product), float(np.finfo(np.float64).tiny))
    k = np.sqrt(2.0 * gamma * shrink / product)

    best: tuple[float, FloatArray, FloatArray, float] | None = None
    lo, hi = rating_range
    for sign in (1.0, -1.0):
        s = sign * k * null[0] / shrink
        s_next = sign * k * null[2]
        ratings = alpha / s + s * (v_t[rated] @ w)
        ratings_next = alpha_next / s_next + s_next * (v_next[rated] @ w_next)
        outside = float(np.sum(np.maximum(lo - ratings, 0) + np.maximum(ratings - hi, 0)))
        norm = max(float(np.linalg.norm(ratings)), 1e-300)
        gap = float(np.linalg.norm(ratings - ratings_next)) / norm
        if best is None or outside < best[0]:
            best = (outside, ratings, s * w, gap)
    assert best is not None  # the loop ran
    return AttackResult(rated, best[1], best[2], best[3], ratio)


def precond_leakage_attack(
    gradient: ArrayLike,
    curvature: ArrayLike,
    item_factors: ArrayLike,
    config: MFConfig,
    *,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> AttackResult:
    """Ratings of one user from a *single* plaintext ``precond`` upload.

    The rated items are where ``c_j > 0``; there ``d c_j - mu = |u|^2`` gives
    ``|u|``, the top right singular vector ``w`` of the data part
    ``G_j - 2 mu v_j = -2 e_j u`` gives ``u = +-|u| w``, then
    ``e_j = -(G_j - 2 mu v_j) . u / (2 |u|^2)`` and ``r_j = e_j + <u, v_j>``
    (``V`` is the matrix the user downloaded, ``mu`` the public ``reg_item``).
    The sign is the one whose ratings fit ``rating_range``. ``consistency``
    is the spread of ``|u|^2`` over the rated items relative to its mean (0
    for one user; a sum of several users' uploads is not constant).
    """
    v = np.asarray(item_factors, dtype=np.float64)
    n_items, d = v.shape
    if d < 2:
        raise ConfigurationError("the attack needs d >= 2")
    mu = config.reg_item
    g = np.asarray(gradient, dtype=np.float64).reshape(n_items, d)
    c = np.asarray(curvature, dtype=np.float64).reshape(n_items)
    rated = np.flatnonzero(c > 0)
    if rated.size == 0:
        raise ConfigurationError("the upload has no positive curvature: nothing to recover")
    g = g.copy()
    g[rated] -= 2.0 * mu * v[rated]  # one user: one rating, one regularizer share per rated item
    norms = d * c[rated] - mu
    norm2 = float(np.mean(norms))
    w, _, ratio = _rank_one(g[rated])
    best: tuple[float, FloatArray, FloatArray] | None = None
    lo, hi = rating_range
    for sign in (1.0, -1.0):
        u = sign * np.sqrt(norm2) * w
        ratings = -(g[rated] @ u) / (2.0 * norm2) + v[rated] @ u
        outside = float(np.sum(np.maximum(lo - ratings, 0) + np.maximum(ratings - hi, 0)))
        if best is None or outside < best[0]:
            best = (outside, ratings, u)
    assert best is not None  # the loop ran
    spread = float(np.std(norms) / max(norm2, 1e-300))
    return AttackResult(rated, best[1], best[2], spread, ratio)


def recovery_rmse(result: AttackResult, items: ArrayLike, ratings: ArrayLike) -> float:
    """RMSE of the recovered ratings on the user's true ``items``; ``inf`` if an item was missed."""
    true_items = np.asarray(items, dtype=np.int64)
    true_ratings = np.asarray(ratings, dtype=np.float64)
    position = np.searchsorted(result.rated_items, true_items)
    position = np.minimum(position, result.rated_items.size - 1)
    if not np.array_equal(result.rated_items[position], true_items):
        return float("inf")
    return float(np.sqrt(np.mean((result.ratings[position] - true_ratings) ** 2)))


@dataclass(frozen=True, eq=False)
class AggregatorView:
    """What the aggregator holds after one round: the online set, the sum, and any single upload."""

    online: tuple[int, ...]
    aggregate: FloatArray
    item_factors: FloatArray
    per_client: Mapping[int, FloatArray] = field(default_factory=dict)

    @classmethod
    def plaintext(cls, record: RoundRecord) -> AggregatorView:
        """Unprotected FedMF: the server receives every client's upload in the clear."""
        uploads = {u.client_id: u.gradient for u in record.uploads}
        return cls(record.online, record.aggregate, record.item_factors, uploads)

    @classmethod
    def secure(cls, record: RoundRecord) -> AggregatorView:
        """A secure scheme: the server only decrypts the sum over the online set."""
        return cls(record.online, record.aggregate, record.item_factors)


def isolated_uploads(views: Sequence[AggregatorView], client: int) -> list[int]:
    """Indices of the views in which the server can read ``client``'s upload on its own.

    That is the case if the upload was received in the clear, or if the decrypted
    aggregate covers ``client`` alone (an online set of size 1, which the secure
    schemes refuse with ``OnlineSetTooSmallError``). An aggregate over two or more
    clients is a sum of rank-1 gradients, the structure eq. 13 relies on is gone.
    This checks the server's inputs only; it is no proof about the crypto itself.
    """
    return [
        index for index, view in enumerate(views) if client in view.per_client or view.online == (client,)
    ]


def attack_feasible(views: Sequence[AggregatorView], client: int) -> bool:
    """True iff the server holds ``client``'s isolated uploads from two consecutive participations."""
    participations = [index for index, view in enumerate(views) if client in view.online]
    isolated = set(isolated_uploads(views, client))
    return any(
        first in isolated and second in isolated for first, second in itertools.pairwise(participations)
    )
