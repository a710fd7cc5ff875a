"""The worked examples (examples/) train through the public API: plaintext, secure, and as services do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedcast import api
from fedcast.services.edge_client.data import DataSource, client_task
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.learning.features import make_defect_features
from fedcast.shared.learning.tasks import FedAvgServerTask, TaskSpec
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum
from fedcast.shared.secure_sum import PlaintextSum

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ["examples.sklearn_defects:Client", "examples.torch_defects:Client"]
MAJORITY = 0.7  # the synthetic data's share of "ok" castings: always answering "ok" scores this


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ROOT))  # as `PYTHONPATH=.` from the repository root
    pytest.importorskip("sklearn")  # fedcast[sklearn]; CI installs it
    yield


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")  # fedcast[torch]; CI installs it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_learns_in_plaintext_and_repeats(name: str, torch_one_thread: None) -> None:
    factory = api.load_client_factory(name)
    runs = [
        api.run_numpy_federation(factory, n_clients=4, rounds=4, secure=PlaintextSum(), seed=0)
        for _ in range(2)
    ]
    history = runs[0].history
    assert history[-1].metrics["accuracy"] > MAJORITY + 0.1
    assert history[-1].metrics["f1"] > 0.6
    assert history[-1].loss < 0.45 and all(r.clipped == 0 for r in history)
    for a, b in zip(runs[0].weights, runs[1].weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_sklearn_example_through_elgamal_matches_plaintext(small_group: GroupParams) -> None:
    factory = api.load_client_factory(EXAMPLES[0])
    secure = ElGamalSum(SystemParams(small_group, FixedPointEncoding(16, 4.0), max_clients=8), seed=0)
    encrypted = api.run_numpy_federation(factory, n_clients=3, rounds=2, secure=secure, seed=1)
    plain = api.run_numpy_federation(factory, n_clients=3, rounds=2, secure=PlaintextSum(), seed=1)
    for a, b in zip(encrypted.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)  # only fixed-point quantization between them
    assert encrypted.history[-1].metrics["accuracy"] == pytest.approx(
        plain.history[-1].metrics["accuracy"], abs=0.02
    )


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_runs_as_the_services_run_it(name: str, torch_one_thread: None) -> None:
    spec = TaskSpec(name=name, weight_bound=1000, seed=2)
    server = FedAvgServerTask(spec)  # what the aggregator's server_task builds for a plugin
    model = server.initial_model()
    assert model.shape == (spec.model_size,)
    tasks = [client_task(spec, DataSource(shard=i, n_shards=3, seed=2)) for i in range(3)]
    before = np.mean([t.quality(model)["loss"] for t in tasks])
    for _ in range(3):
        uploads = [t.local_update(model).vector for t in tasks]
        assert all(u.shape == (spec.upload_size,) for u in uploads)
        model = server.apply(model, np.sum(uploads, axis=0), len(tasks))
    qualities = [t.quality(model) for t in tasks]
    assert np.mean([q["loss"] for q in qualities]) < before
    assert np.mean([q["accuracy"] for q in qualities]) > MAJORITY + 0.1


def test_an_example_reads_the_devices_files(tmp_path: Path) -> None:
    data = make_defect_features(300, seed=5)
    np.save(tmp_path / "x.npy", data.x)
    np.save(tmp_path / "y.npy", data.y)
    spec = TaskSpec(name=EXAMPLES[0])
    task = client_task(spec, DataSource(path=tmp_path / "x.npy", labels_path=tmp_path / "y.npy"))
    assert isinstance(task, api.PluginClientTask)
    update = task.local_update(FedAvgServerTask(spec).initial_model())
    assert update.vector[-1] == pytest.approx(240 / 1000)  # 80% of the 300 rows train


def test_the_aggregator_context_loads_no_data() -> None:
    client = api.load_client_factory(EXAMPLES[0])(api.ClientContext(None))
    assert [w.shape for w in client.get_weights()] == [(1, 16), (1,)]
    with pytest.raises(ValueError, match="neither a data path nor a partition id"):
        client.fit(client.get_weights(), {})


def test_examples_take_data_handed_over_in_memory() -> None:
    data = make_defect_features(200, seed=3)
    arrays = {
        "x_train": data.x[:150],
        "y_train": data.y[:150],
        "x_test": data.x[150:],
        "y_test": data.y[150:],
    }
    result = api.run_numpy_federation(
        api.load_client_factory(EXAMPLES[0]),
        n_clients=2,
        rounds=2,
        secure=PlaintextSum(),
        client_data=[arrays, arrays],
        options={"learning_rate": "0.02"},
    )
    assert result.history[0].n_examples == 300
    assert result.history[-1].metrics["accuracy"] > MAJORITY
