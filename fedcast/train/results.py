"""What a ``fedcast train`` run reports: one :class:`RoundLog` per round, one :class:`TrainResult`.

:class:`DivergenceWatch` ends a run whose model holds NaN or infinity, or whose loss explodes,
with :class:`~fedcast.shared.errors.TrainingDivergedError`: a NaN never reaches a report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcast.shared.errors import TrainingDivergedError
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.mf import DIVERGENCE_FACTOR

__all__ = ["EXPLODING_FACTOR", "DivergenceWatch", "RoundCallback", "RoundLog", "TrainResult"]

# A round whose training loss exceeds this many times the first round's is "exploding"
# (the same factor as MF's own check, fedcast.shared.learning.mf.DIVERGENCE_FACTOR).
EXPLODING_FACTOR = DIVERGENCE_FACTOR


@dataclass(frozen=True)
class RoundLog:
    """One round as ``fedcast train`` reports it (``--log-json`` prints :meth:`as_json`)."""

    round: int
    seconds: float
    metrics: dict[str, float]
    clipped: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seconds": round(self.seconds, 6),
            "clipped": self.clipped,
            **self.metrics,
        }


@dataclass
class TrainResult:
    """What a run produced: final metrics, the model's arrays, its metadata and the curve."""

    task: str
    scheme: str
    rounds: int  # completed rounds
    metrics: dict[str, float]  # final test metrics: rmse_test, mae_test or accuracy_test, ...
    seconds: float
    diverged: bool
    divergence: str = ""
    history: list[RoundLog] = field(default_factory=list)
    arrays: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    id_maps: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: finite numbers or null, never NaN."""
        out: dict[str, Any] = {
            "task": self.task,
            "scheme": self.scheme,
            "rounds": self.rounds,
            "seconds": round(self.seconds, 3),
            "diverged": self.diverged,
        }
        keys = (
            ("rmse_test", "mae_test")
            if "rmse_test" in self.metrics or self.task in ("fedmf", "fedmmf")
            else (
                "accuracy_test",
                "loss_test",
            )
        )
        for key in keys:
            value = self.metrics.get(key)
            out[key] = value if value is not None and math.isfinite(value) and not self.diverged else None
        if self.divergence:
            out["divergence"] = self.divergence
        return out


RoundCallback = Callable[[RoundLog], None]


class DivergenceWatch:
    """Divergence watch: non-finite values, or a training loss exploding past its first value."""

    def __init__(self) -> None:
        self.first: float | None = None

    def check(self, round_index: int, train_loss: float, params: Sequence[FloatArray]) -> None:
        if not math.isfinite(train_loss) or not all(np.all(np.isfinite(p)) for p in params):
            raise TrainingDivergedError(
                f"training diverged in round {round_index}: the model holds NaN or infinity "
                "(lower --learning-rate, or --clip for the secure scheme)"
            )
        if self.first is None:
            self.first = max(train_loss, 1e-12)
        elif train_loss > EXPLODING_FACTOR * self.first:
            raise TrainingDivergedError(
                f"training diverged in round {round_index}: the training loss grew from {self.first:.4g} "
                f"to {train_loss:.4g} (lower --learning-rate)"
            )
