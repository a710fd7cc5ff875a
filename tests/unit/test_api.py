"""Public API hygiene: every module declares __all__, exactly its own public names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import fedcast
from fedcast.shared import errors


def _modules() -> list[str]:
    names = []
    for package in (fedcast,):  # fedcast.shared and fedcast.services included
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_all_is_exact(name: str) -> None:
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        # packages that only group submodules may omit it, but then define nothing public
        own = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == name
        ]
        assert own == [], f"{name} defines {own} without __all__"
        return
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names undefined {missing}"
    own_public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(v) or inspect.isfunction(v))
        and getattr(v, "__module__", None) == name
    }
    assert own_public <= exported, f"{name} does not export {sorted(own_public - exported)}"


def test_every_error_has_a_distinct_reason_code() -> None:
    classes = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(c, errors.FedcastError) for c in classes)
    reasons = [c.reason for c in classes]
    assert len(reasons) == len(set(reasons))
    assert all(r.replace("_", "").isalnum() and r.islower() for r in reasons)


@pytest.mark.parametrize(
    "name",
    [
        "fedcast.shared.crypto.modulus",
        "fedcast.shared.crypto.proofs",
        "fedcast.shared.crypto.batch",
        "fedcast.shared.crypto.pok",
        "fedcast.shared.protocol.ledger",
        "fedcast.services.edge_client.ledger",
    ],
)
def test_protocol_v2_modules_are_covered_and_declare_all(name: str) -> None:
    assert name in _modules()
    assert hasattr(importlib.import_module(name), "__all__"), f"{name} has no __all__"
