"""``fedcast keyserver`` administration: add-device's refusals, and list as a table or as JSON."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedcast.cli import main
from fedcast.services.keyserver.service import KeyServerConfig
from fedcast.services.keyserver.store import DeviceStatus, RegistryStore

VK = b"\x01" * 32
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key service state dir named by FEDCAST_STATE_DIR, with no other FEDCAST_* setting leaking in."""
    for name in [n for n in os.environ if n.startswith("FEDCAST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FEDCAST_STATE_DIR", str(tmp_path / "keyserver"))
    return tmp_path / "keyserver"


def keyserver(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keyserver", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def registry(state_dir: Path) -> RegistryStore:
    return RegistryStore(KeyServerConfig(state_dir).registry_path)


def test_reprovision_of_an_active_device_is_refused_unless_forced(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, token, _ = keyserver(capsys, "add-device", "pi-01")
    assert code == 0
    with registry(state_dir) as store:
        store.enroll("pi-01", token.strip(), 5, VK)

    code, out, err = keyserver(capsys, "add-device", "--reprovision", "pi-01")
    assert (code, out) == (2, "")
    assert "not revoked" in err and "--force-active" in err and "[registry_error]" in err
    code, out, err = keyserver(capsys, "add-device", "--force-active", "pi-01")
    assert (code, out) == (2, "")
    assert "--reprovision" in err and "[invalid_configuration]" in err
    with registry(state_dir) as store:
        assert store.status("pi-01") is DeviceStatus.ENROLLED

    code, new_token, _ = keyserver(capsys, "add-device", "--reprovision", "--force-active", "pi-01")
    assert code == 0 and new_token.strip() and new_token != token
    with registry(state_dir) as store:
        assert store.status("pi-01") is DeviceStatus.PROVISIONED
        assert store.enroll("pi-01", new_token.strip(), 7, VK) is True


def test_reprovision_of_a_revoked_device_needs_no_force(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keyserver(capsys, "add-device", "pi-01")[0] == 0
    assert keyserver(capsys, "revoke", "pi-01")[0] == 0
    code, token, _ = keyserver(capsys, "add-device", "--reprovision", "pi-01")
    assert code == 0
    with registry(state_dir) as store:
        assert store.enroll("pi-01", token.strip(), 5, VK) is True


def test_help_says_what_reprovision_and_force_active_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["keyserver", "add-device", "--help"])
    assert excinfo.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "replace a REVOKED device's token; refused for an active device unless --force-active" in text
    assert "un-enrolls an active device, which must enroll again" in text


@pytest.fixture
def fleet(state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Three devices, one per state, on a clock that ticks 1000 s per registry write; returns their tokens."""
    clock = itertools.count(T0, 1000.0)
    monkeypatch.setattr("fedcast.services.keyserver.store.time", SimpleNamespace(time=lambda: next(clock)))
    tokens = []
    for device in ("line-2-press", "line-1-oven", "pi-01"):  # provisioned at T0, T0+1000, T0+2000
        code, out, _ = keyserver(capsys, "add-device", device)
        assert code == 0
        tokens.append(out.strip())
    with registry(state_dir) as store:
        store.enroll("line-1-oven", tokens[1], 5, VK)  # T0+3000
        store.enroll("pi-01", tokens[2], 6, VK)  # T0+4000
    assert keyserver(capsys, "revoke", "pi-01")[0] == 0  # T0+5000
    return tokens


def test_list_prints_an_aligned_table(fleet: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = keyserver(capsys, "list")
    assert code == 0
    assert out.splitlines() == [
        "DEVICE        STATUS       PROVISIONED           ENROLLED              REVOKED",
        "line-1-oven   enrolled     2023-11-14T22:30:00Z  2023-11-14T23:03:20Z  -",
        "line-2-press  provisioned  2023-11-14T22:13:20Z  -                     -",
        "pi-01         revoked      2023-11-14T22:46:40Z  2023-11-14T23:20:00Z  2023-11-14T23:36:40Z",
    ]
    assert not any(token in out for token in fleet)


def test_list_json(fleet: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = keyserver(capsys, "list", "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "client_id": "line-1-oven",
            "status": "enrolled",
            "provisioned_at": "2023-11-14T22:30:00Z",
            "enrolled_at": "2023-11-14T23:03:20Z",
            "revoked_at": None,
        },
        {
            "client_id": "line-2-press",
            "status": "provisioned",
            "provisioned_at": "2023-11-14T22:13:20Z",
            "enrolled_at": None,
            "revoked_at": None,
        },
        {
            "client_id": "pi-01",
            "status": "revoked",
            "provisioned_at": "2023-11-14T22:46:40Z",
            "enrolled_at": "2023-11-14T23:20:00Z",
            "revoked_at": "2023-11-14T23:36:40Z",
        },
    ]
    assert not any(token in out for token in fleet)


def test_list_of_an_empty_registry(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir.mkdir(mode=0o700)
    registry(state_dir).close()
    assert keyserver(capsys, "list", "--json")[:2] == (0, "[]\n")
    code, out, _ = keyserver(capsys, "list")
    assert code == 0 and re.fullmatch(r"DEVICE +STATUS +PROVISIONED +ENROLLED +REVOKED\n", out)


def test_list_without_a_registry_says_where_it_looked(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listing must not create an empty registry: a mistyped state dir would then look like no devices."""
    code, out, err = keyserver(capsys, "list")
    assert (code, out) == (2, "")
    assert f"no registry at {KeyServerConfig(state_dir).registry_path}" in err
    assert not state_dir.exists()


def test_list_refuses_another_federations_registry(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keyserver(capsys, "add-device", "pi-01")[0] == 0
    monkeypatch.setenv("FEDCAST_FEDERATION", "plant-7")
    code, out, err = keyserver(capsys, "list")
    assert (code, out) == (2, "")
    assert "belongs to federation 'default'" in err
