"""Rating data: the container, a seeded synthetic IIoT generator, splits and partitions.

A data set is a sparse users x items rating matrix stored as three aligned index
arrays (``users``, ``items``, ``ratings``), the FedMF paper's set of observed pairs
``M`` with values ``r_ij`` (section 3.1). In the IIoT reading of the VFL-HMF paper
a *user* is a production line / edge node and an *item* is a part type or casting
batch; the "rating" is a quality score the line measured for that part.

Loaders for the MovieLens formats live in :mod:`fedcast.shared.learning.loaders`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedcast.shared.errors import ConfigurationError, DataError

__all__ = [
    "FloatArray",
    "IntArray",
    "PartitionScheme",
    "PowerLawConfig",
    "RatingData",
    "SyntheticConfig",
    "make_power_law",
    "make_synthetic",
    "partition_users",
    "train_test_split",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
PartitionScheme = Literal["iid", "by_activity", "size_skewed"]


def _readonly(array: NDArray[np.generic]) -> NDArray[np.generic]:
    # Frozen dataclasses only freeze the attribute bindings; freezing the buffers
    # too means a data set can be shared between a client and a test without copies.
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


def _index_array(values: ArrayLike, name: str) -> IntArray:
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name} must be a 1-D integer array, got {array.dtype} shape {array.shape}")
    return array.astype(np.int64)


def _feature_array(values: ArrayLike | None, rows: int, name: str) -> FloatArray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != rows:
        raise DataError(f"{name} must have shape ({rows}, k), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains non-finite values")
    return array


@dataclass(frozen=True, eq=False)
class RatingData:
    """Observed ratings ``r_ij`` for pairs ``(i, j)`` in ``M`` (FedMF section 3.1).

    ``users[k]``, ``items[k]``, ``ratings[k]`` describe the k-th observed rating.
    ``user_features`` (n_users x f_u) and ``item_features`` (n_items x f_i) are
    optional side information, as used by the FedMMF private models (section 3.2).
    All arrays are stored as read-only copies. Each (user, item) pair appears at
    most once: a duplicate would be counted twice by the MF gradients.
    """

    users: IntArray
    items: IntArray
    ratings: FloatArray
    n_users: int
    n_items: int
    user_features: FloatArray | None = None
    item_features: FloatArray | None = None

    def __post_init__(self) -> None:
        users = _index_array(self.users, "users")
        items = _index_array(self.items, "items")
        ratings = np.asarray(self.ratings, dtype=np.float64).reshape(-1)
        if not (users.shape == items.shape == ratings.shape):
            raise DataError(
                f"users, items, ratings differ in length: {users.size}, {items.size}, {ratings.size}"
            )
        if self.n_users < 1 or self.n_items < 1:
            raise DataError(f"need n_users, n_items >= 1, got {self.n_users}, {self.n_items}")
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise DataError(f"user index out of range [0, {self.n_users})")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise DataError(f"item index out of range [0, {self.n_items})")
        if not np.all(np.isfinite(ratings)):
            raise DataError("ratings contain non-finite values")
        if np.unique(users * self.n_items + items).size != users.size:
            raise DataError("a (user, item) pair is rated more than once")
        user_features = _feature_array(self.user_features, self.n_users, "user_features")
        item_features = _feature_array(self.item_features, self.n_items, "item_features")
        object.__setattr__(self, "users", _readonly(users))
        object.__setattr__(self, "items", _readonly(items))
        object.__setattr__(self, "ratings", _readonly(ratings))
        for name, value in (("user_features", user_features), ("item_features", item_features)):
            object.__setattr__(self, name, None if value is None else _readonly(value))

    @property
    def n_ratings(self) -> int:
        """``M = |M|``, the number of observed ratings."""
        return int(self.ratings.size)

    def user_counts(self) -> IntArray:
        """Number of ratings of every user (zeros included)."""
        return np.bincount(self.users, minlength=self.n_users).astype(np.int64)

    def select(self, keep: ArrayLike) -> RatingData:
        """The ratings picked by a boolean mask or index array; sizes and features unchanged."""
        keep = np.asarray(keep)
        return dataclasses.replace(
            self, users=self.users[keep], items=self.items[keep], ratings=self.ratings[keep]
        )

    def with_ratings(self, ratings: ArrayLike) -> RatingData:
        """The same (user, item) pairs with new values (e.g. FedMMF masked ratings, eq. 11)."""
        return dataclasses.replace(self, ratings=np.asarray(ratings, dtype=np.float64))

    def for_users(self, users: ArrayLike) -> RatingData:
        """Only the ratings of ``users`` (global indices kept): one client's local data."""
        return self.select(np.isin(self.users, np.asarray(users, dtype=np.int64)))


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the synthetic IIoT quality-score data (see :func:`make_synthetic`).

    ``feature_strength`` is the standard deviation of the part of the score that
    the side features explain, relative to the low-rank latent part (default 1.5:
    process and part parameters explain most of the score).
    ``activity_skew`` is the log-normal spread of ratings per line (0: all equal);
    ``popularity_skew`` the log-normal spread of how often a part type is measured.
    """

    n_users: int = 48
    n_items: int = 60
    rank: int = 3
    ratings_per_user: int = 30
    activity_skew: float = 0.3
    popularity_skew: float = 0.5
    noise: float = 0.25
    n_user_features: int = 4
    n_item_features: int = 5
    feature_strength: float = 1.5
    rating_min: float = 1.0
    rating_max: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "rank": self.rank,
            "ratings_per_user": self.ratings_per_user,
            "n_user_features": self.n_user_features,
            "n_item_features": self.n_item_features,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {value}")
        for name, fvalue in (
            ("activity_skew", self.activity_skew),
            ("popularity_skew", self.popularity_skew),
            ("noise", self.noise),
            ("feature_strength", self.feature_strength),
        ):
            if not (math.isfinite(fvalue) and fvalue >= 0):
                raise ConfigurationError(f"{name} must be finite and >= 0, got {fvalue}")
        if not (math.isfinite(self.rating_min) and self.rating_min < self.rating_max < math.inf):
            raise ConfigurationError("need finite rating_min < rating_max")
        if self.seed < 0:
            raise ConfigurationError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)
class _GroundTruth:
    """The hidden parameters of the synthetic generators: side features ``x`` (users) and ``y``
    (items), a feature model ``a``, ``b``, ``W`` and latent factors ``p``, ``q``."""

    x: FloatArray
    y: FloatArray
    a: FloatArray
    b: FloatArray
    w: FloatArray
    p: FloatArray
    q: FloatArray

    @classmethod
    def draw(
        cls, rng: np.random.Generator, nu: int, ni: int, n_user_features: int, n_item_features: int, rank: int
    ) -> _GroundTruth:
        return cls(
            rng.standard_normal((nu, n_user_features)),
            rng.standard_normal((ni, n_item_features)),
            rng.standard_normal(n_user_features),
            rng.standard_normal(n_item_features),
            rng.standard_normal((n_user_features, n_item_features)),
            rng.standard_normal((nu, rank)),
            rng.standard_normal((ni, rank)),
        )

    def signal(self, users: IntArray, items: IntArray, feature_strength: float) -> FloatArray:
        """Per pair: the feature part (weighted ``feature_strength``) plus the latent part,
        each scaled to unit standard deviation, the sum scaled to unit standard deviation."""
        xu, yi = self.x[users], self.y[items]
        feature_part = xu @ self.a + yi @ self.b + np.einsum("nf,fg,ng->n", xu, self.w, yi)
        latent_part = np.einsum("nk,nk->n", self.p[users], self.q[items])
        signal = feature_strength * feature_part / max(float(feature_part.std()), 1e-12)
        signal = signal + latent_part / max(float(latent_part.std()), 1e-12)
        out: FloatArray = signal / max(float(signal.std()), 1e-12)
        return out

    def rating_data(self, users: IntArray, items: IntArray, ratings: FloatArray) -> RatingData:
        """The generated pairs and ratings, with these users' and items' side features."""
        return RatingData(
            users=users.astype(np.int64),
            items=items.astype(np.int64),
            ratings=ratings,
            n_users=len(self.x),
            n_items=len(self.y),
            user_features=self.x,
            item_features=self.y,
        )


def make_synthetic(config: SyntheticConfig | None = None) -> RatingData:
    """Seeded synthetic IIoT data: quality scores of parts (items) per production line (users).

    Score of line ``u`` for part ``i`` (before the affine map to the rating range)::

        s_ui = strength * [x_u.a + y_i.b + x_u^T W y_i] + <p_u, q_i> + noise

    ``x_u`` (line features: machine age, temperature, ...) and ``y_i`` (part
    features: alloy, wall thickness, ...) are standard normal side features; both
    parts of the signal are scaled to unit standard deviation before mixing.
    For one line the feature part is ``c_u + (b + W^T x_u).y_i``: exactly a private
    linear model on the part features, which is what a FedMMF one-order mask can
    learn from the line's own ratings, while ``<p_u, q_i>`` needs collaboration.
    Which parts a line measured is drawn without replacement with a per-part
    popularity (Gumbel top-k), so every pair appears once. Deterministic in ``seed``.
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    nu, ni = cfg.n_users, cfg.n_items
    truth = _GroundTruth.draw(rng, nu, ni, cfg.n_user_features, cfg.n_item_features, cfg.rank)

    counts = np.rint(cfg.ratings_per_user * rng.lognormal(0.0, cfg.activity_skew, nu))
    counts = np.clip(counts, 2, ni).astype(np.int64)
    # Gumbel top-k: the k largest of (log-popularity + Gumbel noise) is a draw of k
    # distinct items with probability proportional to popularity, for all lines at once.
    keys = cfg.popularity_skew * rng.standard_normal(ni)[None, :] + rng.gumbel(size=(nu, ni))
    position = np.argsort(np.argsort(-keys, axis=1), axis=1)
    users, items = np.nonzero(position < counts[:, None])

    signal = truth.signal(users, items, cfg.feature_strength)
    # Map to the rating range: centre in the middle, +-2.5 std spans the range,
    # so clipping only touches the tails.
    centre = 0.5 * (cfg.rating_min + cfg.rating_max)
    scale = (cfg.rating_max - cfg.rating_min) / 5.0
    ratings = centre + scale * signal + cfg.noise * rng.standard_normal(users.size)
    ratings = np.clip(ratings, cfg.rating_min, cfg.rating_max)
    return truth.rating_data(users, items, ratings)


@dataclass(frozen=True)
class PowerLawConfig:
    """Shape of heavy-tailed rating data (see :func:`make_power_law`).

    Ratings per user are log-normal (median ``median_ratings``, log-spread
    ``activity_sigma``, at least ``min_ratings``), and the ``len(heavy_users)``
    most active users get exactly the counts in ``heavy_users`` (by default
    800, 760, 720: the MovieLens-like heavy raters a fixed learning rate trips
    over). Item popularity follows a Zipf law with exponent ``item_exponent``,
    so the most popular items collect hundreds of ratings. The signal is the
    same mix as :class:`SyntheticConfig` (side features plus a rank-``rank``
    latent part, ``feature_strength`` relative weight), mapped to
    ``[rating_min, rating_max]`` around ``rating_mean`` and, with
    ``integer_ratings``, rounded to whole stars like MovieLens.
    """

    n_users: int = 1000
    n_items: int = 1000
    rank: int = 3
    median_ratings: int = 25
    activity_sigma: float = 1.1
    min_ratings: int = 5
    heavy_users: tuple[int, ...] = (800, 760, 720)
    item_exponent: float = 1.0
    noise: float = 0.5
    n_user_features: int = 4
    n_item_features: int = 5
    feature_strength: float = 1.0
    rating_mean: float = 3.5
    rating_spread: float = 0.9
    rating_min: float = 1.0
    rating_max: float = 5.0
    integer_ratings: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "rank", "median_ratings", "min_ratings"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_user_features", "n_item_features"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be >= 1")
        if len(self.heavy_users) > self.n_users or any(not 1 <= c <= self.n_items for c in self.heavy_users):
            raise ConfigurationError("heavy_users: at most n_users counts, each in [1, n_items]")
        if self.min_ratings > self.n_items:
            raise ConfigurationError("min_ratings exceeds n_items")
        for name in ("activity_sigma", "item_exponent", "noise", "feature_strength", "rating_spread"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(self.rating_min) and self.rating_min < self.rating_max < math.inf):
            raise ConfigurationError("need finite rating_min < rating_max")
        if not math.isfinite(self.rating_mean):
            raise ConfigurationError("rating_mean must be finite")
        if self.seed < 0:
            raise ConfigurationError(f"seed must be >= 0, got {self.seed}")


def make_power_law(config: PowerLawConfig | None = None) -> RatingData:
    """Seeded heavy-tailed rating data: a few users with 700+ ratings, items with 500+.

    This is the shape of real rating logs (MovieLens 100K: heaviest user 737
    ratings, heaviest item 583) on which a fixed MF learning rate tuned on
    light data diverges. Which items a user rated is a Gumbel top-k draw with
    Zipf popularity weights (every pair at most once); the score is
    ``strength * [x_u.a + y_i.b + x_u^T W y_i] + <p_u, q_i>`` standardized, then
    ``rating_mean + rating_spread * score + noise``, clipped (and rounded).
    Carries the side features ``x_u``, ``y_i``. Deterministic in ``seed``.
    """
    cfg = config or PowerLawConfig()
    rng = np.random.default_rng(cfg.seed)
    nu, ni = cfg.n_users, cfg.n_items
    counts = np.rint(cfg.median_ratings * rng.lognormal(0.0, cfg.activity_sigma, nu))
    counts = np.clip(counts, cfg.min_ratings, ni).astype(np.int64)
    if cfg.heavy_users:
        counts[np.argsort(-counts, kind="stable")[: len(cfg.heavy_users)]] = cfg.heavy_users
    log_popularity = -cfg.item_exponent * np.log(rng.permutation(ni) + 1.0)
    keys = log_popularity[None, :] + rng.gumbel(size=(nu, ni))
    position = np.argsort(np.argsort(-keys, axis=1), axis=1)
    users, items = np.nonzero(position < counts[:, None])

    truth = _GroundTruth.draw(rng, nu, ni, cfg.n_user_features, cfg.n_item_features, cfg.rank)
    signal = truth.signal(users, items, cfg.feature_strength)
    ratings = cfg.rating_mean + cfg.rating_spread * signal + cfg.noise * rng.standard_normal(users.size)
    if cfg.integer_ratings:
        ratings = np.rint(ratings)
    ratings = np.clip(ratings, cfg.rating_min, cfg.rating_max)
    return truth.rating_data(users, items, ratings)


def train_test_split(
    data: RatingData, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[RatingData, RatingData]:
    """Per-user hold-out: ``min(round(test_fraction * n_u), n_u - 1)`` random ratings of every user ``u``.

    As in the FedMF evaluation (section 6.2) every user is split on its own, so
    light and heavy users are represented in the test set in proportion, and
    every user keeps at least one training rating: a user with a single
    rating keeps it in train; a user with ``n_u >= 2`` ratings has at least
    one in train (and one in test once ``test_fraction * n_u >= 0.5``).
    Items are not balanced: an item rated once may land in test only, and
    is then predicted from its initial vector. Which ratings are held out is
    a uniform draw per user from ``numpy.random.default_rng(seed)`` (the same
    seed gives the same split on the same data). Returns ``(train, test)``;
    together they are exactly ``data``.
    """
    if not (math.isfinite(test_fraction) and 0.0 <= test_fraction < 1.0):
        raise ConfigurationError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    counts = data.user_counts()
    n_test = np.minimum(np.floor(test_fraction * counts + 0.5), np.maximum(counts - 1, 0))
    # Sort by (user, random key); a rating's rank within its user's block decides.
    order = np.lexsort((rng.random(data.n_ratings), data.users))
    starts = np.cumsum(counts) - counts
    sorted_users = data.users[order]
    rank = np.arange(data.n_ratings) - starts[sorted_users]
    is_test = np.zeros(data.n_ratings, dtype=bool)
    is_test[order] = rank < n_test[sorted_users]
    return data.select(~is_test), data.select(is_test)


def partition_users(
    data: RatingData,
    *,
    users_per_client: int = 1,
    scheme: PartitionScheme = "iid",
    seed: int = 0,
) -> list[IntArray]:
    """Assign every user to exactly one client (VFL-HMF Algorithm 1, step 1).

    ``iid``: random order, ``users_per_client`` per client (the last may hold
    fewer). ``by_activity``: contiguous blocks of users sorted by rating count,
    most active first, so clients differ systematically in data volume.
    ``size_skewed``: ``ceil(n_users / users_per_client)`` clients whose sizes follow
    a Dirichlet(0.5) draw (each at least one user), random membership.
    With ``users_per_client=1`` every scheme gives the FedMF one-user-per-client layout.
    """
    if users_per_client < 1:
        raise ConfigurationError(f"users_per_client must be >= 1, got {users_per_client}")
    rng = np.random.default_rng(seed)
    n = data.n_users
    n_clients = -(-n // users_per_client)
    if scheme == "iid":
        order = rng.permutation(n)
        sizes = np.full(n_clients, users_per_client)
        sizes[-1] = n - users_per_client * (n_clients - 1)
    elif scheme == "by_activity":
        # Stable sort so equal counts keep index order: deterministic without the seed.
        order = np.argsort(-data.user_counts(), kind="stable")
        sizes = np.full(n_clients, users_per_client)
        sizes[-1] = n - users_per_client * (n_clients - 1)
    elif scheme == "size_skewed":
        order = rng.permutation(n)
        shares = rng.dirichlet(np.full(n_clients, 0.5))
        sizes = 1 + rng.multinomial(n - n_clients, shares)
    else:
        raise ConfigurationError(f"unknown partition scheme {scheme!r}")
    bounds = np.cumsum(sizes)[:-1]
    return [np.sort(block).astype(np.int64) for block in np.split(order, bounds)]
