"""The bring-your-own-model API: loading plugins, the FedAvg adapter, the simulation loop, wiring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcast import api
from fedcast.cli import main
from fedcast.services.edge_client.data import DataSource, client_task
from fedcast.services.envconfig import task_from_env
from fedcast.shared import errors
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.fedavg import server_update
from fedcast.shared.learning.plugin import (
    check_weights,
    flatten_weights,
    plugin_initial_model,
    unflatten_weights,
    weighted_upload,
)
from fedcast.shared.learning.tasks import FedAvgServerTask, TaskSpec
from fedcast.shared.secure_sum import ExactSum, PlaintextSum
from fedcast.shared.wire.codec import check_id
from tests.unit.api import plugins
from tests.unit.api.plugins import EXAMPLES, TARGETS

P = "tests.unit.api.plugins"
DIVERGED = errors.TrainingDivergedError


def context(partition: int | None = 0, **kwargs: Any) -> api.ClientContext:
    return api.ClientContext(partition, 3, **kwargs)


# ------------------------------------------------------------------ loading


@pytest.mark.parametrize("name", ["Toward", "make_toward", "Holder.make"])
def test_a_class_a_function_or_a_dotted_attribute_loads(name: str) -> None:
    factory = api.load_client_factory(f"{P}:{name}")
    client = factory(context(1, seed=4))
    assert isinstance(client, plugins.Toward)
    assert client.context.partition_id == 1


@pytest.mark.parametrize(
    "spec", ["nocolon", "a.b:", ":Name", "a b:C", "a:b:c", "1pkg:C", "pkg.:C", "pkg:C-D"]
)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigurationError, match=r"package\.module:Name"):
        api.load_client_factory(spec)


def test_a_missing_module_names_pythonpath() -> None:
    with pytest.raises(ConfigurationError, match="PYTHONPATH") as caught:
        api.load_client_factory("no_such_module_for_fedcast.models:Client")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_an_import_time_error_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fedcast_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match="RuntimeError: boom at import"):
        api.load_client_factory("fedcast_broken_plugin:Client")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Missing", "has no attribute 'Missing'"),
        ("NotAClient", "not a concrete NumPyClient subclass"),
        ("Abstract", "not a concrete NumPyClient subclass"),
        ("NOT_CALLABLE", "is a int, not a NumPyClient class or a function"),
    ],
)
def test_wrong_objects_are_refused(name: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        api.load_client_factory(f"{P}:{name}")


def test_a_factory_must_return_a_client() -> None:
    factory = api.load_client_factory(f"{P}:returns_a_string")
    with pytest.raises(ConfigurationError, match=r"returned a str, not a fedcast\.api\.NumPyClient"):
        factory(context())


def test_context_is_validated_and_read_only() -> None:
    ctx = api.ClientContext(None, 1, 0, data_path="x.csv", options={"a": 1})  # type: ignore[arg-type,dict-item]
    assert ctx.data_path == Path("x.csv") and ctx.options == {"a": "1"}
    with pytest.raises(TypeError):
        ctx.options["b"] = "2"  # type: ignore[index]
    for bad in ({"partition_id": 3, "num_partitions": 3}, {"num_partitions": 0}, {"seed": -1}):
        with pytest.raises(ConfigurationError):
            api.ClientContext(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- weights


def test_flatten_round_trips_shapes_and_dtypes() -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, -1.0]), np.ones((1, 1, 2))]
    vector = flatten_weights(weights)
    assert vector.dtype == np.float64 and vector.shape == (10,)
    back = unflatten_weights(vector, weights)
    for a, b in zip(weights, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigurationError, match="shape"):
        unflatten_weights(vector[:-1], weights)


def test_weights_are_checked() -> None:
    ref = [np.zeros((2, 3), dtype=np.float32)]
    with pytest.raises(ConfigurationError, match=r"float32\[3, 2\].*float32\[2, 3\]"):
        check_weights([np.zeros((3, 2), dtype=np.float32)], ref, what="w")
    with pytest.raises(ConfigurationError, match="float64\\[2, 3\\]"):
        check_weights([np.zeros((2, 3))], ref, what="w")
    with pytest.raises(ConfigurationError, match="2 arrays, the model 1"):
        check_weights([np.zeros((2, 3), dtype=np.float32)] * 2, ref, what="w")
    with pytest.raises(ConfigurationError, match="floating point"):
        check_weights([np.zeros(2, dtype=np.int64)], what="w")
    with pytest.raises(ConfigurationError, match="not a numpy array"):
        check_weights([[1.0, 2.0]], what="w")
    for not_a_list in (np.zeros(3), [], "abc"):
        with pytest.raises(ConfigurationError, match="non-empty list"):
            check_weights(not_a_list, what="w")
    with pytest.raises(DIVERGED, match="NaN or infinity"):
        check_weights([np.array([1.0, np.nan])], what="w")


def test_weighted_upload_is_fedavgs_convention_and_counts_clipping() -> None:
    upload, clipped = weighted_upload(np.array([10.0, -10.0, 0.5]), 50, weight_bound=100, value_bound=4.0)
    np.testing.assert_array_equal(upload, [4.0, -4.0, 0.25, 0.5])
    assert clipped == 2
    with pytest.raises(ConfigurationError, match="FEDCAST_TASK_WEIGHT_BOUND"):
        weighted_upload(np.zeros(2), 101, weight_bound=100)
    with pytest.raises(ConfigurationError):
        weighted_upload(np.zeros(2), 0, weight_bound=100)


# ---------------------------------------------------------------- adapters


def test_task_spec_accepts_plugins_with_a_wire_safe_name() -> None:
    spec = TaskSpec(name=f"{P}:Toward", seed=7, options=(("hidden", "3"),))
    assert spec.is_plugin and not TaskSpec(name="fedavg-mlp").is_plugin
    assert spec.wire_name == f"{P}-Toward" == check_id(spec.wire_name, "task")
    assert (spec.model_size, spec.upload_size) == (8, 9)
    long = TaskSpec(name="a" * 40 + "." + "b" * 30 + ":Client")
    assert check_id(long.wire_name, "task").startswith("plugin-")
    assert TaskSpec(name="fedavg:logreg").wire_name != "fedavg-logreg"  # never a built-in's name
    for bad in ("x", "a:b:c", "pkg.:C", "a b:C"):
        with pytest.raises(ConfigurationError, match=r"package\.module:Name"):
            TaskSpec(name=bad)
    for options in ((("a", "1"), ("a", "2")), (("bad key", "1"),)):
        with pytest.raises(ConfigurationError, match="options"):
            TaskSpec(name=f"{P}:Toward", options=options)


def test_the_aggregator_starts_from_the_plugins_seeded_weights() -> None:
    spec = TaskSpec(name=f"{P}:Toward", seed=7)
    expected = flatten_weights(plugins.Toward(api.ClientContext(seed=7)).get_weights())
    # The aggregator's server_task builds the first for a plugin spec.
    for server in (FedAvgServerTask(spec), api.PluginServerTask(spec)):
        np.testing.assert_array_equal(server.initial_model(), expected)
        assert not np.array_equal(server.initial_model(seed=8), expected)
    with pytest.raises(ConfigurationError):
        api.PluginServerTask(TaskSpec(name="fedavg-mlp"))
    with pytest.raises(ConfigurationError):
        plugin_initial_model(TaskSpec())


def test_client_and_server_halves_compute_the_weighted_average() -> None:
    spec = TaskSpec(name=f"{P}:Toward", weight_bound=100)
    server = api.PluginServerTask(spec)
    model = server.initial_model()
    uploads = []
    for i in range(3):
        task = api.PluginClientTask(spec, plugins.Toward(context(i)))
        update = task.local_update(model)
        assert update.vector.shape == (spec.upload_size,) and update.clipped == 0
        assert update.vector[-1] == EXAMPLES[i] / 100
        uploads.append(update.vector)
        quality = task.quality(model)
        assert set(quality) == {"loss", "mean"}
    new = server.apply(model, np.sum(uploads, axis=0), 3)
    np.testing.assert_allclose(new, server_update(model, np.sum(uploads, axis=0))[0])
    mean_target = np.dot(EXAMPLES, [float(t) for t in TARGETS]) / sum(EXAMPLES)
    np.testing.assert_allclose(new[:6], mean_target, atol=1e-6)
    np.testing.assert_allclose(new[6:], np.dot(EXAMPLES, [0, 1, 2]) / sum(EXAMPLES))


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("Reshaping", ConfigurationError, "keep their shapes and dtypes"),
        ("Retyping", ConfigurationError, "keep their shapes and dtypes"),
        ("Exploding", DIVERGED, "NaN or infinity"),
        ("WrongResult", ConfigurationError, "not a fedcast.api.FitResult"),
    ],
)
def test_bad_fits_are_refused_by_the_client_task(name: str, error: type[Exception], message: str) -> None:
    spec = TaskSpec(name=f"{P}:{name}")
    task = api.PluginClientTask(spec, api.load_client_factory(spec.name)(context()))
    with pytest.raises(error, match=message):
        task.local_update(api.PluginServerTask(spec).initial_model())


def test_integer_weights_are_refused_up_front() -> None:
    with pytest.raises(ConfigurationError, match="floating point"):
        TaskSpec(name=f"{P}:IntegerWeights").model_size


# ------------------------------------------------------------------- wiring


def test_env_names_a_plugin_with_options() -> None:
    spec = task_from_env(
        {
            "FEDCAST_TASK": f"{P}:Toward",
            "FEDCAST_TASK_OPTIONS": " hidden=32, lr=0.5,",
            "FEDCAST_TASK_SEED": "3",
        }
    )
    assert (spec.name, spec.options, spec.seed) == (f"{P}:Toward", (("hidden", "32"), ("lr", "0.5")), 3)
    with pytest.raises(ConfigurationError, match="FEDCAST_TASK_OPTIONS"):
        task_from_env({"FEDCAST_TASK": f"{P}:Toward", "FEDCAST_TASK_OPTIONS": "novalue"})


def test_the_edge_builds_the_plugin_from_its_settings(tmp_path: Path) -> None:
    spec = TaskSpec(name=f"{P}:Toward", seed=5, options=(("k", "v"),))
    task = client_task(spec, DataSource(path=tmp_path / "x.csv", labels_path=None, shard=2, n_shards=3))
    assert isinstance(task, api.PluginClientTask)
    ctx = task.client.context  # type: ignore[attr-defined]
    assert (ctx.partition_id, ctx.num_partitions, ctx.seed) == (2, 3, 5)
    assert (ctx.data_path, dict(ctx.options)) == (tmp_path / "x.csv", {"k": "v"})


@pytest.mark.parametrize("service", ["edge", "aggregator"])
def test_the_services_take_task_flags(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("FEDCAST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FEDCAST_TASK_SEED", "9")
    seen: dict[str, Any] = {}

    def from_env(**overrides: Any) -> None:
        seen.update(overrides)
        raise ConfigurationError("stop here")

    target = "EdgeConfig" if service == "edge" else "AggregatorConfig"
    monkeypatch.setattr(f"fedcast.services_cli.{target}.from_env", from_env)
    assert main([service, "--amqp", "amqp://x", "--task", f"{P}:Toward"]) == 2
    assert (seen["task"].name, seen["task"].seed) == (f"{P}:Toward", 9)


# --------------------------------------------------------------- simulation


def test_the_simulation_runs_fedavg_and_reports_weighted_means() -> None:
    records: list[api.RoundRecord] = []
    result = api.run_numpy_federation(
        api.load_client_factory(f"{P}:Toward"),
        n_clients=3,
        rounds=2,
        secure=ExactSum(),
        seed=3,
        weight_bound=100,
        on_round=records.append,
    )
    weights, history = result
    assert history == tuple(records) and [r.round for r in records] == [1, 2]
    assert records[0].clients == (0, 1, 2)
    mean_target = np.dot(EXAMPLES, [float(t) for t in TARGETS]) / sum(EXAMPLES)
    assert weights[0].dtype == np.float32
    np.testing.assert_allclose(weights[0], mean_target, atol=1e-6)
    np.testing.assert_allclose(weights[1], 2 * np.dot(EXAMPLES, [0, 1, 2]) / sum(EXAMPLES))
    expected_loss = np.dot(EXAMPLES, [(mean_target - float(t)) ** 2 for t in TARGETS]) / sum(EXAMPLES)
    first = records[0]
    assert first.loss == pytest.approx(expected_loss, rel=1e-5)
    assert first.metrics == {"mean": pytest.approx(mean_target, abs=1e-6)}
    assert first.fit_metrics == {"round": 1.0, "step": pytest.approx(1.5)}
    assert records[1].fit_metrics["round"] == 2.0
    assert (first.n_examples, first.clipped) == (100, 0) and first.seconds > 0


def test_plaintext_and_exact_sums_agree_and_runs_repeat() -> None:
    factory = api.load_client_factory(f"{P}:Toward")
    runs = [
        api.run_numpy_federation(factory, n_clients=3, rounds=2, secure=secure, seed=1)
        for secure in (PlaintextSum(), ExactSum(), ExactSum())
    ]
    for a, b in zip(runs[1].weights, runs[2].weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[0].weights, runs[1].weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("Exploding", DIVERGED, "NaN or infinity"),
        ("NaNLoss", DIVERGED, "round 1: the evaluation loss is nan"),
        ("Reshaping", ConfigurationError, "shapes and dtypes"),
        ("IntegerWeights", ConfigurationError, "floating point"),
    ],
)
def test_the_simulation_stops_on_bad_or_diverging_models(
    name: str, error: type[Exception], message: str
) -> None:
    factory = api.load_client_factory(f"{P}:{name}")
    with pytest.raises(error, match=message):
        api.run_numpy_federation(factory, n_clients=2, rounds=2, secure=PlaintextSum())


def test_the_simulation_validates_its_arguments() -> None:
    factory = api.load_client_factory(f"{P}:Toward")
    for bad in ({"n_clients": 1}, {"rounds": 0}, {"weight_bound": 0}, {"value_bound": 0.5}):
        kwargs: dict[str, Any] = {"n_clients": 2, "rounds": 1, **bad}
        with pytest.raises(ConfigurationError):
            api.run_numpy_federation(factory, secure=PlaintextSum(), **kwargs)
    with pytest.raises(ConfigurationError, match="client_data has 1 entries for 2 clients"):
        api.run_numpy_federation(factory, n_clients=2, rounds=1, secure=PlaintextSum(), client_data=[{}])
    with pytest.raises(ConfigurationError, match="weight_bound=10"):  # partition 1 claims 30 examples
        api.run_numpy_federation(factory, n_clients=2, rounds=1, secure=PlaintextSum(), weight_bound=10)


def test_a_plugins_own_exception_is_an_internal_error_in_the_services() -> None:
    spec = TaskSpec(name=f"{P}:Crashing")
    task = api.PluginClientTask(spec, plugins.Crashing(context()))
    model = api.PluginServerTask(spec).initial_model()
    with pytest.raises(
        errors.InternalError, match="model plugin fit failed: ValueError: bad batch"
    ) as caught:
        task.local_update(model)
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(errors.InternalError, match="model plugin evaluate failed: KeyError"):
        task.quality(model)
    with pytest.raises(ValueError, match="bad batch"):  # the simulation shows the plugin's own error
        api.run_numpy_federation(
            api.load_client_factory(f"{P}:Crashing"), n_clients=2, rounds=1, secure=PlaintextSum()
        )


def test_the_simulation_can_sample_clients_per_round() -> None:
    factory = api.load_client_factory(f"{P}:Toward")
    result = api.run_numpy_federation(
        factory, n_clients=3, rounds=4, secure=ExactSum(), seed=2, weight_bound=100, clients_per_round=2
    )
    chosen = [r.clients for r in result.history]
    assert all(len(c) == 2 and list(c) == sorted(set(c)) for c in chosen) and len(set(chosen)) > 1
    last = chosen[-1]
    expected = np.dot([EXAMPLES[k] for k in last], [float(TARGETS[k]) for k in last]) / sum(
        EXAMPLES[k] for k in last
    )
    np.testing.assert_allclose(result.weights[0], expected, atol=1e-6)
    assert result.history[-1].n_examples == sum(EXAMPLES[k] for k in last)
    for bad in (1, 4):
        with pytest.raises(ConfigurationError, match="clients_per_round"):
            api.run_numpy_federation(factory, n_clients=3, rounds=1, secure=ExactSum(), clients_per_round=bad)
