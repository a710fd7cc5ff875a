"""The insecure v1 re-implementation is reachable only through ``fedcast attack``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_shared_and_services_never_import_the_attacks() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for top in ("shared", "services")
        for path in (ROOT / top).rglob("*.py")
        if "fedcast.attacks" in path.read_text() or "legacy_v1" in path.read_text()
    ]
    assert offenders == []


def test_only_the_attack_command_imports_attack_code() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "fedcast").rglob("*.py")
        if "attacks" not in path.parts and path.name != "cli.py" and "fedcast.attacks" in path.read_text()
    ]
    assert offenders == []
    # Building the CLI (what every other subcommand does) loads none of the attack modules.
    code = (
        "import sys, fedcast.cli; fedcast.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('fedcast.attacks')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['fedcast.attacks']"
