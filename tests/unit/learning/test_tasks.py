"""The tasks the services run: sizes, model bytes, server updates equal the library's."""

from __future__ import annotations

import numpy as np
import pytest

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import SyntheticConfig, make_synthetic, partition_users
from fedcast.shared.learning.features import make_defect_features
from fedcast.shared.learning.fedavg import server_update
from fedcast.shared.learning.fedmf import FedMF
from fedcast.shared.learning.mf import MFConfig, init_model
from fedcast.shared.learning.tasks import (
    FedAvgClientTask,
    FedAvgServerTask,
    FedMFClientTask,
    FedMFServerTask,
    TaskSpec,
    model_from_bytes,
    model_to_bytes,
)
from fedcast.shared.secure_sum import ExactSum


def test_sizes() -> None:
    assert TaskSpec(n_items=7, latent_dim=3).upload_size == 21 + 7  # gradients, then curvatures
    assert TaskSpec(n_items=7, latent_dim=3, optimizer="gd").upload_size == 21
    assert TaskSpec(n_items=7, latent_dim=3).model_size == 21
    spec = TaskSpec(name="fedavg-mlp", n_features=4, hidden=3, n_classes=2)
    assert spec.upload_size == spec.model_size + 1 == spec.new_model().n_params + 1
    bad_values: tuple[dict[str, object], ...] = (
        {"name": "x"},
        {"n_items": 0},
        {"n_classes": 1},
        {"learning_rate": 0.0},
        {"optimizer": "adam"},
        {"step_size": 2.0},
    )
    for bad in bad_values:
        with pytest.raises(ConfigurationError):
            TaskSpec(**bad)  # type: ignore[arg-type]


def test_model_bytes() -> None:
    model = np.array([0.5, -1.25, 3.0])
    assert np.array_equal(model_from_bytes(model_to_bytes(model), 3), model)
    with pytest.raises(DataError):
        model_from_bytes(model_to_bytes(model), 4)
    with pytest.raises(DataError):
        model_from_bytes(model_to_bytes(np.array([np.nan])), 1)


def test_fedmf_server_starts_like_the_library_and_applies_eq_4() -> None:
    spec = TaskSpec(n_items=6, latent_dim=2, seed=5, optimizer="gd")
    server = FedMFServerTask(spec)
    v0 = server.initial_model()
    np.testing.assert_array_equal(
        v0, init_model(1, 6, MFConfig(latent_dim=2, seed=5)).item_factors.reshape(-1)
    )
    grad = np.ones_like(v0)
    expected = v0 - spec.learning_rate * (grad + 2 * spec.reg_item * v0)
    np.testing.assert_allclose(server.apply(v0, grad, 3), expected)


def test_fedmf_tasks_run_the_library_precond_round() -> None:
    """Server and client halves of the default (precond) task equal FedMF's round on the same data."""
    data = make_synthetic(SyntheticConfig(n_users=6, n_items=8, ratings_per_user=5, seed=3))
    spec = TaskSpec(n_items=8, latent_dim=2, seed=5)
    cfg = spec.mf_config
    assert cfg.optimizer == "precond" and cfg == MFConfig(latent_dim=2, seed=5)
    server = FedMFServerTask(spec)
    model = server.initial_model()
    start = init_model(data.n_users, 8, cfg)
    clients = [
        FedMFClientTask(spec, data.for_users([u]), user_factors=start.user_factors)
        for u in range(data.n_users)
    ]
    reference = FedMF(data, partition_users(data), cfg, ExactSum(), init=start)
    for _ in range(3):
        updates = [c.local_update(model) for c in clients]
        assert all(u.vector.size == spec.upload_size for u in updates)
        model = server.apply(model, np.sum([u.vector for u in updates], axis=0), len(updates))
        for c, u in zip(clients, updates, strict=True):
            c.commit(u.pending)
        reference.run_round()
    np.testing.assert_allclose(model, reference.item_factors.reshape(-1), atol=1e-12)


def test_fedmf_client_update_is_pending_until_committed() -> None:
    spec = TaskSpec(n_items=8, latent_dim=2)
    data = make_synthetic(SyntheticConfig(n_users=2, n_items=8, ratings_per_user=4))
    task = FedMFClientTask(spec, data)
    before = task.user_factors
    update = task.local_update(np.full(16, 0.3))
    np.testing.assert_array_equal(task.user_factors, before)  # a retried attempt starts here again
    again = task.local_update(np.full(16, 0.3))
    np.testing.assert_array_equal(update.vector, again.vector)
    task.commit(update.pending)
    assert not np.array_equal(task.user_factors, before)


def test_fedavg_tasks_fold_the_weight_into_the_upload() -> None:
    spec = TaskSpec(name="fedavg-logreg", n_features=16, weight_bound=1000, learning_rate=0.1)
    server = FedAvgServerTask(spec)
    model = server.initial_model()
    data = make_defect_features(200, seed=1)
    client = FedAvgClientTask(spec, data, data)
    update = client.local_update(model)
    assert update.vector[-1] == pytest.approx(200 / 1000)
    new, total = server_update(model, update.vector)
    np.testing.assert_allclose(server.apply(model, update.vector, 1), new)
    assert total == pytest.approx(0.2)
    assert client.export_state() is None
    assert set(client.quality(new)) == {"loss", "accuracy", "f1"}
