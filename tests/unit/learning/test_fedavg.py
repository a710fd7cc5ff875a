"""FedAvg through a SecureSum: eq. (1) weighting, equivalence with GD, convergence."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.features import (
    FeatureData,
    make_defect_features,
    partition_dirichlet,
    partition_iid,
    train_test_split,
)
from fedcast.shared.learning.fedavg import (
    FedAvgConfig,
    client_upload,
    evaluate,
    run_fedavg,
    server_update,
)
from fedcast.shared.learning.models import MLP, LogisticRegression, train_sgd
from fedcast.shared.secure_sum import PlaintextSum, RoundStats, SecureSum, check_vectors


class ExactSum:
    """float64 sum that records what the 'server' is handed, for exact comparisons."""

    def __init__(self) -> None:
        self.calls: list[list[np.ndarray]] = []

    @property
    def name(self) -> str:
        return "exact"

    @property
    def last_round(self) -> RoundStats:
        return RoundStats()

    def sum(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        check_vectors(vectors)
        self.calls.append([np.array(v) for v in vectors])
        total: np.ndarray = np.sum(vectors, axis=0)
        return total


def _setup(
    n: int = 1200, n_clients: int = 8, seed: int = 0, alpha: float | None = None
) -> tuple[list[FeatureData], FeatureData]:
    data = make_defect_features(n, seed=seed)
    train, test = train_test_split(data.y, seed=seed)
    pool = data.subset(train)
    if alpha is None:
        parts = partition_iid(pool.n_samples, n_clients, seed=seed)
    else:
        parts = partition_dirichlet(pool.y, n_clients, alpha=alpha, seed=seed, min_samples=5)
    return [pool.subset(p) for p in parts], data.subset(test)


def test_exact_sum_is_a_secure_sum() -> None:
    assert isinstance(ExactSum(), SecureSum)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rounds": 0},
        {"rounds": 1.5},
        {"clients_per_round": 1},
        {"local_epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"learning_rate": float("nan")},
        {"seed": -1},
        {"weight_bound": 0},
        {"value_bound": 0.5},
        {"rounds": True},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        FedAvgConfig(**kwargs)  # type: ignore[arg-type]


def test_one_full_batch_round_with_all_clients_is_centralised_gradient_descent() -> None:
    data = make_defect_features(400, seed=5)
    cuts = [0, 15, 60, 130, 250, 400]  # unequal n_i, so the sample weighting matters
    clients = [data.subset(np.arange(a, b)) for a, b in itertools.pairwise(cuts)]
    test = data
    pooled_x = np.concatenate([c.x for c in clients])
    pooled_y = np.concatenate([c.y for c in clients])
    config = FedAvgConfig(rounds=3, clients_per_round=5, local_epochs=1, batch_size=None, learning_rate=0.5)
    reference = MLP(16, 6, l2=0.01, seed=3)
    for _ in range(3):
        _, grad = reference.loss_and_grad(pooled_x, pooled_y)
        reference.set_params(reference.get_params() - 0.5 * grad)

    exact = run_fedavg(MLP(16, 6, l2=0.01, seed=3), clients, test, ExactSum(), config)
    np.testing.assert_allclose(exact.params, reference.get_params(), rtol=1e-12, atol=1e-14)
    # PlaintextSum ships float32, so equality holds to float32 precision of the uploads.
    plain = run_fedavg(MLP(16, 6, l2=0.01, seed=3), clients, test, PlaintextSum(), config)
    np.testing.assert_allclose(plain.params, reference.get_params(), rtol=0, atol=1e-6)


def test_weighted_average_with_unequal_client_sizes() -> None:
    data = make_defect_features(300, n_features=16, seed=4)
    cuts = [0, 20, 70, 300]  # n_i = 20, 50, 230
    clients = [data.subset(np.arange(a, b)) for a, b in itertools.pairwise(cuts)]
    config = FedAvgConfig(clients_per_round=3, local_epochs=2, batch_size=8, learning_rate=0.05)
    model = LogisticRegression(16, seed=0)
    start = model.get_params()
    uploads, deltas = [], []
    for k, client in enumerate(clients):
        upload, clipped = client_upload(model, start, client, config, weight_bound=250, seed=k)
        assert clipped == 0
        uploads.append(upload)
        # Direct computation: the same local training on a fresh model.
        fresh = LogisticRegression(16, seed=0)
        train_sgd(fresh, client.x, client.y, epochs=2, batch_size=8, learning_rate=0.05, seed=k)
        deltas.append(fresh.get_params() - start)
    n = np.array([20.0, 50.0, 230.0])
    np.testing.assert_allclose([u[-1] for u in uploads], n / 250)
    new_params, total_weight = server_update(start, np.sum(uploads, axis=0))
    expected = start + np.average(np.stack(deltas), axis=0, weights=n)
    np.testing.assert_allclose(new_params, expected, rtol=1e-12, atol=1e-15)
    assert total_weight == pytest.approx(300 / 250)
    # The plain (unweighted) mean is measurably different: the weights matter here.
    assert not np.allclose(start + np.mean(deltas, axis=0), expected, rtol=1e-3)


def test_server_only_receives_weighted_uploads_and_the_total_weight() -> None:
    clients, test = _setup(n=600, n_clients=6, alpha=0.5)
    sizes = np.array([c.n_samples for c in clients])
    recorder = ExactSum()
    config = FedAvgConfig(rounds=4, clients_per_round=3, weight_bound=400, seed=2)
    result = run_fedavg(LogisticRegression(16), clients, test, recorder, config)
    for record, call in zip(result.history, recorder.calls):
        assert len(call) == 3
        weights = np.array([v[-1] for v in call])
        np.testing.assert_allclose(weights, sizes[list(record.clients)] / 400)
        assert record.total_weight == pytest.approx(sizes[list(record.clients)].sum() / 400)
        assert max(np.abs(v).max() for v in call) <= config.value_bound
    assert [r.round for r in result.history] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("alpha", "bound"),
    [
        # Observed final test accuracy / F1: IID 0.900 / 0.830, Dirichlet(0.3) 0.902 / 0.828;
        # centralised SGD on the pooled data (same epochs) reaches 0.908 / 0.841.
        (None, 0.85),
        (0.3, 0.82),
    ],
)
def test_fedavg_reaches_good_accuracy_with_plaintext_sum(alpha: float | None, bound: float) -> None:
    clients, test = _setup(n=2000, n_clients=10, seed=1, alpha=alpha)
    model = MLP(16, 16, seed=0)
    initial_loss = evaluate(model, test)[0]
    config = FedAvgConfig(
        rounds=15, clients_per_round=5, local_epochs=2, batch_size=16, learning_rate=0.05, seed=1
    )
    result = run_fedavg(model, clients, test, PlaintextSum(), config)
    final = result.history[-1]
    assert final.test_accuracy > bound
    assert final.test_f1 > bound - 0.1
    assert final.test_loss < 0.6 * initial_loss
    assert sum(r.clipped_values for r in result.history) == 0
    np.testing.assert_array_equal(model.get_params(), result.params)
    # Reproducible: same config, same history.
    again = run_fedavg(MLP(16, 16, seed=0), clients, test, PlaintextSum(), config)
    assert again.history == result.history


def test_multiclass_fedavg_reports_defect_f1() -> None:
    data = make_defect_features(900, n_classes=3, seed=2)
    train, test = train_test_split(data.y, seed=2)
    pool = data.subset(train)
    clients = [pool.subset(p) for p in partition_iid(pool.n_samples, 4, seed=2)]
    config = FedAvgConfig(rounds=8, clients_per_round=4, local_epochs=2, learning_rate=0.1)
    result = run_fedavg(LogisticRegression(16, 3), clients, data.subset(test), ExactSum(), config)
    # Observed: accuracy 0.819, defect-vs-ok F1 0.672.
    assert result.history[-1].test_accuracy > 0.75
    assert 0.0 < result.history[-1].test_f1 <= 1.0


def test_clipping_is_counted_and_enforced() -> None:
    clients, test = _setup(n=300, n_clients=3)
    recorder = ExactSum()
    config = FedAvgConfig(rounds=1, clients_per_round=3, local_epochs=5, learning_rate=50.0, value_bound=1.0)
    result = run_fedavg(LogisticRegression(16), clients, test, recorder, config)
    assert result.history[0].clipped_values > 0
    assert max(np.abs(v).max() for v in recorder.calls[0]) <= 1.0


def test_run_and_update_errors() -> None:
    clients, test = _setup(n=200, n_clients=3)
    with pytest.raises(ConfigurationError, match="exceeds"):
        run_fedavg(LogisticRegression(16), clients, test, ExactSum(), FedAvgConfig())
    small_bound = FedAvgConfig(clients_per_round=2, weight_bound=10)
    with pytest.raises(ConfigurationError, match="weight_bound"):
        run_fedavg(LogisticRegression(16), clients, test, ExactSum(), small_bound)
    with pytest.raises(DataError, match="total weight"):
        server_update(np.zeros(3), np.array([1.0, 1.0, 1.0, 0.0]))
    with pytest.raises(DataError, match="shape"):
        server_update(np.zeros(3), np.zeros(3))
