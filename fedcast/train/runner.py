"""Run one federation in this process: load the data, split it, train round by round, evaluate.

The federated step itself is the library's (FedMF, FedMMF, FedAvg, or a user's
``NumPyClient``); this module only wires data, scheme and callbacks together and
watches every round for divergence, so that a NaN never reaches a report.
"""

from __future__ import annotations

import time

from fedcast.shared.errors import TrainingDivergedError
from fedcast.shared.secure_sum import PlaintextSum, SecureSum
from fedcast.train.config import TrainConfig
from fedcast.train.datasets import load_features_split, load_rating_split
from fedcast.train.results import RoundCallback, RoundLog, TrainResult
from fedcast.train.schemes import AutoClipSum, make_scheme

__all__ = ["run_training"]


def run_training(config: TrainConfig, *, on_round: RoundCallback | None = None) -> TrainResult:
    """Train as ``config`` says; a divergence ends the run with ``diverged=True`` (never raises it)."""
    start = time.perf_counter()
    history: list[RoundLog] = []

    def record(log: RoundLog) -> None:
        history.append(log)
        if on_round is not None:
            on_round(log)

    result = TrainResult(config.task, config.scheme, 0, {}, 0.0, False)
    schemes = _Schemes(config)
    try:
        if config.is_mf:
            from fedcast.train.mf import train_mf

            result = train_mf(config, load_rating_split(config), schemes.build, record)
        else:
            features = load_features_split(config)
            if config.is_plugin:
                from fedcast.train.plugin import train_plugin

                result = train_plugin(config, features, schemes.build, record)
            else:
                from fedcast.train.fedavg import train_fedavg

                result = train_fedavg(config, features, schemes.build, record)
    except TrainingDivergedError as exc:
        result = TrainResult(config.task, config.scheme, len(history), {}, 0.0, True, str(exc))
    finally:
        schemes.close()
    result.history = history
    result.seconds = time.perf_counter() - start
    if schemes.clip is not None:
        result.metadata["secure_clip"] = schemes.clip
    return result


class _Schemes:
    """Builds the run's SecureSum (plaintext, or the protocol for n clients) and closes it."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.built: list[AutoClipSum] = []

    def build(self, n_clients: int) -> SecureSum:
        if self.config.scheme == "plaintext":
            return PlaintextSum()
        scheme = make_scheme(self.config, n_clients)
        self.built.append(scheme)
        return scheme

    @property
    def clip(self) -> float | None:
        return self.built[-1].clip if self.built else None

    def close(self) -> None:
        for scheme in self.built:
            scheme.close()
