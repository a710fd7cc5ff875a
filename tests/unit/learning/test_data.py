"""Rating container, synthetic generator, split and partition."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import (
    RatingData,
    SyntheticConfig,
    make_synthetic,
    partition_users,
    train_test_split,
)
from fedcast.shared.learning.loaders import N_GENRES, load_movielens_100k, load_movielens_latest_small


def _tiny() -> RatingData:
    return RatingData(
        users=np.array([0, 0, 1, 2]),
        items=np.array([0, 1, 1, 2]),
        ratings=np.array([1.0, 2.0, 3.0, 4.0]),
        n_users=3,
        n_items=3,
    )


def test_rating_data_is_read_only_and_selects() -> None:
    data = _tiny()
    with pytest.raises(ValueError):
        data.ratings[0] = 9.0
    sub = data.select(data.users == 0)
    assert sub.n_ratings == 2 and sub.n_users == 3
    assert data.for_users([1, 2]).ratings.tolist() == [3.0, 4.0]
    assert data.user_counts().tolist() == [2, 1, 1]


@pytest.mark.parametrize(
    "change",
    [
        {"users": np.array([0, 0, 1, 3])},  # user out of range
        {"items": np.array([0, 0, 1, 2]), "users": np.array([0, 0, 1, 2])},  # duplicate pair
        {"ratings": np.array([1.0, np.nan, 3.0, 4.0])},
        {"ratings": np.array([1.0, 2.0])},
        {"users": np.array([0.0, 0.0, 1.0, 2.0])},  # float indices
        {"user_features": np.zeros((2, 4))},
        {"item_features": np.full((3, 2), np.inf)},
    ],
)
def test_rating_data_rejects_malformed_input(change: dict[str, Any]) -> None:
    with pytest.raises(DataError):
        dataclasses.replace(_tiny(), **change)


def test_synthetic_is_deterministic_and_well_formed() -> None:
    cfg = SyntheticConfig(n_users=20, n_items=30, ratings_per_user=10, seed=7)
    a, b = make_synthetic(cfg), make_synthetic(cfg)
    c = make_synthetic(dataclasses.replace(cfg, seed=8))
    assert np.array_equal(a.ratings, b.ratings) and np.array_equal(a.items, b.items)
    assert not np.array_equal(a.ratings, c.ratings)
    assert a.ratings.min() >= 1.0 and a.ratings.max() <= 5.0
    assert a.user_counts().min() >= 2
    assert a.user_features is not None and a.user_features.shape == (20, cfg.n_user_features)
    assert a.item_features is not None and a.item_features.shape == (30, cfg.n_item_features)
    # Rating-like: centred mid-range, signal std 0.8 plus noise 0.25 in quadrature.
    assert 2.5 < float(a.ratings.mean()) < 3.5
    assert 0.6 < float(a.ratings.std()) < 1.1


def _feature_r2(data: RatingData) -> float:
    """In-sample R^2 of one global linear model on [1, x_u, y_i, x_u (x) y_i]."""
    assert data.user_features is not None and data.item_features is not None
    x, y = data.user_features[data.users], data.item_features[data.items]
    cross = np.einsum("nf,ng->nfg", x, y).reshape(data.n_ratings, -1)
    design = np.column_stack([np.ones(data.n_ratings), x, y, cross])
    coef, *_ = np.linalg.lstsq(design, data.ratings, rcond=None)
    resid = data.ratings - design @ coef
    return 1.0 - float(resid.var() / data.ratings.var())


def test_synthetic_side_features_carry_signal() -> None:
    cfg = SyntheticConfig(n_users=60, n_items=80, ratings_per_user=40, seed=3)
    informative = _feature_r2(make_synthetic(cfg))
    blind = _feature_r2(make_synthetic(dataclasses.replace(cfg, feature_strength=0.0)))
    assert informative > 0.5
    assert blind < 0.3
    assert informative > blind + 0.3


@pytest.mark.parametrize(
    "field, value",
    [("n_users", 0), ("rank", 0), ("noise", -1.0), ("rating_max", 0.5), ("seed", -1)],
)
def test_synthetic_config_validation(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        SyntheticConfig(**{field: value})


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=15),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_per_user_properties(counts: list[int], fraction: float, seed: int) -> None:
    users = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate([np.arange(c) for c in counts])
    data = RatingData(users, items, np.arange(users.size, dtype=float), len(counts), max(counts))
    train, test = train_test_split(data, test_fraction=fraction, seed=seed)
    # A partition of the ratings (ratings are unique labels here).
    assert sorted(train.ratings.tolist() + test.ratings.tolist()) == data.ratings.tolist()
    n = np.asarray(counts)
    expected = np.minimum(np.floor(fraction * n + 0.5), n - 1)
    assert test.user_counts().tolist() == expected.astype(int).tolist()
    assert np.all(train.user_counts() >= 1)
    again = train_test_split(data, test_fraction=fraction, seed=seed)[1]
    assert np.array_equal(again.ratings, test.ratings)


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ConfigurationError):
        train_test_split(_tiny(), test_fraction=1.0)


@pytest.mark.parametrize("scheme", ["iid", "by_activity", "size_skewed"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_partition_covers_every_user_once(scheme: str, k: int) -> None:
    data = make_synthetic(SyntheticConfig(n_users=23, n_items=15, ratings_per_user=5))
    parts = partition_users(data, users_per_client=k, scheme=scheme, seed=1)  # type: ignore[arg-type]
    flat = np.concatenate(parts)
    assert sorted(flat.tolist()) == list(range(23))
    assert len(parts) == -(-23 // k)
    assert all(p.size >= 1 for p in parts)
    if scheme != "size_skewed":
        assert [p.size for p in parts[:-1]] == [k] * (len(parts) - 1)


def test_partition_by_activity_and_skew() -> None:
    data = make_synthetic(SyntheticConfig(n_users=40, activity_skew=1.0, seed=2))
    counts = data.user_counts()
    parts = partition_users(data, users_per_client=5, scheme="by_activity")
    block_means = [counts[p].mean() for p in parts]
    assert block_means == sorted(block_means, reverse=True)
    sizes = [p.size for p in partition_users(data, users_per_client=5, scheme="size_skewed")]
    assert max(sizes) > 2 * min(sizes)  # Dirichlet(0.5) sizes are far from equal
    with pytest.raises(ConfigurationError):
        partition_users(data, users_per_client=0)
    with pytest.raises(ConfigurationError):
        partition_users(data, scheme="round_robin")  # type: ignore[arg-type]


# --- MovieLens loaders on small files written to tmp_path ---------------------------------


def _write_100k(root: Path, *, data: str | None = None, item_extra: str = "") -> Path:
    (root / "u.data").write_text(
        data if data is not None else "1\t10\t4\t881250949\n3\t10\t2\t891717742\n1\t20\t5\t878887116\n"
    )
    (root / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    flags_a = "|".join(["0"] * (N_GENRES - 1) + ["1"])
    flags_b = "|".join(["1"] + ["0"] * (N_GENRES - 1))
    (root / "u.item").write_bytes(
        (
            f"10|Caf\xe9 Movie (1995)|01-Jan-1995||http://x|{flags_a}\n20|Unknown||||{flags_b}\n" + item_extra
        ).encode("latin-1")
    )
    return root


def test_load_movielens_100k_with_side_features(tmp_path: Path) -> None:
    data = load_movielens_100k(_write_100k(tmp_path))
    # Users 1 and 3 rated something (dense 0, 1); items 10, 20 -> 0, 1.
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 2, 3)
    assert data.users.tolist() == [0, 1, 0] and data.items.tolist() == [0, 0, 1]
    assert data.ratings.tolist() == [4.0, 2.0, 5.0]
    assert data.user_features is not None and data.item_features is not None
    assert data.user_features[:, 1].tolist() == [1.0, 1.0]  # both rated users are male
    assert data.user_features.shape == (2, 2 + 2)  # age, is_male, 2 occupations seen
    assert data.item_features.shape == (2, 1 + N_GENRES)
    assert data.item_features[0, -1] == 1.0 and data.item_features[1, 1] == 1.0
    assert data.item_features[1, 0] == 0.0  # missing release year -> mean -> 0 after scaling
    bare = load_movielens_100k(tmp_path, side_features=False)
    assert bare.user_features is None and np.array_equal(bare.ratings, data.ratings)


@pytest.mark.parametrize(
    "content, line",
    [
        ("1\t10\t4\t881250949\n1\t20\t5\n", 2),
        ("1\t10\tfour\t881250949\n", 1),
        ("1\t10\t4\t881250949\n\nx\t20\t5\t1\n", 3),
        ("1\t10\tnan\t881250949\n", 1),
    ],
)
def test_load_100k_reports_file_and_line(tmp_path: Path, content: str, line: int) -> None:
    _write_100k(tmp_path, data=content)
    with pytest.raises(DataError, match=rf"u\.data:{line}:"):
        load_movielens_100k(tmp_path)


def test_load_100k_malformed_side_files(tmp_path: Path) -> None:
    _write_100k(tmp_path, item_extra="30|Short|01-Jan-1990\n")
    with pytest.raises(DataError, match=r"u\.item:3:"):
        load_movielens_100k(tmp_path)
    _write_100k(tmp_path)
    (tmp_path / "u.user").write_text("1|24|X|technician|85711\n")
    with pytest.raises(DataError, match=r"u\.user:1:"):
        load_movielens_100k(tmp_path)
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")  # user 3 has no profile
    with pytest.raises(DataError, match="no profile"):
        load_movielens_100k(tmp_path)
    with pytest.raises(DataError, match="cannot read"):
        load_movielens_100k(tmp_path / "missing")


def test_load_latest_small_reindexes_densely(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n7,193609,3.5,964982703\n7,1,4.0,964981247\n"
        "12,193609,0.5,964982224\n"
    )
    data = load_movielens_latest_small(path)
    assert (data.n_users, data.n_items) == (2, 2)
    assert data.users.tolist() == [0, 0, 1]
    assert data.items.tolist() == [1, 0, 1]  # movieId 1 -> 0, 193609 -> 1
    assert data.ratings.tolist() == [3.5, 4.0, 0.5]


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("user,movie,rating,timestamp\n1,2,3,4\n", r"ratings\.csv:1: expected header"),
        ("userId,movieId,rating,timestamp\n1,2,3,4\n1,2,4,5\n", "more than once"),
        ("userId,movieId,rating,timestamp\n1,2,3\n", r"ratings\.csv:2: expected 4 fields"),
        ("userId,movieId,rating,timestamp\n", "no ratings"),
    ],
)
def test_load_latest_small_malformed(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=pattern):
        load_movielens_latest_small(path)
