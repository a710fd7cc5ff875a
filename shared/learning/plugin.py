"""Bring your own model: a NumPy-weights client API and its adapter to fedcast's flat vectors.

A model plugin is a :class:`NumPyClient` (in the spirit of Flower's ``NumPyClient``):
its weights are a list of numpy arrays, :meth:`NumPyClient.fit` trains locally
from given weights and returns the new ones with the number of examples it used,
:meth:`NumPyClient.evaluate` scores given weights on local test data. A
*factory* ``(ClientContext) -> NumPyClient`` (a subclass taking the context, or a
function) is named ``package.module:Name`` and loaded by :func:`load_client_factory`.

fedcast trains every plugin with FedAvg, the weighting inside the encrypted sum
exactly as :mod:`fedcast.shared.learning.fedavg` does for the built-in models:
each client uploads ``[w * delta, w]`` with ``delta`` its flattened weight change
and ``w = n_examples / weight_bound``, clipped to ``[-value_bound, value_bound]``;
the server adds ``sum(w * delta) / sum(w)`` to the global weights. The adapters
:class:`PluginClientTask` / :class:`PluginServerTask` let the services run a plugin
like a built-in task; :func:`run_numpy_federation` simulates a federation in one
process through any :class:`~fedcast.shared.secure_sum.SecureSum`.

No pickle anywhere: weights stay numpy arrays in memory and cross the wire as the
flat little-endian float64 model vector of every task.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray

from fedcast.shared.errors import ConfigurationError, FedcastError, InternalError, TrainingDivergedError
from fedcast.shared.learning.fedavg import server_update
from fedcast.shared.learning.tasks import (
    PLUGIN_PATTERN,
    ClientTask,
    FedAvgServerTask,
    LocalUpdate,
    TaskSpec,
)
from fedcast.shared.secure_sum import SecureSum

__all__ = [
    "DEFAULT_VALUE_BOUND",
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
    "check_weights",
    "flatten_weights",
    "load_client_factory",
    "plugin_client_task",
    "plugin_initial_model",
    "run_numpy_federation",
    "unflatten_weights",
    "weighted_upload",
]

FloatArray = NDArray[np.float64]
#: A model's weights: numpy arrays of a floating dtype, the same shapes and dtypes every round.
Weights: TypeAlias = list[NDArray[Any]]
Scalar: TypeAlias = bool | int | float | str
#: What fedcast tells ``fit`` / ``evaluate`` each time (``round`` when it is known).
Config: TypeAlias = Mapping[str, Scalar]
#: The clip bound C of the encrypted schemes (FedAvgConfig.value_bound's default).
DEFAULT_VALUE_BOUND = 4.0

_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_DATA: Mapping[str, NDArray[Any]] = MappingProxyType({})
_R = TypeVar("_R")


def _diverged(message: str) -> TrainingDivergedError:
    return TrainingDivergedError(message)


@dataclass(frozen=True, eq=False)
class ClientContext:
    """Who a factory builds a client for.

    ``partition_id`` is this client's index in ``0..num_partitions-1`` (on an edge
    device: ``FEDCAST_SYNTHETIC_SHARD`` of ``FEDCAST_SYNTHETIC_SHARDS``), or ``None``
    where only the initial weights are needed (the aggregator): a client should then
    not load data. ``seed`` is the federation's seed (``FEDCAST_TASK_SEED``):
    :meth:`NumPyClient.get_weights` must be a deterministic function of it and the
    options, since the aggregator draws the initial model from it. ``data_path`` /
    ``labels_path`` are the device's data files (``FEDCAST_DATA_PATH``,
    ``FEDCAST_DATA_LABELS_PATH``; ``None``: no files, e.g. use synthetic data of
    ``partition_id``). ``options`` are free-form strings shared by the whole
    federation (``FEDCAST_TASK_OPTIONS="hidden=32,lr=0.05"``). ``data`` is data a
    simulation hands over in memory (``fedcast train`` gives each client its split as
    ``x_train``, ``y_train``, ``x_test``, ``y_test``); empty when the client loads its own.
    """

    partition_id: int | None = None
    num_partitions: int = 1
    seed: int = 0
    data_path: Path | None = None
    labels_path: Path | None = None
    options: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    data: Mapping[str, NDArray[Any]] = field(default_factory=lambda: _NO_DATA)

    def __post_init__(self) -> None:
        if not _is_int(self.num_partitions) or self.num_partitions < 1:
            raise ConfigurationError(f"num_partitions must be an integer >= 1, got {self.num_partitions!r}")
        if self.partition_id is not None and (
            not _is_int(self.partition_id) or not 0 <= self.partition_id < self.num_partitions
        ):
            raise ConfigurationError(
                f"partition_id must be None or in [0, {self.num_partitions}), got {self.partition_id!r}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigurationError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("data_path", "labels_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(
            self, "options", MappingProxyType({str(k): str(v) for k, v in self.options.items()})
        )
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))


@dataclass(frozen=True, eq=False)
class FitResult:
    """What :meth:`NumPyClient.fit` returns: trained weights, examples used, training metrics."""

    weights: Weights
    n_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateResult:
    """What :meth:`NumPyClient.evaluate` returns: loss and metrics over ``n_examples`` test examples."""

    loss: float
    n_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class NumPyClient(ABC):
    """A model fedcast can federate: weights in and out as lists of numpy arrays.

    Subclasses that take a :class:`ClientContext` as their only constructor
    argument can be named directly as a task (``package.module:ClassName``).
    """

    @abstractmethod
    def get_weights(self) -> Weights:
        """The initial weights: floating arrays, a deterministic function of the context's seed."""

    @abstractmethod
    def fit(self, weights: Weights, config: Config) -> FitResult:
        """Train locally starting from ``weights``; return the new weights (same shapes and dtypes)."""

    @abstractmethod
    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        """Score ``weights`` on local test data (``n_examples`` may be 0 when there is none)."""


ClientFactory: TypeAlias = Callable[[ClientContext], NumPyClient]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# --------------------------------------------------------------------- loading


def load_client_factory(spec: str) -> ClientFactory:
    """The factory named ``package.module:Name`` (``Name`` may be dotted: ``mod:Outer.make``).

    ``Name`` is a :class:`NumPyClient` subclass (called with the context) or a
    function ``(ClientContext) -> NumPyClient``. The module is imported with the
    normal ``sys.path`` (run from the folder that contains the package, or set
    ``PYTHONPATH``). The returned factory checks that it really made a
    NumPyClient. Bad specs, import failures and wrong objects raise
    :class:`ConfigurationError`.
    """
    if not isinstance(spec, str) or PLUGIN_PATTERN.fullmatch(spec) is None:
        raise ConfigurationError(f"a model plugin is named package.module:Name, got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0]:
            hint = " (is the folder containing it on PYTHONPATH, or the current directory of `python -m`?)"
        raise ConfigurationError(f"cannot import {module_name!r} for task {spec!r}: {exc}{hint}") from exc
    except Exception as exc:  # the plugin's own import-time error: name it, keep the traceback
        raise ConfigurationError(
            f"importing {module_name!r} for task {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"{module_name!r} has no attribute {attribute!r} (task {spec!r})"
            ) from None
    if inspect.isclass(target):
        if not issubclass(target, NumPyClient) or inspect.isabstract(target):
            raise ConfigurationError(
                f"{spec!r} is the class {target.__qualname__}, not a concrete NumPyClient subclass"
            )
    elif not callable(target):
        raise ConfigurationError(
            f"{spec!r} is a {type(target).__name__}, not a NumPyClient class or a function"
        )
    maker: Callable[[ClientContext], object] = target

    def factory(context: ClientContext) -> NumPyClient:
        client = maker(context)
        if not isinstance(client, NumPyClient):
            raise ConfigurationError(
                f"{spec!r} returned a {type(client).__name__}, not a fedcast.api.NumPyClient"
            )
        return client

    factory.__name__ = factory.__qualname__ = attribute
    factory.__doc__ = f"NumPyClient factory {spec} (checked)."
    return factory


# ------------------------------------------------------------- weight vectors


def check_weights(weights: object, reference: Sequence[NDArray[Any]] | None = None, *, what: str) -> Weights:
    """``weights`` as a list of finite floating numpy arrays, shaped like ``reference`` if given.

    Wrong types, shapes or dtypes raise :class:`ConfigurationError` (a plugin bug);
    NaN or infinity raises the divergence error.
    """
    if not isinstance(weights, list | tuple) or len(weights) == 0:
        raise ConfigurationError(
            f"{what} must be a non-empty list of numpy arrays, got {type(weights).__name__}"
        )
    arrays: Weights = []
    for i, array in enumerate(weights):
        if not isinstance(array, np.ndarray):
            raise ConfigurationError(f"{what}[{i}] is a {type(array).__name__}, not a numpy array")
        if array.dtype.kind != "f":
            raise ConfigurationError(f"{what}[{i}] has dtype {array.dtype}: weights must be floating point")
        if reference is not None and i < len(reference):
            ref = reference[i]
            if array.shape != ref.shape or array.dtype != ref.dtype:
                raise ConfigurationError(
                    f"{what}[{i}] is {array.dtype}{list(array.shape)}, the model's is "
                    f"{ref.dtype}{list(ref.shape)}: weights must keep their shapes and dtypes"
                )
        if not np.all(np.isfinite(array)):
            raise _diverged(f"{what}[{i}] contains NaN or infinity")
        arrays.append(array)
    if reference is not None and len(arrays) != len(reference):
        raise ConfigurationError(f"{what} has {len(arrays)} arrays, the model {len(reference)}")
    if sum(a.size for a in arrays) == 0:
        raise ConfigurationError(f"{what} has no values")
    return arrays


def flatten_weights(weights: Sequence[NDArray[Any]]) -> FloatArray:
    """One float64 vector: the arrays in order, each in C order."""
    return np.concatenate([np.asarray(w, dtype=np.float64).reshape(-1) for w in weights])


def unflatten_weights(vector: FloatArray, template: Sequence[NDArray[Any]]) -> Weights:
    """Inverse of :func:`flatten_weights`: fresh arrays shaped and typed like ``template``."""
    sizes = [t.size for t in template]
    if vector.shape != (sum(sizes),):
        raise ConfigurationError(f"model vector has shape {vector.shape}, the weights need ({sum(sizes)},)")
    out: Weights = []
    start = 0
    for t, size in zip(template, sizes, strict=True):
        out.append(vector[start : start + size].astype(t.dtype).reshape(t.shape))
        start += size
    return out


def weighted_upload(
    delta: FloatArray, n_examples: int, *, weight_bound: int, value_bound: float = DEFAULT_VALUE_BOUND
) -> tuple[FloatArray, int]:
    """``[w * delta, w]`` with ``w = n_examples / weight_bound``, clipped to the bound; (upload, #clipped).

    The convention of :func:`fedcast.shared.learning.fedavg.client_upload`.
    """
    if not _is_int(n_examples) or not 1 <= n_examples <= weight_bound:
        raise ConfigurationError(
            f"fit used {n_examples!r} examples, outside [1, weight_bound={weight_bound}] "
            "(raise FEDCAST_TASK_WEIGHT_BOUND to the largest client's example count)"
        )
    weight = int(n_examples) / weight_bound
    upload = np.append(weight * np.asarray(delta, dtype=np.float64), weight)
    clipped = int(np.count_nonzero(np.abs(upload) > value_bound))
    return np.clip(upload, -value_bound, value_bound), clipped


def _fit(client: NumPyClient, weights: Weights, config: Config) -> FitResult:
    result = client.fit([w.copy() for w in weights], config)
    if not isinstance(result, FitResult):
        raise ConfigurationError(f"fit returned a {type(result).__name__}, not a fedcast.api.FitResult")
    new = check_weights(result.weights, weights, what="fit weights")
    return FitResult(new, result.n_examples, dict(result.metrics))


def _evaluate(client: NumPyClient, weights: Weights, config: Config) -> EvaluateResult:
    result = client.evaluate([w.copy() for w in weights], config)
    if not isinstance(result, EvaluateResult):
        raise ConfigurationError(
            f"evaluate returned a {type(result).__name__}, not a fedcast.api.EvaluateResult"
        )
    if not _is_int(result.n_examples) or result.n_examples < 0:
        raise ConfigurationError(
            f"evaluate returned n_examples={result.n_examples!r}, expected an integer >= 0"
        )
    return result


# --------------------------------------------------------- service adapters


def _guarded(what: str, call: Callable[[NumPyClient, Weights, Config], _R], *args: Any) -> _R:
    try:
        return call(*args)
    except FedcastError:
        raise
    except Exception as exc:  # the plugin's own bug: a fedcast error the service can count
        raise InternalError(f"model plugin {what} failed: {type(exc).__name__}: {exc}") from exc


def _context(spec: TaskSpec, **fields: Any) -> ClientContext:
    return ClientContext(seed=spec.seed, options=dict(spec.options), **fields)


@functools.lru_cache(maxsize=8)
def _initial(name: str, seed: int, options: tuple[tuple[str, str], ...]) -> FloatArray:
    client = load_client_factory(name)(ClientContext(None, 1, seed, options=dict(options)))
    vector = flatten_weights(check_weights(client.get_weights(), what="get_weights()"))
    vector.setflags(write=False)
    return vector


def plugin_initial_model(spec: TaskSpec, seed: int | None = None) -> FloatArray:
    """The flat initial weights of ``spec``'s plugin (its seed unless ``seed``), from a server context."""
    if not spec.is_plugin:
        raise ConfigurationError(f"task {spec.name!r} is not a model plugin")
    return _initial(spec.name, spec.seed if seed is None else seed, spec.options).copy()


class PluginServerTask(FedAvgServerTask):
    """The aggregator's half of a plugin: its initial weights, then FedAvg (eq. 1) on the flat vector."""

    def __init__(self, spec: TaskSpec) -> None:
        if not spec.is_plugin:
            raise ConfigurationError(f"task {spec.name!r} is not a model plugin")
        super().__init__(spec)

    def initial_model(self, seed: int | None = None) -> FloatArray:
        return plugin_initial_model(self.spec, seed)


class PluginClientTask(ClientTask):
    """An edge device's half of a plugin: ``fit`` on local data, upload the weighted delta.

    An exception of the plugin's own (not a fedcast error) from ``fit`` or
    ``evaluate`` becomes :class:`~fedcast.shared.errors.InternalError` (chained), so
    the service rejects that round's step instead of losing its message handler.
    """

    def __init__(
        self,
        spec: TaskSpec,
        client: NumPyClient,
        *,
        value_bound: float = DEFAULT_VALUE_BOUND,
        config: Config | None = None,
    ) -> None:
        super().__init__(spec)
        if not isinstance(client, NumPyClient):
            raise ConfigurationError(f"expected a NumPyClient, got a {type(client).__name__}")
        self.client = client
        self._template = check_weights(client.get_weights(), what="get_weights()")
        self._value_bound = value_bound
        self._config: dict[str, Scalar] = dict(config or {})
        self.last_fit_metrics: dict[str, float] = {}

    @property
    def template(self) -> Weights:
        """Arrays with the model's shapes and dtypes (the client's own initial weights)."""
        return self._template

    def local_update(self, model: FloatArray) -> LocalUpdate:
        weights = unflatten_weights(np.asarray(model, dtype=np.float64), self._template)
        result = _guarded("fit", _fit, self.client, weights, self._config)
        # The delta against the weights as the client received them (in their own dtype).
        delta = flatten_weights(result.weights) - flatten_weights(weights)
        upload, clipped = weighted_upload(
            delta, result.n_examples, weight_bound=self.spec.weight_bound, value_bound=self._value_bound
        )
        self.last_fit_metrics = {k: float(v) for k, v in result.metrics.items()}
        return LocalUpdate(upload, None, clipped)

    def quality(self, model: FloatArray) -> dict[str, float]:
        weights = unflatten_weights(np.asarray(model, dtype=np.float64), self._template)
        result = _guarded("evaluate", _evaluate, self.client, weights, self._config)
        if result.n_examples == 0:
            return {}
        return {"loss": float(result.loss), **{k: float(v) for k, v in result.metrics.items()}}


def plugin_client_task(spec: TaskSpec, context: ClientContext) -> PluginClientTask:
    """Load ``spec``'s plugin and build this device's client task (the edge service's entry point)."""
    if not spec.is_plugin:
        raise ConfigurationError(f"task {spec.name!r} is not a model plugin")
    return PluginClientTask(spec, load_client_factory(spec.name)(context))


# ---------------------------------------------------------------- simulation


@dataclass(frozen=True)
class RoundRecord:
    """One simulated round: the example-weighted mean of the clients' evaluations after it."""

    round: int
    clients: tuple[int, ...]  # the partitions that trained (every client evaluates)
    loss: float
    metrics: dict[str, float]
    fit_metrics: dict[str, float]  # example-weighted mean of what fit reported
    n_examples: int  # training examples of the round (what the server learns, times weight_bound)
    seconds: float
    clipped: int  # upload values clipped to the bound (a simulation diagnostic)


class FederationResult(NamedTuple):
    """``(weights, history)`` of :func:`run_numpy_federation`."""

    weights: Weights
    history: tuple[RoundRecord, ...]


def _weighted_mean(items: Sequence[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Per key present in every item: the mean weighted by the item's count (plain mean if all 0)."""
    if not items:
        return {}
    keys = set(items[0][1]).intersection(*(m.keys() for _, m in items[1:]))
    total = sum(n for n, _ in items)
    out: dict[str, float] = {}
    for key in sorted(keys):
        values = [(n, float(m[key])) for n, m in items]
        out[key] = (
            sum(n * v for n, v in values) / total if total > 0 else sum(v for _, v in values) / len(values)
        )
    return out


def run_numpy_federation(
    factory: ClientFactory,
    *,
    n_clients: int,
    rounds: int,
    secure: SecureSum,
    seed: int = 0,
    weight_bound: int | None = None,
    value_bound: float = DEFAULT_VALUE_BOUND,
    options: Mapping[str, str] | None = None,
    data_path: Path | None = None,
    labels_path: Path | None = None,
    client_data: Sequence[Mapping[str, NDArray[Any]]] | None = None,
    clients_per_round: int | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederationResult:
    """Simulate FedAvg of a plugin: ``n_clients`` clients (partitions ``0..n-1``).

    The initial weights come from a server context (``partition_id=None``). Each
    round ``clients_per_round`` clients (default: all; else a seeded sample) fit
    from the global weights (config ``{"round": r}``, 1-based) and upload
    ``[w * delta, w]`` through ``secure.sum`` (so a secure scheme sees exactly
    what a deployment encrypts), the server applies eq. (1),
    then every client evaluates the new weights; the round's record holds the
    example-weighted means and goes to ``on_round``. ``data_path`` / ``labels_path``
    / ``options`` reach every client's context, ``client_data[i]`` client i's
    ``context.data``. ``weight_bound=None`` uses
    the round's largest client (a deployment must configure a constant).
    Non-finite weights, aggregates or losses raise the divergence error.
    """
    if not _is_int(n_clients) or n_clients < 2:
        raise ConfigurationError(
            f"n_clients must be an integer >= 2 (one client's sum is its own update), got {n_clients!r}"
        )
    if not _is_int(rounds) or rounds < 1:
        raise ConfigurationError(f"rounds must be an integer >= 1, got {rounds!r}")
    if weight_bound is not None and (not _is_int(weight_bound) or weight_bound < 1):
        raise ConfigurationError(f"weight_bound must be None or an integer >= 1, got {weight_bound!r}")
    if not (math.isfinite(value_bound) and value_bound >= 1.0):
        raise ConfigurationError(f"value_bound must be finite and >= 1, got {value_bound}")
    per_round = n_clients if clients_per_round is None else clients_per_round
    if not _is_int(per_round) or not 2 <= per_round <= n_clients:
        raise ConfigurationError(f"clients_per_round must be None or in [2, {n_clients}], got {per_round!r}")
    if client_data is not None and len(client_data) != n_clients:
        raise ConfigurationError(f"client_data has {len(client_data)} entries for {n_clients} clients")
    opts = dict(options or {})
    server = factory(ClientContext(None, n_clients, seed, options=opts))
    weights = check_weights(server.get_weights(), what="get_weights()")
    clients = [
        factory(
            ClientContext(
                i,
                n_clients,
                seed,
                data_path=data_path,
                labels_path=labels_path,
                options=opts,
                data=_NO_DATA if client_data is None else client_data[i],
            )
        )
        for i in range(n_clients)
    ]
    selector = np.random.default_rng(seed)
    history: list[RoundRecord] = []
    for round_index in range(1, rounds + 1):
        start = time.perf_counter()
        config: dict[str, Scalar] = {"round": round_index}
        chosen = (
            list(range(n_clients))
            if per_round == n_clients
            else sorted(int(k) for k in selector.choice(n_clients, per_round, replace=False))
        )
        fits = [_fit(clients[k], weights, config) for k in chosen]
        bound = weight_bound if weight_bound is not None else max(int(f.n_examples) for f in fits)
        old = flatten_weights(weights)
        uploads: list[FloatArray] = []
        clipped = 0
        for fit in fits:
            upload, n_clipped = weighted_upload(
                flatten_weights(fit.weights) - old,
                fit.n_examples,
                weight_bound=bound,
                value_bound=value_bound,
            )
            uploads.append(upload)
            clipped += n_clipped
        aggregate = secure.sum(uploads)
        if not np.all(np.isfinite(aggregate)):
            raise _diverged(f"round {round_index}: the aggregate contains NaN or infinity")
        new, _total_weight = server_update(old, aggregate)
        weights = check_weights(unflatten_weights(new, weights), weights, what=f"round {round_index} weights")
        evaluations = [_evaluate(client, weights, config) for client in clients]
        losses = [(int(e.n_examples), {"loss": float(e.loss)}) for e in evaluations]
        loss = _weighted_mean(losses).get("loss", math.nan)
        if not math.isfinite(loss):
            raise _diverged(f"round {round_index}: the evaluation loss is {loss}")
        record = RoundRecord(
            round=round_index,
            clients=tuple(chosen),
            loss=loss,
            metrics=_weighted_mean([(int(e.n_examples), e.metrics) for e in evaluations]),
            fit_metrics=_weighted_mean([(int(f.n_examples), f.metrics) for f in fits]),
            n_examples=sum(int(f.n_examples) for f in fits),
            seconds=time.perf_counter() - start,
            clipped=clipped,
        )
        history.append(record)
        if on_round is not None:
            on_round(record)
    return FederationResult(weights, tuple(history))
