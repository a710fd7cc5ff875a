"""Loaders, synthetic data, stratified split and client partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.features import (
    FeatureData,
    label_distribution,
    load_csv,
    load_features,
    load_npy,
    make_defect_features,
    partition_dirichlet,
    partition_iid,
    train_test_split,
)

# ------------------------------------------------------------- FeatureData


def test_feature_data_is_a_read_only_copy() -> None:
    x = np.ones((3, 2))
    data = FeatureData(x, np.array([0, 1, 0]))
    x[0, 0] = 5.0
    assert data.x[0, 0] == 1.0
    assert data.n_samples == 3 and data.n_features == 2 and data.n_classes == 2
    with pytest.raises(ValueError):
        data.x[0, 0] = 2.0


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.ones(3), np.zeros(3), "2-D"),
        (np.ones((3, 2)), np.zeros(2), "does not match"),
        (np.array([[1.0], [np.nan]]), np.array([0, 1]), "row 1"),
        (np.ones((2, 1)), np.array([0.0, 1.5]), "entry 1"),
        (np.ones((2, 1)), np.array([0, -1]), "entry 1"),
        (np.ones((2, 1)), np.array([0, 0]), "n_classes"),
        (np.array([["a"], ["b"]]), np.array([0, 1]), "not numeric"),
        (np.ones((2, 1)), np.array(["0", "1"]), "numeric"),
    ],
)
def test_feature_data_rejects_malformed(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        FeatureData(x, y)


def test_subset_keeps_class_count() -> None:
    data = FeatureData(np.arange(6.0).reshape(3, 2), np.array([0, 2, 0]))
    sub = data.subset(np.array([0, 2]))
    assert sub.n_classes == 3
    np.testing.assert_array_equal(sub.x, [[0.0, 1.0], [4.0, 5.0]])


# ------------------------------------------------------------------ .npy


def test_npy_round_trip(tmp_path: Path) -> None:
    data = make_defect_features(50, n_features=4, seed=3)
    np.save(tmp_path / "x.npy", data.x)
    np.save(tmp_path / "y.npy", data.y.astype(np.int32))
    loaded = load_features(tmp_path / "x.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(loaded.x, data.x)
    np.testing.assert_array_equal(loaded.y, data.y)
    assert loaded.y.dtype == np.int64


def test_npy_errors_name_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    np.save(tmp_path / "x1d.npy", np.ones(4))
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1]))
    np.save(tmp_path / "y3.npy", np.array([0, 1, 0]))
    np.save(tmp_path / "yfrac.npy", np.array([0, 1, 0.5, 1]))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "arch.npz", x=np.ones((4, 2)))
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    cases = [
        ("x1d.npy", "y.npy", "x1d.npy.*2-D"),
        ("x.npy", "y3.npy", "y3.npy.*4 entries"),
        ("x.npy", "yfrac.npy", "yfrac.npy.*entry 2"),
        ("obj.npy", "y.npy", "obj.npy"),
        ("junk.npy", "y.npy", "junk.npy"),
        ("missing.npy", "y.npy", "missing.npy"),
        ("arch.npz", "y.npy", "arch.npz"),
    ]
    for features, labels, message in cases:
        with pytest.raises(DataError, match=message):
            load_npy(tmp_path / features, tmp_path / labels)
    with pytest.raises(DataError, match=r"labels \.npy"):
        load_features(tmp_path / "x.npy")
    with pytest.raises(DataError, match="unsupported"):
        load_features(tmp_path / "x.parquet")


# ------------------------------------------------------------------- .csv


def test_csv_with_header_and_named_label_column(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("f1,label,f2\n0.5,1,2\n\n-1e-3,0,3.5\n")
    data = load_csv(path, label_column="label")
    np.testing.assert_array_equal(data.x, [[0.5, 2.0], [-1e-3, 3.5]])
    np.testing.assert_array_equal(data.y, [1, 0])


def test_csv_without_header_uses_last_column(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("1,2,0\n3,4,2.0\n")
    data = load_features(path)
    np.testing.assert_array_equal(data.x, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(data.y, [0, 2])
    assert data.n_classes == 3


@pytest.mark.parametrize(
    ("text", "label_column", "message"),
    [
        ("", None, "empty"),
        ("a,b\n", None, "no data rows"),
        ("1\n2\n", None, "at least one feature"),
        ("1,2,0\n3,4\n", None, "line 2 has 2 columns"),
        ("a,b,y\n1,2,0\n\n1,x,1\n", None, "line 4, column 2: 'x'"),
        ("1,2,0\n3,4,1.5\n", None, "line 2: label '1.5'"),
        ("1,2,0\n3,4,-1\n", None, "line 2: label '-1'"),
        ("1,2,0\n3,nan,1\n", None, "line 2: NaN"),
        ("1,2,0\n", "y", "no header"),
        ("a,b\n1,0\n", "y", "'y' exactly once"),
        ("1,2,0\n3,4,0\n", None, "n_classes"),
    ],
)
def test_csv_malformed(tmp_path: Path, text: str, label_column: str | None, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_csv(path, label_column=label_column)
    assert "bad.csv" in str(info.value)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv"):
        load_csv(tmp_path / "nope.csv")


# -------------------------------------------------------- synthetic data


def test_synthetic_is_seeded_and_has_exact_class_counts() -> None:
    a = make_defect_features(400, n_features=8, defect_fraction=0.25, seed=7)
    b = make_defect_features(400, n_features=8, defect_fraction=0.25, seed=7)
    c = make_defect_features(400, n_features=8, defect_fraction=0.25, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.x, c.x)
    assert a.x.shape == (400, 8)
    np.testing.assert_array_equal(np.bincount(a.y), [300, 100])


def test_synthetic_multiclass_and_overlap() -> None:
    data = make_defect_features(1000, n_classes=4, defect_fraction=0.3, seed=0)
    np.testing.assert_array_equal(np.bincount(data.y), [700, 100, 100, 100])
    # Overlap: a point is often closer to another class's mean than its own,
    # so no classifier can be trivially perfect.
    means = np.stack([data.x[data.y == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((data.x[:, None, :] - means) ** 2).sum(axis=2), axis=1)
    assert 0.5 < np.mean(nearest == data.y) < 0.99


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_samples": 1},
        {"n_features": 0},
        {"n_classes": 1},
        {"defect_fraction": 0.0},
        {"defect_fraction": 1.0},
        {"separation": -1.0},
        {"modes_per_class": 0},
        {"n_samples": True},
    ],
)
def test_synthetic_rejects_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        make_defect_features(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ split


def test_stratified_split() -> None:
    labels = np.repeat(np.array([0, 1, 2, 3]), [80, 20, 9, 1])
    train, test = train_test_split(labels, test_fraction=0.25, seed=1)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(110))
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=4), [20, 5, 2, 0])
    again = train_test_split(labels, test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again[1], test)
    other = train_test_split(labels, test_fraction=0.25, seed=2)
    assert not np.array_equal(other[1], test)
    with pytest.raises(ConfigurationError):
        train_test_split(labels, test_fraction=1.0)


# ------------------------------------------------------------- partitions


@settings(max_examples=40, deadline=None)
@given(n_samples=st.integers(5, 300), n_clients=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_iid_partition_covers_every_sample_once(n_samples: int, n_clients: int, seed: int) -> None:
    parts = partition_iid(n_samples, n_clients, seed=seed)
    assert len(parts) == n_clients
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n_samples))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.05, 100.0), n_clients=st.integers(2, 8), seed=st.integers(0, 2**32))
def test_dirichlet_partition_covers_every_sample_once(alpha: float, n_clients: int, seed: int) -> None:
    labels = make_defect_features(200, n_classes=3, seed=0).y
    parts = partition_dirichlet(labels, n_clients, alpha=alpha, seed=seed, min_samples=0)
    assert len(parts) == n_clients
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(200))


def _mean_total_variation(parts: list[np.ndarray], labels: np.ndarray, n_classes: int) -> float:
    dist = label_distribution(parts, labels, n_classes)
    overall = np.bincount(labels, minlength=n_classes) / labels.size
    return float(np.mean(0.5 * np.abs(dist - overall).sum(axis=1)))


def test_dirichlet_skews_labels_and_large_alpha_approaches_iid() -> None:
    labels = make_defect_features(2000, n_classes=4, defect_fraction=0.5, seed=0).y
    iid = _mean_total_variation(partition_iid(2000, 10, seed=0), labels, 4)
    skewed_parts = partition_dirichlet(labels, 10, alpha=0.1, seed=0, min_samples=10)
    skewed = _mean_total_variation(skewed_parts, labels, 4)
    flat = _mean_total_variation(partition_dirichlet(labels, 10, alpha=1000.0, seed=0), labels, 4)
    # Observed: iid 0.036, alpha=1000 0.048, alpha=0.1 0.59.
    assert iid < 0.08 and flat < 0.08
    assert skewed > 0.35
    assert min(len(p) for p in skewed_parts) >= 10


def test_dirichlet_infeasible_and_bad_config() -> None:
    labels = np.array([0, 1] * 10)
    with pytest.raises(ConfigurationError, match="cannot give"):
        partition_dirichlet(labels, 5, min_samples=5)
    with pytest.raises(ConfigurationError, match="no Dirichlet"):
        partition_dirichlet(labels, 10, alpha=0.01, min_samples=2, max_tries=3)
    with pytest.raises(ConfigurationError):
        partition_dirichlet(labels, 2, alpha=0.0)
    with pytest.raises(ConfigurationError):
        partition_iid(3, 5)
    with pytest.raises(DataError):
        partition_dirichlet(np.array([], dtype=np.int64), 2, min_samples=0)
    with pytest.raises(DataError):
        train_test_split(np.zeros((2, 2), dtype=np.int64))
