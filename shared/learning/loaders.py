"""Loaders for rating files: MovieLens 100K, MovieLens ``ratings.csv``, generic CSV.

:func:`load_ratings` is the one entry point: it recognizes the format and
returns the data together with the original ids. Only local files the caller
names are read; nothing is downloaded. Every
malformed line raises :class:`fedcast.shared.errors.DataError` naming the file and the
1-based line number. Ids are re-indexed densely (sorted id order), so the
returned :class:`RatingData` always has ``users < n_users`` and ``items < n_items``.

Parsing is a plain loop over lines: it is I/O, and the loop is what lets the
error name the offending line; all numerics afterwards are vectorized.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fedcast.shared.errors import DataError
from fedcast.shared.learning.data import FloatArray, IntArray, RatingData

__all__ = [
    "N_GENRES",
    "RatingFormat",
    "RatingsFile",
    "load_movielens_100k",
    "load_movielens_latest_small",
    "load_ratings",
]

RatingFormat = Literal["ml-100k", "movielens-csv", "csv"]
_MOVIELENS_HEADER = ("userId", "movieId", "rating", "timestamp")

N_GENRES = 19  # u.item ends with 19 genre flags (unknown, Action, ..., Western)


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; I/O and decoding errors become DataError."""
    try:
        with path.open("r", encoding=encoding, newline="") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _number(text: str, path: Path, line: int, what: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text.strip())
    except ValueError as exc:
        raise DataError(f"{path}:{line}: {what} {text!r} is not a valid {kind.__name__}") from exc
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: {what} {text!r} is not finite")
    return float(value)


def _dense(ids: list[int]) -> tuple[IntArray, IntArray]:
    """Sorted distinct ids and the dense index of every entry."""
    unique, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    return unique, inverse.astype(np.int64)


def _read_triples(
    path: Path, sep: str, *, header: tuple[str, ...] | None
) -> tuple[list[int], list[int], list[float]]:
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    pending_header = header
    for number, line in _lines(path, "utf-8"):
        fields = line.split(sep)
        if pending_header is not None:
            if tuple(f.strip() for f in fields[: len(pending_header)]) != pending_header:
                raise DataError(f"{path}:{number}: expected header {','.join(pending_header)}")
            pending_header = None
            continue
        if len(fields) != 4:
            raise DataError(f"{path}:{number}: expected 4 fields, got {len(fields)}")
        users.append(int(_number(fields[0], path, number, "user id", int)))
        items.append(int(_number(fields[1], path, number, "item id", int)))
        ratings.append(_number(fields[2], path, number, "rating", float))
        _number(fields[3], path, number, "timestamp", int)
    if not ratings:
        raise DataError(f"{path}: no ratings")
    return users, items, ratings


def _build(
    path: Path, users: list[int], items: list[int], ratings: list[float]
) -> tuple[IntArray, IntArray, IntArray, IntArray, FloatArray]:
    user_ids, user_index = _dense(users)
    item_ids, item_index = _dense(items)
    pairs = user_index * item_ids.size + item_index
    if np.unique(pairs).size != pairs.size:
        raise DataError(f"{path}: a (user, item) pair is rated more than once")
    return user_ids, item_ids, user_index, item_index, np.asarray(ratings, dtype=np.float64)


def load_movielens_latest_small(ratings_csv: str | Path) -> RatingData:
    """``ml-latest-small/ratings.csv`` (header ``userId,movieId,rating,timestamp``).

    This is the 100k-rating, 610-user data set of the FedMF evaluation (section
    6.2); ``movieId`` is sparse, so items are re-indexed densely. No side features.
    """
    return _movielens_csv(Path(ratings_csv)).data


def _user_features(path: Path, user_ids: IntArray) -> FloatArray:
    """u.user ``id|age|gender|occupation|zip`` -> [age (standardized), is_male, occupation one-hot]."""
    rows: dict[int, tuple[float, float, str]] = {}
    for number, line in _lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5:
            raise DataError(f"{path}:{number}: expected 5 '|'-separated fields, got {len(fields)}")
        uid = int(_number(fields[0], path, number, "user id", int))
        age = _number(fields[1], path, number, "age", int)
        gender = fields[2].strip().upper()
        if gender not in ("M", "F"):
            raise DataError(f"{path}:{number}: gender {fields[2]!r} is not M or F")
        rows[uid] = (age, 1.0 if gender == "M" else 0.0, fields[3].strip())
    missing = [int(u) for u in user_ids if int(u) not in rows]
    if missing:
        raise DataError(f"{path}: no profile for user ids {missing[:5]}")
    table = [rows[int(u)] for u in user_ids]
    occupations = sorted({occupation for _, _, occupation in table})
    ages = np.array([t[0] for t in table])
    male = np.array([t[1] for t in table])
    occ = np.array([occupations.index(t[2]) for t in table])
    one_hot = np.eye(len(occupations))[occ]
    age_z = (ages - ages.mean()) / max(float(ages.std()), 1e-12)
    return np.column_stack([age_z, male, one_hot]).astype(np.float64)


def _item_features(path: Path, item_ids: IntArray) -> FloatArray:
    """u.item ``id|title|release|video release|url|19 genre flags`` -> [year (standardized), genres]."""
    rows: dict[int, tuple[float, list[float]]] = {}
    for number, line in _lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5 + N_GENRES:
            raise DataError(
                f"{path}:{number}: expected {5 + N_GENRES} '|'-separated fields, got {len(fields)}"
            )
        iid = int(_number(fields[0], path, number, "item id", int))
        flags = [_number(f, path, number, "genre flag", int) for f in fields[5:]]
        if any(flag not in (0.0, 1.0) for flag in flags):
            raise DataError(f"{path}:{number}: genre flags must be 0 or 1")
        release = fields[2].strip()  # e.g. 01-Jan-1995; a few titles have none
        year = math.nan
        if release:
            year = _number(release.rsplit("-", 1)[-1], path, number, "release year", int)
        rows[iid] = (year, flags)
    missing = [int(i) for i in item_ids if int(i) not in rows]
    if missing:
        raise DataError(f"{path}: no attributes for item ids {missing[:5]}")
    years = np.array([rows[int(i)][0] for i in item_ids])
    genres = np.array([rows[int(i)][1] for i in item_ids], dtype=np.float64)
    known = np.isfinite(years)
    fill = float(years[known].mean()) if known.any() else 0.0
    years = np.where(known, years, fill)  # unknown release year: the mean, i.e. 0 after scaling
    years_z = (years - years.mean()) / max(float(years.std()), 1e-12)
    return np.column_stack([years_z, genres]).astype(np.float64)


def load_movielens_100k(directory: str | Path, *, side_features: bool = True) -> RatingData:
    """ml-100k: ``u.data`` (tab separated ``user item rating timestamp``) plus side features.

    With ``side_features`` the user profile ``u.user`` and item attributes ``u.item``
    (latin-1) become feature matrices, the inputs of the FedMMF private models
    (paper Table 1): users get [age z-score, is_male, occupation one-hot], items
    [release-year z-score, 19 genre flags]. Zip codes and titles are dropped.
    """
    return _movielens_100k(Path(directory), side_features=side_features).data


@dataclass(frozen=True, eq=False)
class RatingsFile:
    """What :func:`load_ratings` read: the data, the original ids, the format recognized.

    ``user_ids[k]`` is the id in the file of dense user ``k`` (``item_ids`` likewise),
    as strings; save them next to a trained model to map predictions back.
    """

    data: RatingData
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    format: RatingFormat
    path: Path


def _movielens_csv(path: Path) -> RatingsFile:
    users, items, ratings = _read_triples(path, ",", header=_MOVIELENS_HEADER)
    user_ids, item_ids, ui, ii, r = _build(path, users, items, ratings)
    data = RatingData(ui, ii, r, n_users=user_ids.size, n_items=item_ids.size)
    return RatingsFile(data, _strings(user_ids), _strings(item_ids), "movielens-csv", path)


def _movielens_100k(root: Path, *, side_features: bool) -> RatingsFile:
    path = root / "u.data"
    users, items, ratings = _read_triples(path, "\t", header=None)
    user_ids, item_ids, ui, ii, r = _build(path, users, items, ratings)
    user_features = _user_features(root / "u.user", user_ids) if side_features else None
    item_features = _item_features(root / "u.item", item_ids) if side_features else None
    data = RatingData(
        ui,
        ii,
        r,
        n_users=user_ids.size,
        n_items=item_ids.size,
        user_features=user_features,
        item_features=item_features,
    )
    return RatingsFile(data, _strings(user_ids), _strings(item_ids), "ml-100k", root)


def _strings(ids: IntArray) -> tuple[str, ...]:
    return tuple(str(int(i)) for i in ids)


def _dense_strings(ids: list[str]) -> tuple[tuple[str, ...], IntArray]:
    """Distinct ids (numeric order when all are integers, else string order) and dense indices."""
    try:
        keys: list[int] | None = [int(i) for i in ids]
    except ValueError:
        keys = None
    if keys is not None and len(set(keys)) == len(set(ids)):  # "7" and "007" would collide
        unique, inverse = np.unique(np.asarray(keys, dtype=np.int64), return_inverse=True)
        written = dict(zip(keys, ids, strict=True))  # the id as the file spells it
        return tuple(written[int(k)] for k in unique), inverse.astype(np.int64)
    unique_s, inverse_s = np.unique(np.asarray(ids, dtype=object), return_inverse=True)
    return tuple(str(i) for i in unique_s), inverse_s.astype(np.int64)


def _generic_csv(path: Path) -> RatingsFile:
    """``user,item,rating`` with arbitrary string ids; a header line is optional."""
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    lines: list[int] = []
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            first = True
            for fields in reader:
                number = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) not in (3, 4):
                    raise DataError(
                        f"{path}:{number}: expected 3 fields user,item,rating (a 4th, e.g. a "
                        f"timestamp, is ignored), got {len(fields)}"
                    )
                user, item, rating = (f.strip() for f in fields[:3])
                if first:
                    first = False
                    try:
                        float(rating)
                    except ValueError:
                        continue  # a header line: its rating column is a name, not a number
                if not user or not item:
                    raise DataError(f"{path}:{number}: empty user or item id")
                users.append(user)
                items.append(item)
                ratings.append(_number(rating, path, number, "rating", float))
                lines.append(number)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if not ratings:
        raise DataError(f"{path}: no ratings")
    user_ids, ui = _dense_strings(users)
    item_ids, ii = _dense_strings(items)
    pairs = ui * len(item_ids) + ii
    if np.unique(pairs).size != pairs.size:
        seen: set[int] = set()
        for k, pair in enumerate(pairs.tolist()):
            if pair in seen:
                raise DataError(f"{path}:{lines[k]}: user {users[k]!r} rated item {items[k]!r} a second time")
            seen.add(pair)
    data = RatingData(ui, ii, np.asarray(ratings, dtype=np.float64), len(user_ids), len(item_ids))
    return RatingsFile(data, user_ids, item_ids, "csv", path)


def _first_line(path: Path) -> str:
    for _, line in _lines(path, "utf-8"):
        return line
    raise DataError(f"{path}: no ratings")


def load_ratings(path: str | Path, *, side_features: bool = True) -> RatingsFile:
    """Load a rating file or directory, recognizing its format.

    * a directory with ``u.data`` (or the ``u.data`` file itself): MovieLens
      100K, with the ``u.user`` / ``u.item`` side features when both files are
      there and ``side_features`` is set (:func:`load_movielens_100k`);
    * a directory with ``ratings.csv``, or a CSV whose first line is
      ``userId,movieId,rating,timestamp``: MovieLens ``ratings.csv``
      (:func:`load_movielens_latest_small`);
    * any other file: a generic CSV ``user,item,rating`` (a 4th column, e.g. a
      timestamp, is ignored), ids arbitrary strings, an optional header line
      (recognized by a non-numeric rating column), quoting as in
      :mod:`csv`.

    Ids are mapped to dense indices in sorted order (numeric when every id is
    an integer); :attr:`RatingsFile.user_ids` / ``item_ids`` give the way back.
    A malformed line, a repeated (user, item) pair or an unreadable file raises
    :class:`fedcast.shared.errors.DataError` naming the file (and the line).
    """
    target = Path(path)
    if target.is_dir():
        if (target / "u.data").is_file():
            return _load_100k(target, side_features)
        if (target / "ratings.csv").is_file():
            return _movielens_csv(target / "ratings.csv")
        raise DataError(f"{target}: a directory without u.data (MovieLens 100K) or ratings.csv")
    if not target.is_file():
        raise DataError(f"{target}: no such file or directory")
    if target.name == "u.data":
        return _load_100k(target.parent, side_features)
    header = tuple(f.strip() for f in _first_line(target).split(","))
    if header[: len(_MOVIELENS_HEADER)] == _MOVIELENS_HEADER:
        return _movielens_csv(target)
    return _generic_csv(target)


def _load_100k(root: Path, side_features: bool) -> RatingsFile:
    with_features = side_features and (root / "u.user").is_file() and (root / "u.item").is_file()
    return _movielens_100k(root, side_features=with_features)
