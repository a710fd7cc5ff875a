"""load_ratings: one entry for MovieLens 100K, MovieLens ratings.csv and generic CSV; the holdout split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcast.shared.errors import DataError
from fedcast.shared.learning.data import PowerLawConfig, make_power_law, train_test_split
from fedcast.shared.learning.loaders import load_ratings


def _write_100k(root: Path, *, side: bool = True) -> None:
    root.mkdir(exist_ok=True)
    (root / "u.data").write_text("3\t10\t4\t881250949\n1\t10\t2\t881250950\n1\t7\t5\t881250951\n")
    if side:
        (root / "u.user").write_text("1|24|M|technician|85711\n3|53|F|other|94043\n")
        flags = "|".join(["0"] * 18 + ["1"])
        (root / "u.item").write_bytes(
            f"7|A (1995)|01-Jan-1995||http://x|{flags}\n10|B (1996)|01-Jan-1996||http://x|{flags}\n".encode(
                "latin-1"
            )
        )


def test_movielens_100k_directory_and_file(tmp_path: Path) -> None:
    _write_100k(tmp_path / "ml")
    loaded = load_ratings(tmp_path / "ml")
    assert loaded.format == "ml-100k"
    assert loaded.user_ids == ("1", "3") and loaded.item_ids == ("7", "10")
    assert loaded.data.item_features is not None and loaded.data.user_features is not None
    assert load_ratings(tmp_path / "ml" / "u.data").data.n_ratings == 3
    assert load_ratings(tmp_path / "ml", side_features=False).data.item_features is None
    _write_100k(tmp_path / "bare", side=False)  # no u.user / u.item: ratings only
    assert load_ratings(tmp_path / "bare").data.item_features is None


def test_movielens_ratings_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n5,300,4.5,1\n2,300,3.0,2\n5,12,1.0,3\n")
    for target in (path, tmp_path):
        loaded = load_ratings(target)
        assert loaded.format == "movielens-csv"
        assert loaded.user_ids == ("2", "5") and loaded.item_ids == ("12", "300")
        data = loaded.data
        assert sorted(zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist(), strict=True)) == [
            (0, 1, 3.0),
            (1, 0, 1.0),
            (1, 1, 4.5),
        ]


@pytest.mark.parametrize("header", ["", "user,item,rating\n"])
def test_generic_csv_with_string_ids(tmp_path: Path, header: str) -> None:
    path = tmp_path / "quality.csv"
    path.write_text(header + 'line-b,"part,7",4\nline-a,part-2,2.5\n\nline-b,part-2,1,1700000000\n')
    loaded = load_ratings(path)
    assert loaded.format == "csv"
    assert loaded.user_ids == ("line-a", "line-b") and loaded.item_ids == ("part,7", "part-2")
    data = loaded.data
    triples = {
        (loaded.user_ids[u], loaded.item_ids[i], r)
        for u, i, r in zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist(), strict=True)
    }
    assert triples == {("line-b", "part,7", 4.0), ("line-a", "part-2", 2.5), ("line-b", "part-2", 1.0)}


def test_generic_csv_numeric_ids_sort_numerically(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("10,1,3\n9,1,4\n100,2,5\n")
    loaded = load_ratings(path)
    assert loaded.user_ids == ("9", "10", "100")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("a,b,3\nc,d\n", r"r\.csv:2: expected 3 fields"),
        ("a,b,3\nc,d,x\n", r"r\.csv:2: rating 'x' is not a valid float"),
        ("a,b,3\nc,d,nan\n", r"r\.csv:2: rating 'nan' is not finite"),
        ("a,b,3\n,d,1\n", r"r\.csv:2: empty user or item id"),
        ("a,b,3\nc,d,1\na,b,2\n", r"r\.csv:3: user 'a' rated item 'b' a second time"),
        ("user,item,rating\n", r"r\.csv: no ratings"),
        ("a,b,3,4,5\n", r"r\.csv:1: expected 3 fields"),
    ],
)
def test_generic_csv_errors_name_file_and_line(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=pattern):
        load_ratings(path)


def test_unusable_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_ratings(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"without u\.data"):
        load_ratings(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe,\x00,1\n")
    with pytest.raises(DataError, match=r"bin\.csv"):
        load_ratings(tmp_path / "bin.csv")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,x,3\n")
    with pytest.raises(DataError, match=r"ratings\.csv:2"):
        load_ratings(tmp_path)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_holdout_keeps_a_training_rating_for_every_user(fraction: float) -> None:
    data = make_power_law(PowerLawConfig(n_users=200, n_items=300, min_ratings=1, heavy_users=(250,), seed=4))
    counts = data.user_counts()
    assert counts.min() == 1  # single-rating users exist and must stay in train
    train, test = train_test_split(data, test_fraction=fraction, seed=9)
    train_counts, test_counts = train.user_counts(), test.user_counts()
    assert np.all(train_counts[counts >= 1] >= 1)
    assert np.array_equal(train_counts + test_counts, counts)
    expected = np.minimum(np.floor(fraction * counts + 0.5), counts - 1)
    assert np.array_equal(test_counts, expected)
    again_train, again_test = train_test_split(data, test_fraction=fraction, seed=9)
    assert np.array_equal(again_test.items, test.items) and np.array_equal(again_train.users, train.users)
    other, _ = train_test_split(data, test_fraction=fraction, seed=10)
    assert not np.array_equal(other.items, train.items)
