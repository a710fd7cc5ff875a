"""Durable, self-verifying checkpoints of the global model and the last completed round.

Each completed round is one file, ``round-<round>.ckpt`` in the checkpoint directory::

    b"FCCKPT3\\n" | u32 big-endian header length | header (JSON) | model (little-endian float64)
    | SHA-256 of everything before it

The header holds the round, the attempt that completed it, its members (so a restarted
aggregator can re-send a result that may never have gone out), the task and the model
size. The file is written whole to a temporary name, fsynced and renamed (and the
directory fsynced): a crash leaves the old checkpoint or the new one, never a mix, and the
trailing digest catches damage at rest. The newest :data:`KEEP` files are kept; when the
newest does not verify, :meth:`CheckpointStore.load` falls back to the next and says how
many rounds were lost. The round numbers in the file names are trusted only to order the
files and, for a damaged one, to say which round ids were already used (a restarted
aggregator never reuses one: running edges reject a round id they completed).

The layout of earlier builds (``model.f64`` + ``checkpoint.json``, written as two renames,
which a crash could tear) is still read, as the oldest candidate, and removed by the first
save in this layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fedcast.shared.errors import DataError, KeyStorageError, LegacyStateError
from fedcast.shared.keystore import read_json, write_bytes_atomic
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import model_from_bytes, model_to_bytes

__all__ = ["KEEP", "Checkpoint", "CheckpointStore", "LoadedCheckpoint"]

log = logging.getLogger(__name__)

KEEP = 2  # the newest and the one before it: a damaged newest costs one round, not the run
_MAGIC = b"FCCKPT3\n"
_LENGTH = struct.Struct(">I")
_DIGEST = 32
_MAX_HEADER = 1 << 24  # members' ids for the largest federation fit easily
_NAME = re.compile(r"^round-(\d{12})\.ckpt$")
_LEGACY_FORMAT = "fedcast.checkpoint"
_LEGACY_META = "checkpoint.json"
_LEGACY_MODEL = "model.f64"


@dataclass(frozen=True)
class Checkpoint:
    round: int  # the last completed round
    task: str
    model: FloatArray
    attempt: int | None = None  # the attempt that completed it; None in the legacy layout
    members: tuple[str, ...] = field(default=())  # its members; () in the legacy layout


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What :meth:`CheckpointStore.load` found: the newest good checkpoint and what it skipped."""

    checkpoint: Checkpoint
    damaged: tuple[tuple[str, str], ...]  # (file name, why) of each newer file that did not verify
    highest_round: int  # the highest round any checkpoint file names, damaged ones included


class CheckpointStore:
    """Save and load the aggregator's checkpoints in one directory (0700, files 0600)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_of(self, round_id: int) -> Path:
        return self.directory / f"round-{round_id:012d}.ckpt"

    def save(
        self,
        round_id: int,
        task: str,
        model: FloatArray,
        *,
        attempt: int | None = None,
        members: tuple[str, ...] = (),
    ) -> Path:
        """Write round ``round_id``'s checkpoint durably, then drop all but the newest KEEP."""
        data = model_to_bytes(model)
        header = {
            "round": int(round_id),
            "attempt": None if attempt is None else int(attempt),
            "members": list(members),
            "task": task,
            "n_params": int(model.size),
        }
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        body = _MAGIC + _LENGTH.pack(len(head)) + head + data
        path = write_bytes_atomic(
            self.path_of(round_id), body + hashlib.sha256(body).digest(), secret=True
        )  # the model is the aggregator's alone: 0600
        self._prune()
        return path

    def _rounds(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def _prune(self) -> None:
        for old in self._rounds()[KEEP:]:
            self.path_of(old).unlink(missing_ok=True)
        for name in (_LEGACY_META, _LEGACY_MODEL):  # superseded by a checkpoint in this layout
            (self.directory / name).unlink(missing_ok=True)

    def read(self, round_id: int) -> Checkpoint:
        """Round ``round_id``'s checkpoint; KeyStorageError if it is missing or does not verify."""
        path = self.path_of(round_id)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise KeyStorageError(f"cannot read {path}: {exc.strerror}") from exc
        if len(raw) < len(_MAGIC) + _LENGTH.size + _DIGEST or not raw.startswith(_MAGIC):
            raise KeyStorageError(f"{path} is not a fedcast checkpoint (or is truncated)")
        body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
        if hashlib.sha256(body).digest() != digest:
            raise KeyStorageError(f"{path} does not match its digest (damaged)")
        (length,) = _LENGTH.unpack_from(body, len(_MAGIC))
        start = len(_MAGIC) + _LENGTH.size
        if length > _MAX_HEADER or start + length > len(body):
            raise KeyStorageError(f"{path} has a malformed header length")
        try:
            header = json.loads(body[start : start + length])
            model = model_from_bytes(body[start + length :], int(header["n_params"]))
            checkpoint = Checkpoint(
                round=int(header["round"]),
                task=str(header["task"]),
                model=model,
                attempt=None if header["attempt"] is None else int(header["attempt"]),
                members=tuple(str(m) for m in header["members"]),
            )
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise KeyStorageError(f"{path} is malformed: {exc}") from exc
        if checkpoint.round != round_id:
            raise KeyStorageError(f"{path} holds round {checkpoint.round}, not {round_id}")
        return checkpoint

    def load(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that verifies, None if there is none at all.

        Damaged newer files are skipped (and reported); KeyStorageError only if every
        checkpoint present is damaged: starting afresh then would silently lose the run.
        """
        rounds = self._rounds()
        damaged: list[tuple[str, str]] = []
        highest = rounds[0] if rounds else 0
        for round_id in rounds:
            try:
                return LoadedCheckpoint(self.read(round_id), tuple(damaged), highest)
            except KeyStorageError as exc:
                damaged.append((self.path_of(round_id).name, str(exc)))
        legacy = self._load_legacy(damaged)
        if legacy is not None:
            return LoadedCheckpoint(legacy, tuple(damaged), max(highest, legacy.round))
        if damaged:
            raise KeyStorageError(
                f"every checkpoint in {self.directory} is damaged ({'; '.join(w for _, w in damaged)}); "
                "restore one from a backup, or move the directory away to start the model afresh"
            )
        return None

    def _load_legacy(self, damaged: list[tuple[str, str]]) -> Checkpoint | None:
        meta_path, model_path = self.directory / _LEGACY_META, self.directory / _LEGACY_MODEL
        if not meta_path.exists():
            return None
        meta = read_json(meta_path)
        if isinstance(meta, dict) and meta.get("format") == _LEGACY_FORMAT and meta.get("version") == 1:
            raise LegacyStateError(
                f"{meta_path} was written by a fedcast protocol-version-1 aggregator: refused. A "
                "version-2 federation starts afresh (new modulus, new keys): move the old state "
                "directory away (docs/SECURITY.md)"
            )
        if not isinstance(meta, dict) or meta.get("format") != _LEGACY_FORMAT or meta.get("version") != 2:
            raise KeyStorageError(f"{meta_path} is not a fedcast checkpoint")
        try:
            data = model_path.read_bytes()
        except OSError as exc:
            damaged.append((_LEGACY_MODEL, f"cannot read {model_path}: {exc.strerror}"))
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            damaged.append((_LEGACY_MODEL, f"{model_path} does not match {meta_path} (torn)"))
            return None
        try:
            model = model_from_bytes(data, int(meta["n_params"]))
            return Checkpoint(int(meta["round"]), str(meta["task"]), model)
        except (KeyError, TypeError, ValueError, DataError) as exc:
            damaged.append((_LEGACY_META, f"{meta_path} is malformed: {exc}"))
            return None
