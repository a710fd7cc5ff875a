"""Reading ``FEDCAST_*`` environment variables into validated configuration values.

Every service config has a ``from_env`` built on these helpers; a malformed
value raises ConfigurationError naming the variable (never echoing a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.tasks import TaskSpec

__all__ = [
    "env_float",
    "env_hex",
    "env_int",
    "env_optional_int",
    "env_path",
    "env_str",
    "task_from_env",
    "task_options",
]


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer") from None


def env_optional_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    return env_int(env, name, 0) if raw else None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number") from None


def env_path(env: Mapping[str, str], name: str, default: Path | None = None) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else default


def env_hex(env: Mapping[str, str], name: str) -> bytes | None:
    """Hex bytes from ``NAME``, or read from the file named by ``NAME_FILE``."""
    raw = env.get(name, "").strip()
    file_name = env.get(f"{name}_FILE", "").strip()
    if not raw and file_name:
        try:
            raw = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {name}_FILE: {exc.strerror}") from exc
    if not raw:
        return None
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be hex") from None


def task_options(raw: str, name: str = "FEDCAST_TASK_OPTIONS") -> tuple[tuple[str, str], ...]:
    """``key=value,key=value`` (a model plugin's options) as ``(key, value)`` pairs."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"{name} must be key=value pairs separated by commas")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def task_from_env(env: Mapping[str, str]) -> TaskSpec:
    """FEDCAST_TASK and the FEDCAST_TASK_* hyper-parameters (defaults: TaskSpec's).

    FEDCAST_TASK is a built-in task or a model plugin ``package.module:Name`` (a
    fedcast.api.NumPyClient factory, importable from ``PYTHONPATH``), whose
    FEDCAST_TASK_OPTIONS (``key=value,...``) reach it as ``ClientContext.options``.
    """
    base = TaskSpec()
    return TaskSpec(
        name=env_str(env, "FEDCAST_TASK", base.name),
        n_items=env_int(env, "FEDCAST_TASK_N_ITEMS", base.n_items),
        latent_dim=env_int(env, "FEDCAST_TASK_LATENT_DIM", base.latent_dim),
        learning_rate=env_float(env, "FEDCAST_TASK_LEARNING_RATE", base.learning_rate),
        reg_user=env_float(env, "FEDCAST_TASK_REG_USER", base.reg_user),
        reg_item=env_float(env, "FEDCAST_TASK_REG_ITEM", base.reg_item),
        optimizer=env_str(env, "FEDCAST_TASK_OPTIMIZER", base.optimizer),
        step_size=env_float(env, "FEDCAST_TASK_STEP_SIZE", base.step_size),
        n_features=env_int(env, "FEDCAST_TASK_N_FEATURES", base.n_features),
        n_classes=env_int(env, "FEDCAST_TASK_N_CLASSES", base.n_classes),
        hidden=env_int(env, "FEDCAST_TASK_HIDDEN", base.hidden),
        local_epochs=env_int(env, "FEDCAST_TASK_LOCAL_EPOCHS", base.local_epochs),
        batch_size=env_int(env, "FEDCAST_TASK_BATCH_SIZE", base.batch_size),
        weight_bound=env_int(env, "FEDCAST_TASK_WEIGHT_BOUND", base.weight_bound),
        seed=env_int(env, "FEDCAST_TASK_SEED", base.seed),
        options=task_options(env_str(env, "FEDCAST_TASK_OPTIONS")),
    )
