"""The distribution installs one top-level import name, ``fedcast`` (issue 13, a clean install).

The repository keeps its layout (``shared/`` and ``services/`` at the top); ``fedcast/shared``
and ``fedcast/services`` are links to them, so the wheel holds them as ``fedcast.shared`` and
``fedcast.services`` and nothing named ``shared`` or ``services`` lands in site-packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_links_point_at_the_top_level_folders() -> None:
    for name in ("shared", "services"):
        link = ROOT / "fedcast" / name
        assert link.is_symlink(), f"fedcast/{name} must stay a link, not a copy"
        assert link.resolve() == (ROOT / name).resolve()


@pytest.mark.slow
def test_the_wheel_installs_only_the_fedcast_import_name(tmp_path: Path) -> None:
    # Build from a copy: setuptools leaves a build/ folder in the tree it builds.
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("fedcast", "shared", "services"):
        shutil.copytree(
            ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("fedcast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"fedcast"}
    for module in (
        "fedcast/shared/crypto/group.py",
        "fedcast/services/aggregator/service.py",
        "fedcast/services/edge_client/service.py",
        "fedcast/shared/py.typed",
    ):
        assert module in names
    # No source file is left out through the links (every .py of shared/ and services/ is in).
    for top in ("shared", "services"):
        for path in (ROOT / top).rglob("*.py"):
            assert f"fedcast/{path.relative_to(ROOT).as_posix()}" in names


def test_nothing_imports_the_old_top_level_names() -> None:
    offenders = []
    for top in ("fedcast", "shared", "services", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            if path.is_relative_to(ROOT / "fedcast" / "shared") or path.is_relative_to(
                ROOT / "fedcast" / "services"
            ):
                continue
            for line in path.read_text().splitlines():
                stripped = line.strip()
                if stripped.startswith(("import shared", "import services", "from shared", "from services")):
                    offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
