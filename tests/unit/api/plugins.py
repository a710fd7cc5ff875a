"""Toy model plugins for the API tests (named ``tests.unit.api.plugins:...``)."""

from __future__ import annotations

import numpy as np

from fedcast.api import ClientContext, Config, EvaluateResult, FitResult, NumPyClient, Weights

#: Per partition: where fit moves the weights, and how many examples it claims.
TARGETS = [np.float32(1.0), np.float32(3.0), np.float32(-2.0)]
EXAMPLES = [10, 30, 60]


class Toward(NumPyClient):
    """fit jumps to a partition-specific target: FedAvg's answer is the example-weighted mean."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        self.fits = 0

    def get_weights(self) -> Weights:
        rng = np.random.default_rng(self.context.seed)
        return [rng.standard_normal((2, 3)).astype(np.float32), np.zeros(2)]

    def fit(self, weights: Weights, config: Config) -> FitResult:
        self.fits += 1
        i = self.context.partition_id or 0
        new = [np.full_like(weights[0], TARGETS[i]), weights[1] + float(i)]
        return FitResult(new, EXAMPLES[i], {"step": float(i), "round": float(config.get("round", 0))})

    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        i = self.context.partition_id or 0
        loss = float(np.mean((weights[0] - TARGETS[i]) ** 2))
        return EvaluateResult(loss, EXAMPLES[i], {"mean": float(np.mean(weights[0]))})


def make_toward(context: ClientContext) -> NumPyClient:
    return Toward(context)


class Holder:
    """For a dotted attribute: ``plugins:Holder.make``."""

    make = staticmethod(make_toward)


class Reshaping(Toward):
    def fit(self, weights: Weights, config: Config) -> FitResult:
        return FitResult([weights[0].reshape(3, 2), weights[1]], 5)


class Retyping(Toward):
    def fit(self, weights: Weights, config: Config) -> FitResult:
        return FitResult([weights[0].astype(np.float64), weights[1]], 5)


class Exploding(Toward):
    def fit(self, weights: Weights, config: Config) -> FitResult:
        return FitResult([weights[0] * np.float32(np.inf), weights[1]], 5)


class NaNLoss(Toward):
    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        return EvaluateResult(float("nan"), 4)


class WrongResult(Toward):
    def fit(self, weights: Weights, config: Config) -> FitResult:
        return (weights, 5)  # type: ignore[return-value]


class IntegerWeights(Toward):
    def get_weights(self) -> Weights:
        return [np.zeros(3, dtype=np.int64)]


class Abstract(NumPyClient):
    """Forgets evaluate: cannot be instantiated."""

    def get_weights(self) -> Weights:
        return [np.zeros(1)]

    def fit(self, weights: Weights, config: Config) -> FitResult:
        return FitResult(weights, 1)


class NotAClient:
    def __init__(self, context: ClientContext) -> None:
        del context


def returns_a_string(context: ClientContext) -> str:
    return "not a client"


NOT_CALLABLE = 42


class Crashing(Toward):
    def fit(self, weights: Weights, config: Config) -> FitResult:
        raise ValueError("bad batch")

    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        raise KeyError("metric")
