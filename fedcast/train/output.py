"""What ``fedcast train`` writes and prints: the model files, the curve, progress and JSON lines.

``--out DIR`` receives ``model.npz`` (numpy arrays only: ``np.load(path, allow_pickle=False)``
reads it), ``model.json`` (task, scheme, every hyper-parameter, data source, final metrics,
per-round history, fedcast version) and, when the data file had its own user and item ids,
``users.txt`` and ``items.txt`` (line k holds the original id of dense index k).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedcast.shared import __version__
from fedcast.shared.errors import ConfigurationError
from fedcast.train.config import TrainConfig
from fedcast.train.results import RoundLog, TrainResult

__all__ = ["ProgressBar", "dumps", "json_line_writer", "plot_curve", "write_model"]


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """``json.dumps`` that refuses NaN (after mapping non-finite floats to null)."""
    return json.dumps(_finite(value), allow_nan=False)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_bytes(data: bytes, handle: IO[bytes]) -> None:
    handle.write(data)


def write_model(result: TrainResult, config: TrainConfig, out: Path) -> list[Path]:
    """Write the model, its metadata and the id maps into ``out``; return the files written."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} exists and is not a directory")
    written: list[Path] = []
    arrays = {name: np.ascontiguousarray(array) for name, array in result.arrays.items()}
    if any(array.dtype == object for array in arrays.values()):
        raise ConfigurationError("a model array has dtype object: refusing to write it (no pickle)")
    model_path = out / "model.npz"
    _atomic_write(model_path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
    written.append(model_path)
    metadata = {
        "format": "fedcast-model/1",
        "fedcast_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": result.summary(),
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        "settings": config.hyperparameters(),
        **result.metadata,
        "history": [log.as_json() for log in result.history],
    }
    meta_path = out / "model.json"
    _atomic_write(meta_path, lambda handle: handle.write((dumps(metadata) + "\n").encode()))
    written.append(meta_path)
    for name, ids in result.id_maps.items():
        path = out / f"{name}.txt"
        _atomic_write(path, functools.partial(_write_bytes, "".join(f"{i}\n" for i in ids).encode()))
        written.append(path)
    return written


def json_line_writer(target: str) -> tuple[Callable[[RoundLog], None], Callable[[], None]]:
    """``(write, close)`` for ``--log-json``: one JSON object per round, to a file or ``-`` (stdout)."""
    stream: IO[str] = sys.stdout if target == "-" else open(target, "w", encoding="utf-8")

    def write(log: RoundLog) -> None:
        stream.write(dumps(log.as_json()) + "\n")
        stream.flush()

    def close() -> None:
        if stream is not sys.stdout:
            stream.close()

    return write, close


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, total: int, *, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def update(self, log: RoundLog) -> None:
        if not self.enabled:
            return
        width = 30
        done = int(width * log.round / self.total)
        metric = next(
            (f"{k} {v:.4f}" for k, v in log.metrics.items() if k in ("rmse_test", "accuracy_test")), ""
        )
        elapsed = time.perf_counter() - self.start
        bar = "#" * done + "." * (width - done)
        self.stream.write(f"\r[{bar}] round {log.round}/{self.total}  {metric}  {elapsed:6.1f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def plot_curve(result: TrainResult, path: Path) -> None:
    """The learning curve (test metric per round, and the training RMSE for MF) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigurationError("--plot needs matplotlib: pip install 'fedcast[bench]'") from exc
    rounds = [log.round for log in result.history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    keys = [
        k
        for k in ("rmse_test", "rmse_train", "accuracy_test", "loss_test")
        if result.history and k in result.history[0].metrics
    ]
    for key in keys:
        ax.plot(rounds, [log.metrics[key] for log in result.history], label=key.replace("_", " "))
    ax.set_xlabel("round")
    ax.set_title(f"fedcast train: {result.task} ({result.scheme})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
