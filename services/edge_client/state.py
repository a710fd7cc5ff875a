"""The edge client's durable state: its private local model and its last completed round.

The local model (FedMF user vectors) is .npy with ``allow_pickle=False``: plain float64
arrays, never pickle. The last completed round is a small JSON file, so a restarted
device still refuses a replayed announcement of a round it completed. Both 0600, atomic.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fedcast.shared.errors import KeyStorageError
from fedcast.shared.keystore import read_secret_json, write_bytes_atomic, write_json_atomic
from fedcast.shared.learning.data import FloatArray

__all__ = ["load_last_round", "load_local_state", "save_last_round", "save_local_state"]


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


def save_last_round(path: Path, round_id: int) -> None:
    write_json_atomic(path, {"last_completed_round": int(round_id)}, secret=True)


def load_last_round(path: Path, *, check_permissions: bool = True) -> int:
    """The last round this device completed; 0 if it never completed one."""
    if not path.exists():
        return 0
    saved = read_secret_json(path, check_permissions=check_permissions)
    value = saved.get("last_completed_round") if isinstance(saved, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise KeyStorageError(f"{path} does not hold a round number")
    return value
