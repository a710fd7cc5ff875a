"""The aggregator's checkpoints: atomic, self-verifying, a fallback when the newest is damaged."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcast.services.aggregator.checkpoint import KEEP, CheckpointStore
from fedcast.services.edge_client.state import load_last_round, save_last_round
from fedcast.shared.errors import KeyStorageError, LegacyStateError
from fedcast.shared.keystore import write_bytes_atomic, write_json_atomic

MEMBERS = ("line-0", "line-1", "line-2")


def _model(round_id: int, size: int = 300) -> np.ndarray:
    return np.linspace(-1, 1, size) * round_id


def _save(store: CheckpointStore, round_id: int) -> Path:
    return store.save(round_id, "fedmf", _model(round_id), attempt=round_id % 3, members=MEMBERS)


def test_a_checkpoint_round_trips_with_its_result_and_is_private(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.load() is None
    path = _save(store, 7)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = store.load()
    assert loaded is not None and loaded.damaged == () and loaded.highest_round == 7
    checkpoint = loaded.checkpoint
    assert (checkpoint.round, checkpoint.task, checkpoint.attempt, checkpoint.members) == (
        7,
        "fedmf",
        1,
        MEMBERS,
    )
    np.testing.assert_array_equal(checkpoint.model, _model(7))


def test_only_the_newest_two_are_kept(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    for round_id in range(1, 6):
        _save(store, round_id)
    assert sorted(p.name for p in store.directory.iterdir()) == [
        store.path_of(r).name for r in range(6 - KEEP, 6)
    ]
    loaded = store.load()
    assert loaded is not None and loaded.checkpoint.round == 5


@pytest.mark.parametrize(
    "damage",
    ["flip", "truncate", "empty", "header"],
)
def test_a_damaged_newest_falls_back_to_the_previous_and_says_so(tmp_path: Path, damage: str) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    _save(store, 4)
    newest = _save(store, 5)
    raw = bytearray(newest.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "empty":
        raw = bytearray()
    else:  # a consistent digest over a header that lies about the round: still refused
        body = bytes(raw[:-32]).replace(b'"round":5', b'"round":6')
        raw = bytearray(body + hashlib.sha256(body).digest())
    newest.write_bytes(bytes(raw))
    loaded = store.load()
    assert loaded is not None
    assert loaded.checkpoint.round == 4 and loaded.highest_round == 5
    np.testing.assert_array_equal(loaded.checkpoint.model, _model(4))
    assert [name for name, _ in loaded.damaged] == [newest.name]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    for round_id in (1, 2):
        path = _save(store, round_id)
        path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(KeyStorageError, match=r"every checkpoint .* is damaged"):
        store.load()


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is the commit point: a crash before it leaves the old file, no temporary."""
    store = CheckpointStore(tmp_path / "ckpt")
    _save(store, 1)

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyStorageError):
        _save(store, 2)
    monkeypatch.undo()
    assert [p.name for p in store.directory.iterdir()] == [store.path_of(1).name]
    loaded = store.load()
    assert loaded is not None and loaded.checkpoint.round == 1 and loaded.damaged == ()


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_bit_flip_in_the_newest_is_caught(
    tmp_path_factory: pytest.TempPathFactory, position: int, bit: int
) -> None:
    store = CheckpointStore(tmp_path_factory.mktemp("ckpt"))
    _save(store, 1)
    newest = _save(store, 2)
    raw = bytearray(newest.read_bytes())
    raw[position % len(raw)] ^= 1 << bit
    newest.write_bytes(bytes(raw))
    loaded = store.load()
    assert loaded is not None and loaded.checkpoint.round == 1 and len(loaded.damaged) == 1


def _legacy(directory: Path, round_id: int, model: np.ndarray, version: int = 2) -> None:
    data = model.astype("<f8").tobytes()
    write_bytes_atomic(directory / "model.f64", data, secret=True)
    meta = {
        "format": "fedcast.checkpoint",
        "version": version,
        "round": round_id,
        "task": "fedmf",
        "n_params": int(model.size),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    write_json_atomic(directory / "checkpoint.json", meta, secret=True)


def test_the_earlier_two_file_layout_is_read_then_replaced(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    _legacy(store.directory, 9, _model(9))
    loaded = store.load()
    assert loaded is not None and loaded.checkpoint.round == 9 and loaded.checkpoint.attempt is None
    np.testing.assert_array_equal(loaded.checkpoint.model, _model(9))
    _save(store, 10)
    assert sorted(p.name for p in store.directory.iterdir()) == [store.path_of(10).name]


def test_a_torn_earlier_layout_is_reported_not_resumed(tmp_path: Path) -> None:
    """The audit's torn state: the model replaced, the metadata still the old round's."""
    store = CheckpointStore(tmp_path / "ckpt")
    _legacy(store.directory, 9, _model(9))
    (store.directory / "model.f64").write_bytes(_model(10).astype("<f8").tobytes())
    with pytest.raises(KeyStorageError, match="torn"):
        store.load()
    _save(store, 3)  # a newer checkpoint in this layout is preferred (and removes the old files)
    loaded = store.load()
    assert loaded is not None and loaded.checkpoint.round == 3


def test_a_protocol_version_1_checkpoint_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    _legacy(store.directory, 7, np.zeros(30), version=1)
    with pytest.raises(LegacyStateError, match="version-1") as info:
        store.load()
    assert "move the old state directory away" in str(info.value)
    meta = json.loads((store.directory / "checkpoint.json").read_text())
    meta["version"] = 3  # neither: not a checkpoint this build reads
    write_json_atomic(store.directory / "checkpoint.json", meta, secret=True)
    with pytest.raises(KeyStorageError, match="not a fedcast checkpoint") as other:
        store.load()
    assert not isinstance(other.value, LegacyStateError)


def test_an_edge_keeps_its_last_completed_round(tmp_path: Path) -> None:
    path = tmp_path / "last-round.json"
    assert load_last_round(path) == 0
    save_last_round(path, 41)
    assert load_last_round(path) == 41
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for bad in ({"last_completed_round": -1}, {"last_completed_round": True}, {"round": 3}, [41]):
        write_json_atomic(path, bad, secret=True)
        with pytest.raises(KeyStorageError, match="round number"):
            load_last_round(path)
