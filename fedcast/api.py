"""Bring your own model: the public API for federating any numpy-weights model with fedcast.

Write a :class:`NumPyClient` (weights are a list of numpy arrays)::

    from fedcast.api import ClientContext, EvaluateResult, FitResult, NumPyClient

    class Client(NumPyClient):
        def __init__(self, context: ClientContext) -> None:
            self.context = context  # partition_id is None on the aggregator: load no data there

        def get_weights(self):  # deterministic in context.seed: the aggregator starts from it
            return [np.zeros((16, 2)), np.zeros(2)]

        def fit(self, weights, config):
            ...  # train locally from ``weights``
            return FitResult(new_weights, n_examples=len(x_train), metrics={"train_loss": loss})

        def evaluate(self, weights, config):
            return EvaluateResult(loss, n_examples=len(x_test), metrics={"accuracy": acc})

then name it ``package.module:Client``: ``fedcast train --task pkg.mod:Client``
simulates a federation (:func:`run_numpy_federation`), ``FEDCAST_TASK=pkg.mod:Client``
(or ``--task``) makes the aggregator and ``fedcast edge`` services run it. fedcast
trains it with FedAvg, the example weighting inside the encrypted sum; see
docs/MODELS.md for what is encrypted and the ``weight_bound`` / clipping caveats.
"""

from __future__ import annotations

from fedcast.shared.learning.plugin import (
    ClientContext,
    ClientFactory,
    Config,
    EvaluateResult,
    FederationResult,
    FitResult,
    NumPyClient,
    PluginClientTask,
    PluginServerTask,
    RoundRecord,
    Scalar,
    Weights,
    load_client_factory,
    run_numpy_federation,
)

__all__ = [
    "ClientContext",
    "ClientFactory",
    "Config",
    "EvaluateResult",
    "FederationResult",
    "FitResult",
    "NumPyClient",
    "PluginClientTask",
    "PluginServerTask",
    "RoundRecord",
    "Scalar",
    "Weights",
    "load_client_factory",
    "run_numpy_federation",
]
