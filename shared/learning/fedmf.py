"""User-level federated matrix factorization (FedMF, paper sections 3.2 and 5, Algorithm 1).

Each client holds the ratings of one or more users and keeps their user vectors
private. The round depends on ``MFConfig.optimizer`` (see
:mod:`fedcast.shared.learning.mf`).

**precond** (default). Every online client downloads ``V^t``, solves its users'
ridge problems against it (:func:`fedcast.shared.learning.mf.solve_users`), and
uploads, at the *updated* users, the item gradient
``G_c[j] = sum_{i in c, (i,j) in M} (-2 e_ij u_i + 2 mu v_j)`` followed by the
per-coordinate item curvature ``C_c[j] = sum_{i in c, (i,j) in M} (|u_i|^2 + mu) / d``
(:func:`fedcast.shared.learning.mf.item_gradient_and_curvature`;
``n_items * (d + 1)`` values, all summed by the same secure sum). The server applies
:func:`fedcast.shared.learning.mf.item_curvature_step` to the sums. It keeps no
state besides ``V``, so a checkpoint is still just the model. A round with all
clients online equals :func:`fedcast.shared.learning.mf.precond_step`.

**gd** (the paper's Algorithm 1). Every online client

1. downloads the item profile ``V^t``;
2. computes, at the *current* ``(U^t, V^t)``, the data part of eq. 6 summed
   over its users, ``G_c[j] = -2 sum_{i in c, (i,j) in M} u_i^t e_ij`` (the
   upload), and
3. updates its user vectors with eq. 3 / eq. 5 (``local_steps`` times, against
   the fixed ``V^t``).

The server sums the uploads through a :class:`fedcast.shared.secure_sum.SecureSum` and
applies eq. 4, ``V^{t+1} = V^t - gamma (sum_c G_c + 2 mu V^t)``: the regularizer
is the server's, since it alone holds ``V``.

**Gradient convention.** Unlike a client that first updates ``u_i`` and then
differentiates, both gradients are taken at the same ``(U^t, V^t)``. With all
clients online, ``local_steps = 1`` and an exact float64 sum, a round is
therefore *identical* to one step of :func:`fedcast.shared.learning.mf.gradient_step`
(the tests check this to 1e-10). :class:`fedcast.shared.secure_sum.PlaintextSum`
sends float32 like a real unprotected deployment, so it matches to ~1e-6.

**Upload layout.** The upload is the full flattened ``n_items * d`` gradient in
item-major order ("FullText", section 6.1), then (``precond``) the ``n_items``
curvatures: zeros for unrated items, so the aggregator cannot tell which items
a client rated. (Without a secure sum, ``C_c`` would also reveal ``|u_i|^2`` of a
one-user client; through one, only sums over the online set are decrypted.) ``rated_items`` and
:meth:`ClientUpload.part_rows` give the "PartText" view (only the rated rows),
for benchmarks that encrypt fewer values; the learning result is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedcast.shared.errors import ConfigurationError, TrainingDivergedError
from fedcast.shared.learning.data import FloatArray, IntArray, RatingData
from fedcast.shared.learning.mf import (
    MFConfig,
    MFModel,
    check_divergence,
    init_model,
    item_curvature_step,
    item_gradient_and_curvature,
    solve_users,
)
from fedcast.shared.secure_sum import SecureSum

__all__ = [
    "ClientUpload",
    "FedMF",
    "FedMFClient",
    "FedMFRound",
    "RoundCallback",
    "RoundRecord",
    "scatter_part_text",
    "train_federated",
]


@dataclass(frozen=True, eq=False)
class ClientUpload:
    """What one client sends in one round (before the scheme encodes or encrypts it)."""

    client_id: int
    gradient: FloatArray  # FullText: (n_items * d,), item-major, zeros on unrated items
    rated_items: IntArray  # sorted distinct items rated by the client's users
    latent_dim: int
    curvature: FloatArray | None = None  # precond: (n_items,), sum of |u_i|^2 per item; gd: None
    local_sse: float = 0.0  # simulation diagnostic, never sent: sum e^2 over the client's ratings

    @property
    def vector(self) -> FloatArray:
        """What goes through the secure sum: the gradient, then (precond) the curvatures."""
        if self.curvature is None:
            return self.gradient
        return np.concatenate([self.gradient, self.curvature])

    def part_rows(self) -> FloatArray:
        """PartText: the ``len(rated_items) x d`` rows of the gradient that can be non-zero."""
        return self.gradient.reshape(-1, self.latent_dim)[self.rated_items]


def scatter_part_text(uploads: Sequence[ClientUpload], n_items: int) -> FloatArray:
    """Server-side PartText aggregation: add every client's rated rows into the full vector.

    Equals the sum of the FullText gradients, which is why PartText changes cost
    and leakage (it reveals ``rated_items``) but not the learned model.
    """
    if not uploads:
        raise ConfigurationError("need at least one upload")
    d = uploads[0].latent_dim
    total = np.zeros((n_items, d))
    for upload in uploads:
        np.add.at(total, upload.rated_items, upload.part_rows())
    return total.reshape(-1)


class FedMFClient:
    """One edge client: its users' ratings and their private user vectors."""

    def __init__(
        self,
        client_id: int,
        data: RatingData,
        users: IntArray,
        user_factors: FloatArray,
        config: MFConfig,
    ) -> None:
        self.client_id = client_id
        self.users = np.asarray(users, dtype=np.int64)
        self._config = config
        local = data.for_users(self.users)
        # Local row of each rating: position of its user within self.users.
        self._rows = np.searchsorted(self.users, local.users)
        self._items = local.items.copy()
        self._ratings = local.ratings.copy()
        self._n_items = data.n_items
        self._u = np.array(user_factors, dtype=np.float64, copy=True)
        self.rated_items = np.unique(self._items)

    @property
    def user_factors(self) -> FloatArray:
        """A copy of the private user vectors (row k belongs to ``users[k]``)."""
        return self._u.copy()

    def local_update(self, item_factors: FloatArray) -> ClientUpload:
        """Steps 2-3 of the round: item gradient at ``(U^t, V^t)``, then eq. 3 on ``u_i``."""
        upload, user_factors = self.compute_update(item_factors)
        self.commit(user_factors)
        return upload

    def compute_update(self, item_factors: FloatArray) -> tuple[ClientUpload, FloatArray]:
        """Like :meth:`local_update` but without changing this client's state.

        Returns the upload and the user vectors after the local steps; a service
        commits them (:meth:`commit`) only once the round completed, so a retried
        attempt recomputes from the same state and takes the same learning step.
        """
        cfg = self._config
        v = item_factors
        d = v.shape[1]
        u = self._u
        if cfg.optimizer == "precond":
            u = solve_users(u, v, self._rows, self._items, self._ratings, cfg)
            grad_v, curvature, sse = item_gradient_and_curvature(
                u, v, self._rows, self._items, self._ratings, cfg
            )
            upload = ClientUpload(
                self.client_id, grad_v.reshape(-1), self.rated_items, d, curvature=curvature, local_sse=sse
            )
            return upload, u
        e = self._ratings - np.einsum("nk,nk->n", u[self._rows], v[self._items])
        sse = float(e @ e)
        grad_v = np.zeros((self._n_items, d))
        np.add.at(grad_v, self._items, -2.0 * e[:, None] * u[self._rows])
        for step in range(cfg.local_steps):
            if step:  # step 0 reuses the residuals the item gradient was computed from
                e = self._ratings - np.einsum("nk,nk->n", u[self._rows], v[self._items])
            grad_u = 2.0 * cfg.reg_user * u
            np.add.at(grad_u, self._rows, -2.0 * e[:, None] * v[self._items])
            u = u - cfg.learning_rate * grad_u
        return ClientUpload(self.client_id, grad_v.reshape(-1), self.rated_items, d, local_sse=sse), u

    @property
    def n_ratings(self) -> int:
        """How many training ratings this client holds."""
        return int(self._ratings.size)

    def commit(self, user_factors: FloatArray) -> None:
        """Adopt the user vectors computed by :meth:`compute_update`."""
        if user_factors.shape != self._u.shape:
            raise ConfigurationError("user factors have the wrong shape")
        self._u = np.array(user_factors, dtype=np.float64, copy=True)


@dataclass(frozen=True, eq=False)
class RoundRecord:
    """One round as the simulation saw it (the aggregator itself only learns ``aggregate``)."""

    online: tuple[int, ...]
    item_factors: FloatArray  # V^t, the matrix the clients downloaded
    uploads: tuple[ClientUpload, ...]
    aggregate: FloatArray  # the summed item gradients (n_items * d)
    curvature: FloatArray | None = None  # precond: the summed curvatures (n_items); gd: None


class FedMF:
    """Server plus clients of FedMF, simulated in one process around a SecureSum."""

    def __init__(
        self,
        data: RatingData,
        partition: Sequence[IntArray],
        config: MFConfig,
        secure: SecureSum,
        *,
        init: MFModel | None = None,
    ) -> None:
        assigned = np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in partition]))
        if not np.array_equal(assigned, np.arange(data.n_users)):
            raise ConfigurationError("partition must assign every user to exactly one client")
        start = init if init is not None else init_model(data.n_users, data.n_items, config)
        if start.user_factors.shape != (data.n_users, config.latent_dim) or (
            start.item_factors.shape != (data.n_items, config.latent_dim)
        ):
            raise ConfigurationError("init model does not match data and latent_dim")
        self.config = config
        self.secure = secure
        self.n_items = data.n_items
        self._v = start.item_factors.copy()
        # The simulation hands each client its rows of the initial U; in a
        # deployment each client would draw them itself.
        self.clients = [
            FedMFClient(c, data, np.sort(users), start.user_factors[np.sort(users)], config)
            for c, users in enumerate(partition)
        ]

    @property
    def item_factors(self) -> FloatArray:
        """The server's current ``V`` (a copy)."""
        return self._v.copy()

    def run_round(self, online: Sequence[int] | None = None) -> RoundRecord:
        """One round of Algorithm 1 with the clients in ``online`` (default: all)."""
        ids = tuple(range(len(self.clients))) if online is None else tuple(online)
        if not ids or len(set(ids)) != len(ids) or not all(0 <= c < len(self.clients) for c in ids):
            raise ConfigurationError(f"invalid online set {ids}")
        v_t = self._v.copy()
        uploads = tuple(self.clients[c].local_update(v_t) for c in ids)
        summed = np.asarray(self.secure.sum([u.vector for u in uploads]), dtype=np.float64)
        cfg = self.config
        n_grad = self._v.size
        aggregate = summed[:n_grad]
        if cfg.optimizer == "precond":
            curvature = summed[n_grad:]
            self._v = item_curvature_step(v_t, aggregate, curvature, cfg)
            return RoundRecord(ids, v_t, uploads, aggregate, curvature)
        grad_v = aggregate.reshape(self._v.shape) + 2.0 * cfg.reg_item * v_t
        self._v = v_t - cfg.learning_rate * grad_v
        return RoundRecord(ids, v_t, uploads, aggregate)

    def model(self) -> MFModel:
        """Assemble ``(U, V)``: only possible in a simulation, U never leaves the clients."""
        n_users = sum(client.users.size for client in self.clients)
        u = np.zeros((n_users, self.config.latent_dim))
        for client in self.clients:
            u[client.users] = client.user_factors
        return MFModel(u, self.item_factors)


@dataclass(frozen=True)
class FedMFRound:
    """Progress of one :func:`train_federated` round, handed to its ``on_round`` callback.

    ``train_sse`` is the squared-error sum over the online clients' training
    ratings at the point their uploads were computed (``(U^{t+1}, V^t)`` for
    ``precond``, ``(U^t, V^t)`` for ``gd``), summed in the simulation from the
    clients' own diagnostics (a deployment's aggregator never sees it).
    ``clipped`` is ``secure.last_round.clipped_values``: how many uploaded values
    the scheme's encoding clipped this round (0 for plaintext sums). ``model`` is
    ``(U, V)`` after the round, assembled by the simulation (for evaluation).
    """

    round: int  # 1-based
    n_online: int
    n_ratings: int  # training ratings of the online clients
    train_sse: float
    seconds: float
    clipped: int
    model: MFModel

    @property
    def train_rmse(self) -> float:
        """``sqrt(train_sse / n_ratings)`` (NaN when no online client holds a rating)."""
        return math.sqrt(self.train_sse / self.n_ratings) if self.n_ratings else math.nan


RoundCallback = Callable[[FedMFRound], None]


def train_federated(
    data: RatingData,
    partition: Sequence[IntArray],
    config: MFConfig,
    secure: SecureSum,
    *,
    online_fraction: float = 1.0,
    min_online: int = 1,
    init: MFModel | None = None,
    on_round: RoundCallback | None = None,
) -> MFModel:
    """Run ``config.epochs`` FedMF rounds and return the (simulation-assembled) model.

    With ``online_fraction < 1`` each round samples that share of clients
    (at least ``min_online``, or every client when there are fewer) with a
    Generator seeded from ``config.seed``. After every
    round ``on_round`` (if given) receives a :class:`FedMFRound`. Raises
    :class:`fedcast.shared.errors.TrainingDivergedError` as soon as the training
    squared-error sum is non-finite or exceeds
    :data:`fedcast.shared.learning.mf.DIVERGENCE_FACTOR` times the first round's
    (per rating, so partial rounds compare fairly), or ``V`` stops being finite.
    """
    if not 0.0 < online_fraction <= 1.0:
        raise ConfigurationError(f"online_fraction must be in (0, 1], got {online_fraction}")
    fed = FedMF(data, partition, config, secure, init=init)
    rng = np.random.default_rng([config.seed, 1])
    n_clients = len(fed.clients)
    if min_online < 1:
        raise ConfigurationError(f"min_online must be >= 1, got {min_online}")
    n_online = max(min(min_online, n_clients), round(online_fraction * n_clients))
    first_mse: float | None = None
    for round_index in range(1, config.epochs + 1):
        start = time.perf_counter()
        online = None
        if n_online < n_clients:
            online = sorted(int(c) for c in rng.choice(n_clients, n_online, replace=False))
        record = fed.run_round(online)
        n_ratings = sum(fed.clients[c].n_ratings for c in record.online)
        sse = float(sum(u.local_sse for u in record.uploads))
        if n_ratings:
            mse = sse / n_ratings
            first_mse = mse if first_mse is None else first_mse
            check_divergence(mse, first_mse, round_index, what="FedMF")
        if not np.all(np.isfinite(fed.item_factors)):
            raise TrainingDivergedError(f"FedMF diverged in round {round_index}: item factors not finite")
        if on_round is not None:
            clipped = int(getattr(secure.last_round, "clipped_values", 0))
            seconds = time.perf_counter() - start
            online_count = len(record.online)
            on_round(FedMFRound(round_index, online_count, n_ratings, sse, seconds, clipped, fed.model()))
    return fed.model()
