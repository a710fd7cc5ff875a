"""``fedcast aggregator export``: the current global model as an ``.npz`` plus a JSON sidecar.

The model is the newest checkpoint in the aggregator's state directory that verifies
(:class:`~fedcast.services.aggregator.checkpoint.CheckpointStore`: its SHA-256 is
checked, a damaged newest one is skipped for the one before it, exactly what a
restarted aggregator would resume from). The export holds arrays only
(``np.load(path, allow_pickle=False)`` reads it):

* FedMF: ``item_factors``, shape ``(n_items, latent_dim)`` (the item matrix V; the user
  vectors never leave the devices);
* FedAvg: ``params``, the flat parameter vector of the task's model;
* ``metadata``: the JSON metadata below as a 0-d unicode string array.

The sidecar ``<out>.json`` (``model.npz`` -> ``model.json``) holds the same metadata plus
the name and SHA-256 of the ``.npz``: task and hyper-parameters (the :class:`TaskSpec`),
round, attempt, number of members, array shapes, federation, creation time (UTC),
fedcast version, and the checkpoint file with the SHA-256 of the whole file
(``sha256sum`` prints the same). Both files are written atomically with mode 0600: the
aggregate model is readable only by the aggregator by design (docs/SECURITY.md), and
exporting it is an operator's decision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedcast.services.aggregator.checkpoint import CheckpointStore
from fedcast.shared import __version__
from fedcast.shared.errors import ExportError, KeyStorageError
from fedcast.shared.keystore import write_bytes_atomic
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import TaskSpec

__all__ = ["CHECKPOINT_SUBDIR", "EXPORT_FORMAT", "ExportInfo", "export_model", "sidecar_path"]

EXPORT_FORMAT = "fedcast.model-export"
EXPORT_VERSION = 1
CHECKPOINT_SUBDIR = "checkpoint"  # <state_dir>/checkpoint, as the aggregator service keeps it
_LEGACY_MODEL = "model.f64"  # the model file of the earlier two-file layout (checkpoint.py)


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`export_model` wrote."""

    out_path: Path
    metadata_path: Path
    round: int
    task: str
    array: str  # "item_factors" (FedMF) or "params" (FedAvg)
    shape: tuple[int, ...]
    checkpoint_file: str
    checkpoint_sha256: str  # of the whole checkpoint file
    npz_sha256: str
    skipped: tuple[str, ...]  # newer checkpoint files that did not verify (their rounds are lost)
    metadata: dict[str, Any]


def sidecar_path(out_path: str | Path) -> Path:
    """The metadata sidecar of an export: ``model.npz`` -> ``model.json``."""
    return Path(out_path).with_suffix(".json")


def _shaped(task: TaskSpec, model: FloatArray) -> tuple[str, FloatArray]:
    if model.size != task.model_size:
        raise ExportError(
            f"the checkpoint's model has {model.size} parameters, task {task.name!r} as configured has "
            f"{task.model_size}: set the FEDCAST_TASK_* variables as the aggregator has them"
        )
    if task.name == "fedmf":
        return "item_factors", np.ascontiguousarray(model.reshape(task.n_items, task.latent_dim))
    return "params", np.ascontiguousarray(model)


def _checkpoint_file(store: CheckpointStore, round_id: int, damaged: tuple[str, ...]) -> tuple[Path, str]:
    """The file the checkpoint was read from and the SHA-256 of all its bytes.

    A round's file is written once and never rewritten (round ids are not reused), so
    reading it again yields the bytes just verified, unless the aggregator pruned it.
    """
    path = store.path_of(round_id)
    if path.name in damaged or not path.is_file():
        path = store.directory / _LEGACY_MODEL  # the earlier layout's model file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExportError(
            f"cannot read {path} again ({exc.strerror}): the aggregator may have pruned it; export again"
        ) from exc
    return path, hashlib.sha256(raw).hexdigest()


def _npz_bytes(arrays: dict[str, np.ndarray[Any, Any]]) -> bytes:
    buffer = io.BytesIO()  # to bytes first: np.savez on a path would append ".npz" to it
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def export_model(
    state_dir: str | Path,
    out_path: str | Path,
    task: TaskSpec,
    *,
    federation: str = "default",
    now: float | None = None,
) -> ExportInfo:
    """Write the newest good checkpoint under ``state_dir`` to ``out_path`` (npz) and its sidecar.

    Raises :class:`ExportError` when there is no checkpoint, every one is damaged, it is
    for another task or model size, or the files cannot be written.
    """
    out = Path(out_path)
    meta_path = sidecar_path(out)
    if meta_path == out:
        raise ExportError(f"{out}: give the model a name not ending in .json (the metadata goes there)")
    store = CheckpointStore(Path(state_dir) / CHECKPOINT_SUBDIR)
    try:
        loaded = store.load()
    except KeyStorageError as exc:  # every checkpoint damaged, or a refused legacy layout
        raise ExportError(f"no good checkpoint to export: {exc}") from exc
    if loaded is None:
        raise ExportError(
            f"no checkpoint in {store.directory}: the aggregator has completed no round with this state "
            "directory (FEDCAST_STATE_DIR or --state-dir)"
        )
    checkpoint = loaded.checkpoint
    if checkpoint.task != task.name:
        raise ExportError(
            f"the checkpoint is for task {checkpoint.task!r}, configured {task.name!r}: set FEDCAST_TASK "
            "as the aggregator has it"
        )
    name, array = _shaped(task, np.asarray(checkpoint.model, dtype=np.float64))
    skipped = tuple(file for file, _ in loaded.damaged)
    source, source_sha = _checkpoint_file(store, checkpoint.round, skipped)
    created = time.time() if now is None else now
    metadata: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "task": task.name,
        "task_spec": json.loads(json.dumps(dataclasses.asdict(task))),  # options: pairs as lists
        "round": checkpoint.round,
        "attempt": checkpoint.attempt,
        "n_members": len(checkpoint.members),
        "arrays": {name: {"shape": list(array.shape), "dtype": str(array.dtype)}},
        "federation": federation,
        "created": datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fedcast_version": __version__,
        "checkpoint": {"file": source.name, "sha256": source_sha},
        "skipped_damaged_checkpoints": list(skipped),
    }
    embedded = json.dumps(metadata, sort_keys=True)
    payload = _npz_bytes({name: array, "metadata": np.array(embedded, dtype=np.str_)})
    npz_sha = hashlib.sha256(payload).hexdigest()
    sidecar = {**metadata, "npz": {"file": out.name, "sha256": npz_sha}}
    try:
        write_bytes_atomic(out, payload, secret=True)  # 0600: the model is the aggregator's alone
        write_bytes_atomic(
            meta_path, json.dumps(sidecar, sort_keys=True, indent=1).encode() + b"\n", secret=True
        )
    except (KeyStorageError, OSError) as exc:
        raise ExportError(f"cannot write the export: {exc}") from exc
    return ExportInfo(
        out_path=out,
        metadata_path=meta_path,
        round=checkpoint.round,
        task=task.name,
        array=name,
        shape=tuple(int(d) for d in array.shape),
        checkpoint_file=source.name,
        checkpoint_sha256=source_sha,
        npz_sha256=npz_sha,
        skipped=skipped,
        metadata=metadata,
    )
