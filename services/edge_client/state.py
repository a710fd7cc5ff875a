"""The edge client's private local model on disk (FedMF user vectors), 0600 and atomic.

The .npy format with ``allow_pickle=False``: plain float64 arrays, never pickle.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from shared.errors import KeyStorageError
from shared.learning.data import FloatArray

__all__ = ["load_local_state", "save_local_state"]


def save_local_state(path: Path, state: FloatArray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(state, dtype=np.float64), allow_pickle=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise KeyStorageError(f"cannot write {path}: {exc.strerror}") from exc


def load_local_state(path: Path) -> FloatArray | None:
    if not path.exists():
        return None
    try:
        state: FloatArray = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise KeyStorageError(f"cannot read the local model {path}: {exc}") from exc
    if state.dtype != np.float64 or not np.all(np.isfinite(state)):
        raise KeyStorageError(f"{path} is not a finite float64 array")
    return state
