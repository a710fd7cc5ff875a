"""FedAvg over any :class:`~fedcast.shared.secure_sum.SecureSum`, with the weights inside the sum.

Eq. (1) of the multi-key ElGamal paper (section 2.1) updates the global model
with the sample-weighted average of the client updates,
``W <- W + sum_i (n_i / n) * delta_i`` with ``n = sum_i n_i``. Sending ``n_i``
in the clear would tell the server each client's data volume, and dividing by
``n`` on the client would require knowing the other clients' counts. So each
selected client uploads, through the secure sum, the single vector

    u_i = [ w_i * delta_i , w_i ],   w_i = n_i / N_max,

where ``delta_i`` is its local model change (trained params minus the global
params it started from) and ``N_max`` (``FedAvgConfig.weight_bound``) is a
public upper bound on samples per client. The server receives only
``sum_i u_i`` and computes

    W <- W + (sum_i w_i delta_i) / (sum_i w_i),

which is exactly eq. (1) because the ``1 / N_max`` factors cancel.

**What the server learns per round:** the weighted sum of the updates
``sum_i w_i delta_i`` and the total weight ``sum_i w_i`` (that is, the total
number of training samples of the selected clients, since ``N_max`` is
public), hence the new global model. It learns nothing about an individual
``n_i`` or ``delta_i`` beyond what these sums imply (with at least two clients
per round, which the configuration enforces: one client's "sum" is its own
upload).

**Range.** The encrypted schemes quantize to fixed point (about 16 fraction
bits) and clip every uploaded value to ``[-C, C]`` (default ``C = 4``). Here
``0 < w_i <= 1`` and ``|w_i * delta_i| <= |delta_i|``. On the synthetic data
(16 features, MLP or logistic regression, lr 0.05, 2 local epochs) the largest
uploaded entry is about 0.7 in the first round and below 0.1 from then on;
aggressive settings (lr 0.5, 5 epochs) reach about 3 in the first round, close
to ``C``, so keep ``learning_rate * local_epochs`` modest. Clients clip to
``value_bound`` themselves, so plaintext and encrypted runs see the same
values, and the round record counts the clipped entries (a simulation
diagnostic; a real server does not see it). Choose ``N_max`` close to the
real largest client: a weight far below 1 loses relative precision to the
2^-16 quantization step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.features import FeatureData
from fedcast.shared.learning.metrics import accuracy, f1_score
from fedcast.shared.learning.models import Model, train_sgd
from fedcast.shared.secure_sum import SecureSum

__all__ = [
    "FedAvgConfig",
    "FedAvgResult",
    "RoundRecord",
    "client_upload",
    "evaluate",
    "run_fedavg",
    "server_update",
]

FloatArray = NDArray[np.float64]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class FedAvgConfig:
    """FedAvg hyper-parameters; invalid values raise :class:`ConfigurationError`.

    ``batch_size=None`` means full-batch local gradient descent.
    ``weight_bound`` is the public samples-per-client bound ``N_max``; ``None``
    uses the largest client of the simulation (convenient, but in a deployment
    it must be a configured constant, since deriving it leaks the maximum).
    ``value_bound`` is the clip bound ``C`` of the aggregation scheme.
    """

    rounds: int = 20
    clients_per_round: int = 5
    local_epochs: int = 1
    batch_size: int | None = 32
    learning_rate: float = 0.1
    seed: int = 0
    weight_bound: int | None = None
    value_bound: float = 4.0

    def __post_init__(self) -> None:
        for name, minimum in (("rounds", 1), ("local_epochs", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not _is_int(self.clients_per_round) or self.clients_per_round < 2:
            raise ConfigurationError(
                "clients_per_round must be an integer >= 2 (a single client's sum is its own "
                f"update), got {self.clients_per_round!r}"
            )
        for name in ("batch_size", "weight_bound"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigurationError(f"{name} must be None or an integer >= 1, got {value!r}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0.0):
            raise ConfigurationError(f"learning_rate must be finite and > 0: {self.learning_rate}")
        if not (np.isfinite(self.value_bound) and self.value_bound >= 1.0):
            # The weight entry w_i can be 1 and must pass unclipped.
            raise ConfigurationError(f"value_bound must be finite and >= 1: {self.value_bound}")


@dataclass(frozen=True)
class RoundRecord:
    """One round: who took part, what the server learned, and test metrics after it."""

    round: int
    clients: tuple[int, ...]
    total_weight: float
    test_loss: float
    test_accuracy: float
    test_f1: float
    clipped_values: int


@dataclass(frozen=True, eq=False)
class FedAvgResult:
    """Final global parameters and the per-round history."""

    params: FloatArray
    history: tuple[RoundRecord, ...]


def evaluate(model: Model, data: FeatureData) -> tuple[float, float, float]:
    """``(loss, accuracy, F1)``; F1 treats every non-zero class as "defect" vs ok."""
    predicted = model.predict(data.x)
    defect_true = (data.y != 0).astype(np.int64)
    defect_pred = (predicted != 0).astype(np.int64)
    # metrics.accuracy takes 0/1 labels; with more classes score "is correct" against all-ones.
    correct = (predicted == data.y).astype(np.int64)
    return (
        model.loss(data.x, data.y),
        accuracy(np.ones_like(correct), correct),
        f1_score(defect_true, defect_pred),
    )


def client_upload(
    model: Model,
    global_params: FloatArray,
    data: FeatureData,
    config: FedAvgConfig,
    *,
    weight_bound: int,
    seed: int | np.random.Generator,
) -> tuple[FloatArray, int]:
    """Train locally from ``global_params``; return ``([w*delta, w]`` clipped, #clipped).

    ``w = n_i / weight_bound``. ``model`` is used as scratch space: its
    parameters are overwritten.
    """
    if not 1 <= data.n_samples <= weight_bound:
        raise ConfigurationError(
            f"client has {data.n_samples} samples, outside [1, weight_bound={weight_bound}]"
        )
    model.set_params(global_params)
    train_sgd(
        model,
        data.x,
        data.y,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=seed,
    )
    weight = data.n_samples / weight_bound
    upload = np.append(weight * (model.get_params() - global_params), weight)
    clipped = int(np.count_nonzero(np.abs(upload) > config.value_bound))
    return np.clip(upload, -config.value_bound, config.value_bound), clipped


def server_update(global_params: FloatArray, aggregate: FloatArray) -> tuple[FloatArray, float]:
    """Apply eq. (1) from the summed uploads; return ``(new_params, total_weight)``."""
    aggregate = np.asarray(aggregate, dtype=np.float64)
    if aggregate.shape != (global_params.size + 1,):
        raise DataError(f"aggregate has shape {aggregate.shape}, expected ({global_params.size + 1},)")
    total_weight = float(aggregate[-1])
    if not (np.isfinite(total_weight) and total_weight > 0.0):
        raise DataError(f"aggregate total weight must be > 0, got {total_weight}")
    return global_params + aggregate[:-1] / total_weight, total_weight


def run_fedavg(
    model: Model,
    clients: Sequence[FeatureData],
    test: FeatureData,
    aggregator: SecureSum,
    config: FedAvgConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FedAvgResult:
    """Run ``config.rounds`` rounds of FedAvg starting from ``model``'s parameters.

    Each round samples ``clients_per_round`` distinct clients (seeded), each
    trains from the current global parameters with its own seeded generator
    (derived from ``(seed, round, client)``, so results do not depend on the
    order clients are simulated in), and the uploads go through
    ``aggregator.sum``. ``model`` ends holding the final global parameters.
    ``on_round`` sees each round's record as soon as it is evaluated; an exception it
    raises (e.g. a divergence) ends the run.
    """
    if config.clients_per_round > len(clients):
        raise ConfigurationError(
            f"clients_per_round={config.clients_per_round} exceeds the {len(clients)} clients"
        )
    weight_bound = config.weight_bound or max(c.n_samples for c in clients)
    selector = np.random.default_rng(config.seed)
    params = model.get_params()
    history: list[RoundRecord] = []
    for round_index in range(config.rounds):
        chosen = np.sort(selector.choice(len(clients), config.clients_per_round, replace=False))
        uploads: list[FloatArray] = []
        clipped = 0
        for k in chosen:
            client_seed = np.random.SeedSequence(config.seed, spawn_key=(round_index, int(k)))
            upload, n_clipped = client_upload(
                model,
                params,
                clients[k],
                config,
                weight_bound=weight_bound,
                seed=np.random.default_rng(client_seed),
            )
            uploads.append(upload)
            clipped += n_clipped
        params, total_weight = server_update(params, aggregator.sum(uploads))
        model.set_params(params)
        loss, acc, f1 = evaluate(model, test)
        history.append(
            RoundRecord(
                round=round_index + 1,
                clients=tuple(int(k) for k in chosen),
                total_weight=total_weight,
                test_loss=loss,
                test_accuracy=acc,
                test_f1=f1,
                clipped_values=clipped,
            )
        )
        if on_round is not None:
            on_round(history[-1])
    return FedAvgResult(params=params.copy(), history=tuple(history))
