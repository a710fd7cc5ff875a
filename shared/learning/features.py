"""Labelled feature vectors for defect classification: loaders, synthetic data, splits.

Edge devices do not train on raw images: they compute a fixed-size feature vector
per casting (for example a CNN embedding) and train a small model on those
vectors. This module provides

* :class:`FeatureData`, an immutable ``(x, y)`` pair with its number of classes;
* loaders for ``.npy`` pairs (features file + labels file) and ``.csv`` files,
  which raise :class:`~fedcast.shared.errors.DataError` naming the file and the line or
  shape that is wrong;
* :func:`make_defect_features`, a seeded synthetic "ok vs defect" generator that
  is the default data for tests and demos;
* a stratified :func:`train_test_split` and IID / Dirichlet label-skewed client
  partitions, all returning index arrays.

Labels are integers ``0 .. n_classes-1``; class 0 is "ok", every other class a
kind of defect.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedcast.shared.errors import ConfigurationError, DataError

__all__ = [
    "FeatureData",
    "IntArray",
    "label_distribution",
    "load_csv",
    "load_features",
    "load_npy",
    "make_defect_features",
    "partition_dirichlet",
    "partition_iid",
    "train_test_split",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class FeatureData:
    """Feature matrix ``x`` (n, d) float64 and labels ``y`` (n,) int64 in ``[0, n_classes)``.

    The arrays are copied and made read-only, so a data set can be shared
    between simulated clients without one of them mutating another's view.
    ``n_classes`` defaults to ``max(y) + 1``; pass it explicitly for subsets
    that may miss a class.
    """

    x: FloatArray
    y: IntArray
    n_classes: int = 0

    def __post_init__(self) -> None:
        try:
            x = np.array(self.x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"features are not numeric: {exc}") from exc
        y_raw = np.asarray(self.y)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"features must be a non-empty 2-D array, got shape {x.shape}")
        if y_raw.shape != (x.shape[0],):
            raise DataError(f"labels shape {y_raw.shape} does not match {x.shape[0]} feature rows")
        y = _as_labels(y_raw, "labels")
        if not np.all(np.isfinite(x)):
            row = int(np.argwhere(~np.isfinite(x))[0, 0])
            raise DataError(f"features contain NaN or infinity (first in row {row})")
        n_classes = self.n_classes or int(y.max()) + 1
        if n_classes < 2 or int(y.max()) >= n_classes:
            raise DataError(f"n_classes={n_classes} must be >= 2 and exceed the largest label {int(y.max())}")
        x.flags.writeable = False
        y.flags.writeable = False
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "n_classes", n_classes)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def subset(self, indices: IntArray) -> FeatureData:
        """The rows ``indices`` (keeps ``n_classes`` even if a class is absent)."""
        return FeatureData(self.x[indices], self.y[indices], self.n_classes)


def _as_labels(values: NDArray[np.generic], what: str) -> IntArray:
    """Integral, non-negative labels as int64 (floats like 1.0 are accepted, 1.5 is not)."""
    if values.dtype.kind not in "iuf" and values.dtype != np.bool_:
        raise DataError(f"{what} must be numeric, got dtype {values.dtype}")
    as_float = values.astype(np.float64)
    # The upper cap only keeps the int64 cast exact; real label sets are tiny.
    bad = ~np.isfinite(as_float) | (as_float < 0) | (as_float >= 2**31)
    bad |= as_float != np.round(as_float)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise DataError(f"{what}: entry {i} is {values[i]!r}, expected an integer >= 0")
    return as_float.astype(np.int64)


# ---------------------------------------------------------------- loaders


def load_npy(features_path: str | Path, labels_path: str | Path) -> FeatureData:
    """Load ``x`` from one ``.npy`` file and ``y`` from another (no pickled objects)."""
    x = _load_array(Path(features_path))
    y = _load_array(Path(labels_path))
    if x.ndim != 2:
        raise DataError(f"{features_path}: features must be 2-D (n, d), got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{features_path}: features must be numeric, got dtype {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{labels_path}: labels must be 1-D with {x.shape[0]} entries "
            f"(one per row of {features_path}), got shape {y.shape}"
        )
    try:
        return FeatureData(x.astype(np.float64), _as_labels(y, "labels"))
    except DataError as exc:
        raise DataError(f"{features_path} / {labels_path}: {exc}") from exc


def _load_array(path: Path) -> NDArray[np.generic]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        # allow_pickle=False turns object arrays into ValueError: report them as bad data.
        raise DataError(f"{path}: cannot read as .npy: {exc}") from exc
    if not isinstance(loaded, np.ndarray):
        raise DataError(f"{path}: expected a single .npy array, got an .npz archive")
    return loaded


def load_csv(path: str | Path, *, label_column: str | None = None, delimiter: str = ",") -> FeatureData:
    """Load numeric feature columns and one integer label column from a CSV file.

    A first row that is not entirely numeric is taken as a header. The label
    column is ``label_column`` (which then requires a header) or else the last
    column; every other column is a feature. Blank lines are skipped. Errors
    name the file and the 1-based line number.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            # Keep line numbers with the rows so that errors can point at them.
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from exc
    if not rows:
        raise DataError(f"{path}: file is empty")
    header: list[str] | None = None
    if not _all_numeric(rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: header but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}: need at least one feature column and a label column")
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width}")
    label_index = _label_index(path, header, label_column, width)
    values = _to_float_matrix(path, rows)
    labels = values[:, label_index]
    # Check here rather than in FeatureData so that the error can name the line.
    non_finite = ~np.all(np.isfinite(values), axis=1)
    bad_label = (labels < 0) | (labels != np.round(labels)) | (labels >= 2**31)
    if np.any(non_finite | bad_label):
        i = int(np.argmax(non_finite | bad_label))
        line, row = rows[i]
        problem = "NaN or infinity" if non_finite[i] else f"label {row[label_index]!r} is not an integer >= 0"
        raise DataError(f"{path}: line {line}: {problem}")
    try:
        return FeatureData(values[:, np.arange(width) != label_index], labels.astype(np.int64))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def _all_numeric(row: Sequence[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _label_index(path: Path, header: list[str] | None, label_column: str | None, width: int) -> int:
    if label_column is None:
        return width - 1
    if header is None:
        raise DataError(f"{path}: label column {label_column!r} requested but file has no header")
    if header.count(label_column) != 1:
        raise DataError(f"{path}: header must contain {label_column!r} exactly once: {header}")
    return header.index(label_column)


def _to_float_matrix(path: Path, rows: list[tuple[int, list[str]]]) -> FloatArray:
    try:
        return np.array([row for _, row in rows], dtype=np.float64)
    except ValueError:
        pass
    # Slow path only to find the offending cell for the error message.
    for line, row in rows:
        for col, cell in enumerate(row):
            try:
                float(cell)
            except ValueError:
                raise DataError(f"{path}: line {line}, column {col + 1}: {cell!r} is not a number") from None
    raise DataError(f"{path}: cannot convert to a numeric matrix")  # pragma: no cover


def load_features(
    path: str | Path, labels_path: str | Path | None = None, *, label_column: str | None = None
) -> FeatureData:
    """Dispatch on the suffix: ``.npy`` (needs ``labels_path``) or ``.csv``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        if labels_path is None:
            raise DataError(f"{path}: a .npy features file needs a labels .npy file")
        return load_npy(path, labels_path)
    if suffix == ".csv":
        return load_csv(path, label_column=label_column)
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .npy or .csv)")


# ------------------------------------------------------- synthetic data


def make_defect_features(
    n_samples: int = 1000,
    *,
    n_features: int = 16,
    n_classes: int = 2,
    defect_fraction: float = 0.3,
    modes_per_class: int = 2,
    separation: float = 3.0,
    seed: int = 0,
) -> FeatureData:
    """Seeded Gaussian clusters mimicking embeddings of ok / defective castings.

    Class 0 ("ok", ``1 - defect_fraction`` of the samples) is a unit Gaussian at
    the origin. The defect fraction is split evenly over classes ``1..n_classes-1``;
    each defect class is a mixture of ``modes_per_class`` unit Gaussians whose
    centres lie at distance ``separation`` from the origin in random directions
    (different defect types such as blowholes or shrinkage look different). The
    clusters overlap, so accuracy is well below 100%, and with several modes the
    classes are not linearly separable, so an MLP beats logistic regression.
    Class counts are exact, not sampled.
    """
    _check_int("n_samples", n_samples, n_classes)
    _check_int("n_features", n_features, 1)
    _check_int("n_classes", n_classes, 2)
    _check_int("modes_per_class", modes_per_class, 1)
    if not 0.0 < defect_fraction < 1.0:
        raise ConfigurationError(f"defect_fraction must be in (0, 1), got {defect_fraction}")
    if not separation > 0.0:
        raise ConfigurationError(f"separation must be > 0, got {separation}")
    rng = np.random.default_rng(seed)
    n_defect = min(max(round(n_samples * defect_fraction), n_classes - 1), n_samples - 1)
    defect_counts = [len(c) for c in np.array_split(np.arange(n_defect), n_classes - 1)]
    counts = np.array([n_samples - n_defect, *defect_counts])
    if np.any(counts == 0):
        raise ConfigurationError(f"n_samples={n_samples} leaves a class empty: {counts.tolist()}")
    directions = rng.standard_normal((n_classes, modes_per_class, n_features))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    centres = separation * directions
    centres[0] = 0.0
    y = rng.permutation(np.repeat(np.arange(n_classes, dtype=np.int64), counts))
    mode = rng.integers(0, modes_per_class, size=n_samples)
    x = centres[y, mode] + rng.standard_normal((n_samples, n_features))
    return FeatureData(x, y, n_classes)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ------------------------------------------------- splits and partitions


def train_test_split(
    labels: IntArray, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[IntArray, IntArray]:
    """Stratified split: sorted ``(train_idx, test_idx)`` with each class split alike.

    Each class with at least two samples puts ``round(count * test_fraction)``
    (clamped to ``[1, count - 1]``) in the test set; a singleton stays in train.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = _as_labels(np.asarray(labels), "labels")
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    # Random order, then a stable sort by class: classes become contiguous blocks,
    # each in random order, so "first k of each block" is a random stratified pick.
    order = rng.permutation(labels.shape[0])
    order = order[np.argsort(labels[order], kind="stable")]
    counts = np.bincount(labels)
    n_test = np.where(counts >= 2, np.clip(np.round(counts * test_fraction), 1, counts - 1), 0)
    starts = np.cumsum(counts) - counts
    sorted_labels = labels[order]
    rank = np.arange(labels.shape[0]) - starts[sorted_labels]
    is_test = rank < n_test[sorted_labels]
    return np.sort(order[~is_test]), np.sort(order[is_test])


def partition_iid(n_samples: int, n_clients: int, *, seed: int = 0) -> list[IntArray]:
    """Shuffle and cut into ``n_clients`` near-equal parts (sorted index arrays)."""
    _check_int("n_clients", n_clients, 1)
    _check_int("n_samples", n_samples, n_clients)
    perm = np.random.default_rng(seed).permutation(n_samples).astype(np.int64)
    return [np.sort(part) for part in np.array_split(perm, n_clients)]


def partition_dirichlet(
    labels: IntArray,
    n_clients: int,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    min_samples: int = 1,
    max_tries: int = 100,
) -> list[IntArray]:
    """Label-skewed partition: per class, client shares are drawn from Dirichlet(alpha).

    Small ``alpha`` (0.1) gives most clients one or two dominant classes, large
    ``alpha`` (100) approaches IID. Draws are repeated (same seeded generator)
    until every client has at least ``min_samples`` samples; after ``max_tries``
    failures a :class:`ConfigurationError` explains that the settings are
    infeasible.
    """
    _check_int("n_clients", n_clients, 1)
    _check_int("min_samples", min_samples, 0)
    _check_int("max_tries", max_tries, 1)
    if not alpha > 0.0:
        raise ConfigurationError(f"alpha must be > 0, got {alpha}")
    labels = _as_labels(np.asarray(labels), "labels")
    if labels.ndim != 1 or labels.size == 0:
        raise DataError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.shape[0] < n_clients * min_samples:
        raise ConfigurationError(
            f"{labels.shape[0]} samples cannot give {n_clients} clients {min_samples} each"
        )
    rng = np.random.default_rng(seed)
    class_members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    owner = np.empty(labels.shape[0], dtype=np.int64)
    for _ in range(max_tries):
        for members in class_members:
            if members.size == 0:
                continue
            shares = rng.dirichlet(np.full(n_clients, alpha))
            per_client = rng.multinomial(members.size, shares)
            owner[rng.permutation(members)] = np.repeat(np.arange(n_clients), per_client)
        sizes = np.bincount(owner, minlength=n_clients)
        if sizes.min() >= min_samples:
            # A stable argsort groups indices by owner, ascending within each client.
            grouped = np.argsort(owner, kind="stable").astype(np.int64)
            return np.split(grouped, np.cumsum(sizes)[:-1])
    raise ConfigurationError(
        f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave all {n_clients} clients "
        f">= {min_samples} samples; raise alpha or lower n_clients/min_samples"
    )


def label_distribution(partitions: Sequence[IntArray], labels: IntArray, n_classes: int) -> FloatArray:
    """Row ``k`` is client ``k``'s label histogram, normalised (empty client: zeros)."""
    sizes = np.array([len(p) for p in partitions], dtype=np.int64)
    owner = np.repeat(np.arange(len(partitions)), sizes)
    flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in partitions])
    counts = np.bincount(owner * n_classes + labels[flat], minlength=len(partitions) * n_classes)
    hist = counts.reshape(len(partitions), n_classes).astype(np.float64)
    return hist / np.maximum(sizes, 1)[:, None]
