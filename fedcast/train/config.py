"""``fedcast train`` settings: one validated value object, from flags and an optional TOML file.

Every hyper-parameter is a field here, a ``--flag`` of the same name (``learning_rate`` is
``--learning-rate``) and a key of the TOML file given by ``--config``. A flag given on the
command line wins over the file; a field left unset (``None``) takes the library default
(``MFConfig``, ``FedAvgConfig``, ...), so the defaults live in one place, next to the code
they tune.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fedcast.shared.errors import ConfigurationError

__all__ = ["BUILTIN_TASKS", "SCHEMES", "TrainConfig", "load_toml"]

BUILTIN_TASKS = ("fedmf", "fedmmf", "fedavg-logreg", "fedavg-mlp")
SCHEMES = ("plaintext", "secure")


@dataclass(frozen=True)
class TrainConfig:
    """What ``fedcast train`` runs. ``None`` means "the library default"."""

    task: str = "fedmf"
    data: Path | None = None  # None: the built-in synthetic data of the task
    scheme: str = "plaintext"
    rounds: int = 100
    seed: int = 0
    test_fraction: float = 0.2  # per-client holdout (see docs/TRAINING.md)
    clients: int | None = None  # MF: None = one user per client; FedAvg: None = 10
    out: Path = Path("fedcast-model")
    # -- matrix factorization (fedmf, fedmmf)
    latent_dim: int | None = None
    optimizer: str | None = None  # precond (default) or gd
    step_size: float | None = None  # precond: share of the preconditioned step
    learning_rate: float | None = None  # gd's step; also FedAvg's local learning rate
    reg_user: float | None = None
    reg_item: float | None = None
    local_steps: int | None = None
    init_mean: float | None = None
    init_scale: float | None = None
    online_fraction: float = 1.0
    mask_order: int = 1  # fedmmf: 1 linear, 2 factorization-machine masks
    mask_ridge: float | None = None
    # -- FedAvg (fedavg-*, and --task package.module:Name)
    hidden: int = 16
    local_epochs: int | None = None
    batch_size: int | None = None
    clients_per_round: int | None = None  # None: every client, every round
    dirichlet_alpha: float | None = None  # None: IID partition; else label-skewed
    # -- secure scheme
    modulus_bits: int = 2048
    frac_bits: int = 16
    clip: float | None = None  # None: from the first round's uploads (see docs/TRAINING.md)
    workers: int | None = None  # processes for the simulated clients (None: one per core)

    def __post_init__(self) -> None:
        if self.task not in BUILTIN_TASKS and ":" not in self.task:
            raise ConfigurationError(
                f"task must be one of {', '.join(BUILTIN_TASKS)} or package.module:Name, got {self.task!r}"
            )
        if self.scheme not in SCHEMES:
            raise ConfigurationError(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        for name, low in (("rounds", 1), ("seed", 0), ("hidden", 1), ("frac_bits", 0)):
            _check_int(name, getattr(self, name), low)
        for name, low in (
            ("clients", 2),
            ("latent_dim", 1),
            ("local_steps", 1),
            ("local_epochs", 1),
            ("batch_size", 1),
            ("clients_per_round", 2),
            ("workers", 1),
        ):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, low)
        if self.modulus_bits not in (2048, 3072):
            raise ConfigurationError(f"modulus_bits must be 2048 or 3072, got {self.modulus_bits}")
        if self.mask_order not in (1, 2):
            raise ConfigurationError(f"mask_order must be 1 or 2, got {self.mask_order}")
        if not (math.isfinite(self.test_fraction) and 0.0 < self.test_fraction < 1.0):
            raise ConfigurationError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not (math.isfinite(self.online_fraction) and 0.0 < self.online_fraction <= 1.0):
            raise ConfigurationError(f"online_fraction must be in (0, 1], got {self.online_fraction}")
        if self.optimizer is not None and self.optimizer not in ("precond", "gd"):
            raise ConfigurationError(f"optimizer must be precond or gd, got {self.optimizer!r}")
        for name in ("learning_rate", "step_size", "clip", "dirichlet_alpha", "mask_ridge", "init_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value}")
        for name in ("reg_user", "reg_item", "init_mean"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigurationError(f"{name} must be finite, got {value}")

    @property
    def is_mf(self) -> bool:
        return self.task in ("fedmf", "fedmmf")

    @property
    def is_plugin(self) -> bool:
        return ":" in self.task

    def updated(self, values: dict[str, Any]) -> TrainConfig:
        """A copy with ``values`` applied (unknown keys refused, paths made :class:`Path`)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("data", "out", "task", "scheme", "optimizer") and value is not None:
                if not isinstance(value, str | Path):
                    raise ConfigurationError(f"{key} must be a string, got {value!r}")
                value = Path(value) if key in ("data", "out") else str(value)
            converted[key] = value
        return replace(self, **converted)

    def hyperparameters(self) -> dict[str, Any]:
        """Every field as plain JSON values (for the model's metadata)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def load_toml(path: Path) -> dict[str, Any]:
    """The settings of a TOML file: top-level keys, or the ``[train]`` table if there is one.

    Keys may use dashes or underscores (``learning-rate`` = ``learning_rate``).
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    table = document.get("train", document)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [train] must be a table")
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            raise ConfigurationError(f"{path}: nested table {key!r} is not a setting")
        settings[key.replace("-", "_")] = value
    return settings


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigurationError(f"{name} must be a whole number >= {low}, got {value!r}")


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
