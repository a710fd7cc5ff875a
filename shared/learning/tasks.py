"""What the services train: the server and client halves of each federated task.

The protocol layer only moves flat float vectors: the aggregator's global model
(sealed to each member every round) and each client's upload (encrypted). A
task says how to make, update and apply them:

* ``fedmf``: the global model is the item matrix V (n_items x d, flattened);
  a client's upload is its FullText item gradient (eq. 6); its user vectors
  stay on the device (eq. 3, 5). The server applies eq. 4.
* ``fedavg-logreg`` / ``fedavg-mlp``: the global model is the flat parameter
  vector; a client uploads ``[w * delta, w]`` with ``w = n_i / weight_bound``
  (weights folded into what is encrypted); the server applies eq. 1.

Client state changes (FedMF user vectors) are kept pending until the round
completed with this client in S: a retried attempt recomputes from the same
state, so every completed round is exactly the plaintext learning step over S.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcast.shared.errors import ConfigurationError, DataError
from fedcast.shared.learning.data import FloatArray, RatingData
from fedcast.shared.learning.features import FeatureData
from fedcast.shared.learning.fedavg import FedAvgConfig, client_upload, server_update
from fedcast.shared.learning.fedavg import evaluate as evaluate_classifier
from fedcast.shared.learning.fedmf import FedMFClient
from fedcast.shared.learning.mf import OPTIMIZERS, MFConfig, MFModel, evaluate, item_curvature_step
from fedcast.shared.learning.models import MLP, LogisticRegression, Model

__all__ = [
    "PLUGIN_PATTERN",
    "TASK_NAMES",
    "ClientTask",
    "FedAvgClientTask",
    "FedAvgServerTask",
    "FedMFClientTask",
    "FedMFServerTask",
    "LocalUpdate",
    "ServerTask",
    "TaskSpec",
    "model_from_bytes",
    "model_to_bytes",
]

TASK_NAMES = ("fedmf", "fedavg-logreg", "fedavg-mlp")
#: A bring-your-own-model task: ``package.module:Name`` (see :mod:`fedcast.shared.learning.plugin`).
PLUGIN_PATTERN = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", re.ASCII)
_OPTION_KEY = re.compile(r"[A-Za-z_][\w.-]{0,63}", re.ASCII)


@dataclass(frozen=True)
class TaskSpec:
    """The task of a federation; aggregator and clients must be configured alike.

    FedMF uses ``n_items``, ``latent_dim``, ``optimizer``, ``step_size``
    (``precond``) or ``learning_rate`` (``gd``), ``reg_user``, ``reg_item``,
    all as in :class:`fedcast.shared.learning.mf.MFConfig` (same defaults: the
    ``precond`` optimizer needs no learning rate); FedAvg uses ``n_features``, ``n_classes``, ``hidden``,
    ``learning_rate``, ``local_epochs``, ``batch_size``, ``weight_bound``.
    A plugin task (``name`` is ``package.module:Name``, a NumPyClient factory) uses
    ``weight_bound``, ``seed`` and its ``options`` (``(key, value)`` strings passed
    to the factory's ClientContext).
    """

    name: str = "fedmf"
    n_items: int = 60
    latent_dim: int = 5
    learning_rate: float = 0.004
    reg_user: float = 0.08
    reg_item: float = 0.08
    optimizer: str = "precond"
    step_size: float = 1.0
    n_features: int = 16
    n_classes: int = 2
    hidden: int = 16
    local_epochs: int = 1
    batch_size: int = 32
    weight_bound: int = 1000
    seed: int = 0
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES and PLUGIN_PATTERN.fullmatch(self.name) is None:
            raise ConfigurationError(
                f"task must be one of {TASK_NAMES} or a model plugin package.module:Name, got {self.name!r}"
            )
        object.__setattr__(self, "options", tuple((str(k), str(v)) for k, v in self.options))
        keys = [key for key, _ in self.options]
        if len(set(keys)) != len(keys) or not all(_OPTION_KEY.fullmatch(key) for key in keys):
            raise ConfigurationError(f"task options need distinct keys like name or lr_decay, got {keys}")
        positive = (
            "n_items",
            "latent_dim",
            "n_features",
            "hidden",
            "local_epochs",
            "batch_size",
            "weight_bound",
        )
        for field_name in positive:
            if int(getattr(self, field_name)) < 1:
                raise ConfigurationError(f"{field_name} must be >= 1")
        if self.n_classes < 2:
            raise ConfigurationError("n_classes must be >= 2")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError("learning_rate must be > 0")
        if self.name == "fedmf":
            self.mf_config  # noqa: B018 -- validates optimizer, step_size, regularization

    @property
    def is_plugin(self) -> bool:
        """Whether the model is a user's NumPyClient (``package.module:Name``)."""
        return self.name not in TASK_NAMES

    @property
    def wire_name(self) -> str:
        """The task name in ANNOUNCE messages: a wire id (``[A-Za-z0-9._-]``, at most 64 characters).

        Built-in names as they are; a plugin's ``package.module:Name`` with ``:`` as ``-``
        (unambiguous: Python names have no ``-``), or a digest when that is too long.
        """
        if not self.is_plugin:
            return self.name
        name = self.name.replace(":", "-")
        if len(name) <= 64 and name not in TASK_NAMES:
            return name
        return "plugin-" + hashlib.sha256(self.name.encode()).hexdigest()[:32]

    @property
    def mf_config(self) -> MFConfig:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigurationError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        return MFConfig(
            latent_dim=self.latent_dim,
            learning_rate=self.learning_rate,
            reg_user=self.reg_user,
            reg_item=self.reg_item,
            seed=self.seed,
            optimizer="gd" if self.optimizer == "gd" else "precond",
            step_size=self.step_size,
        )

    @property
    def fedavg_config(self) -> FedAvgConfig:
        return FedAvgConfig(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            weight_bound=self.weight_bound,
        )

    def new_model(self, seed: int | None = None) -> Model:
        """A fresh FedAvg model (the task's seed unless ``seed``), also the initial parameters."""
        seed = self.seed if seed is None else seed
        if self.name == "fedavg-logreg":
            return LogisticRegression(self.n_features, self.n_classes, seed=seed)
        if self.name == "fedavg-mlp":
            return MLP(self.n_features, self.hidden, self.n_classes, seed=seed)
        raise ConfigurationError(f"task {self.name!r} has no parametric model")

    @property
    def model_size(self) -> int:
        """Length of the global model vector the aggregator seals to members."""
        if self.name == "fedmf":
            return self.n_items * self.latent_dim
        if self.is_plugin:
            from fedcast.shared.learning.plugin import plugin_initial_model  # lazy: plugin imports tasks

            return int(plugin_initial_model(self).size)
        return self.new_model().n_params

    @property
    def upload_size(self) -> int:
        """Length of a client's upload vector (what is encrypted)."""
        if self.name == "fedmf":  # precond: the item gradients, then one curvature per item
            return self.model_size + (self.n_items if self.optimizer == "precond" else 0)
        return self.model_size + 1


def model_to_bytes(model: FloatArray) -> bytes:
    """Little-endian float64: the plaintext of a sealed model envelope."""
    return np.ascontiguousarray(model, dtype="<f8").tobytes()


def model_from_bytes(data: bytes, n_params: int) -> FloatArray:
    """Inverse of :func:`model_to_bytes`; refuses wrong lengths and non-finite values."""
    if len(data) != 8 * n_params:
        raise DataError(f"model is {len(data)} bytes, expected {8 * n_params}")
    model = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(model)):
        raise DataError("model contains NaN or infinity")
    return model


@dataclass(frozen=True)
class LocalUpdate:
    """A client's upload vector plus the local state to adopt if the round completes."""

    vector: FloatArray
    pending: Any = None
    clipped: int = 0


class ServerTask(ABC):
    """The aggregator's half: initial model and how an aggregate updates it."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @abstractmethod
    def initial_model(self, seed: int | None = None) -> FloatArray:
        """The model of round 1: drawn from the task's seed, or from ``seed`` when given.

        A model that restarts after its checkpoint was lost must not be the seeded one:
        the members already answered for it, and answer once per model.
        """

    @abstractmethod
    def apply(self, model: FloatArray, aggregate: FloatArray, n_members: int) -> FloatArray:
        """The new global model from the decrypted sum of the members' uploads."""


class ClientTask(ABC):
    """The edge client's half: local training on private data."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @abstractmethod
    def local_update(self, model: FloatArray) -> LocalUpdate: ...

    def commit(self, pending: Any) -> None:
        """Adopt the local state of a completed round (default: nothing to adopt)."""
        del pending  # stateless tasks (FedAvg) have nothing to keep between rounds

    def export_state(self) -> FloatArray | None:
        """The private local state worth persisting across restarts (None: nothing)."""
        return None

    def import_state(self, state: FloatArray) -> None:
        """Restore what :meth:`export_state` returned."""
        raise DataError(f"task {self.spec.name!r} keeps no local state")

    @abstractmethod
    def quality(self, model: FloatArray) -> dict[str, float]:
        """Local test metrics of a global model (for the device's own metrics)."""


class FedMFServerTask(ServerTask):
    def initial_model(self, seed: int | None = None) -> FloatArray:
        # The same draw as fedcast.shared.learning.mf.init_model: V first, from the task seed.
        cfg = self.spec.mf_config
        rng = np.random.default_rng(cfg.seed if seed is None else seed)
        v = cfg.init_mean + cfg.init_scale * rng.standard_normal((self.spec.n_items, cfg.latent_dim))
        return v.reshape(-1)

    def apply(self, model: FloatArray, aggregate: FloatArray, n_members: int) -> FloatArray:
        cfg = self.spec.mf_config
        if cfg.optimizer == "precond":
            # sum_c [G_c, H_c] -> the curvature-normalized item step; the server keeps no state.
            v = model.reshape(self.spec.n_items, cfg.latent_dim)
            gradient, curvature = aggregate[: model.size], aggregate[model.size :]
            return item_curvature_step(v, gradient, curvature, cfg).reshape(-1)
        # Eq. 4: V <- V - gamma (sum_c G_c + 2 mu V); the regularizer is the server's.
        return model - cfg.learning_rate * (aggregate + 2.0 * cfg.reg_item * model)


class FedMFClientTask(ClientTask):
    """One edge node's users: their ratings (local user ids 0..k-1, global item ids)."""

    def __init__(
        self,
        spec: TaskSpec,
        train: RatingData,
        test: RatingData | None = None,
        *,
        user_factors: FloatArray | None = None,
        client_seed: int = 0,
    ) -> None:
        super().__init__(spec)
        if train.n_items != spec.n_items:
            raise DataError(f"local data has {train.n_items} items, the federation {spec.n_items}")
        cfg = spec.mf_config
        if user_factors is None:
            rng = np.random.default_rng([cfg.seed, client_seed])
            user_factors = cfg.init_mean + cfg.init_scale * rng.standard_normal(
                (train.n_users, cfg.latent_dim)
            )
        self._client = FedMFClient(0, train, np.arange(train.n_users), user_factors, cfg)
        self._test = test

    @property
    def user_factors(self) -> FloatArray:
        return self._client.user_factors

    @property
    def n_test_ratings(self) -> int:
        return 0 if self._test is None else self._test.n_ratings

    def local_update(self, model: FloatArray) -> LocalUpdate:
        v = model.reshape(self.spec.n_items, self.spec.latent_dim)
        upload, user_factors = self._client.compute_update(v)
        return LocalUpdate(upload.vector, user_factors)

    def commit(self, pending: Any) -> None:
        self._client.commit(pending)

    def export_state(self) -> FloatArray | None:
        return self._client.user_factors  # the private user vectors never leave the device

    def import_state(self, state: FloatArray) -> None:
        try:
            self._client.commit(np.asarray(state, dtype=np.float64))
        except ConfigurationError as exc:
            raise DataError(f"saved user vectors do not match this data: {exc}") from exc

    def quality(self, model: FloatArray) -> dict[str, float]:
        if self._test is None or self._test.n_ratings == 0:
            return {}
        v = model.reshape(self.spec.n_items, self.spec.latent_dim)
        result = evaluate(MFModel(self._client.user_factors, v), self._test)
        return {"rmse": result.rmse, "mae": result.mae}


class FedAvgServerTask(ServerTask):
    def initial_model(self, seed: int | None = None) -> FloatArray:
        if self.spec.is_plugin:  # a user's model: its flattened initial weights, FedAvg otherwise
            from fedcast.shared.learning.plugin import plugin_initial_model  # lazy: plugin imports tasks

            return plugin_initial_model(self.spec, seed)
        return self.spec.new_model(seed).get_params()

    def apply(self, model: FloatArray, aggregate: FloatArray, n_members: int) -> FloatArray:
        new_params, _total_weight = server_update(model, aggregate)
        return new_params


class FedAvgClientTask(ClientTask):
    def __init__(
        self, spec: TaskSpec, train: FeatureData, test: FeatureData | None = None, *, client_seed: int = 0
    ):
        super().__init__(spec)
        self._model = spec.new_model()
        self._train = train
        self._test = test
        self._rng = np.random.default_rng([spec.seed, client_seed])

    def local_update(self, model: FloatArray) -> LocalUpdate:
        upload, clipped = client_upload(
            self._model,
            model,
            self._train,
            self.spec.fedavg_config,
            weight_bound=self.spec.weight_bound,
            seed=self._rng,
        )
        return LocalUpdate(upload, None, clipped)

    def quality(self, model: FloatArray) -> dict[str, float]:
        if self._test is None:
            return {}
        self._model.set_params(model)
        loss, accuracy, f1 = evaluate_classifier(self._model, self._test)
        return {"loss": loss, "accuracy": accuracy, "f1": f1}
