"""Durable checkpoints of the global model and the last completed round.

Two files in the checkpoint directory: ``model.f64`` (the model, little-endian
float64) and ``checkpoint.json`` (round, task, size, SHA-256 of the model
bytes). Each is written atomically (temporary file, fsync, rename, fsync of
the directory), the model first: a crash between the two leaves the previous
``checkpoint.json`` whose hash no longer matches the new model file only if
the model was replaced, so the hash is checked on load and a mismatch is
reported instead of resuming from a torn state.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from shared.errors import DataError, KeyStorageError, LegacyStateError
from shared.keystore import read_json, write_bytes_atomic, write_json_atomic
from shared.learning.data import FloatArray
from shared.learning.tasks import model_from_bytes, model_to_bytes

__all__ = ["Checkpoint", "CheckpointStore"]

_FORMAT = "fedcast.checkpoint"
_VERSION = 2  # protocol version 2; a version-1 checkpoint is refused


@dataclass(frozen=True)
class Checkpoint:
    round: int  # the last completed round
    task: str
    model: FloatArray


class CheckpointStore:
    """Save and load the aggregator's checkpoint in one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def _meta(self) -> Path:
        return self.directory / "checkpoint.json"

    @property
    def _model(self) -> Path:
        return self.directory / "model.f64"

    def save(self, round_id: int, task: str, model: FloatArray) -> None:
        data = model_to_bytes(model)
        write_bytes_atomic(self._model, data, secret=True)  # the model is the aggregator's alone
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "round": int(round_id),
            "task": task,
            "n_params": int(model.size),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        write_json_atomic(self._meta, meta, secret=True)

    def load(self) -> Checkpoint | None:
        """The checkpoint, None if there is none yet; KeyStorageError if it is corrupt."""
        if not self._meta.exists():
            return None
        meta = read_json(self._meta)
        if isinstance(meta, dict) and meta.get("format") == _FORMAT and meta.get("version") == 1:
            raise LegacyStateError(
                f"{self._meta} was written by a fedcast protocol-version-1 aggregator: refused. A version-2 "
                "federation starts afresh (new modulus, new keys): move the old state directory away "
                "(docs/SECURITY.md)"
            )
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise KeyStorageError(f"{self._meta} is not a fedcast checkpoint")
        try:
            data = self._model.read_bytes()
        except OSError as exc:
            raise KeyStorageError(f"cannot read {self._model}: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise KeyStorageError(f"{self._model} does not match {self._meta} (torn or corrupt checkpoint)")
        try:
            model = model_from_bytes(data, int(meta["n_params"]))
            return Checkpoint(int(meta["round"]), str(meta["task"]), model)
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise KeyStorageError(f"{self._meta} is malformed: {exc}") from exc
