"""The edge client's private local model on disk (FedMF user vectors), 0600 and atomic.

The .npy format with ``allow_pickle=False``: plain float64 arrays, never pickle.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from shared.errors import KeyStorageError
from shared.keystore import write_bytes_atomic
from shared.learning.data import FloatArray

__all__ = ["load_local_state", "save_local_state"]


def save_local_state(path: Path, state: FloatArray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(state, dtype=np.float64), allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue(), secret=True)  # derived from private data: 0600


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
