"""RegistryStore: schema versioning, idempotency, refusals, file mode, tokens never in clear."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedcast.services.keyserver.store import (
    MIN_TOKEN_LENGTH,
    SCHEMA_VERSION,
    DeviceRecord,
    DeviceStatus,
    RegistryStore,
    hash_token,
    migrate,
)
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.errors import (
    ConfigurationError,
    EnrollmentRefusedError,
    KeyStorageError,
    LegacyStateError,
    RegistryError,
)
from fedcast.shared.wire.messages import AggregatorInfo
from tests.unit.keyserver.helpers import write_v1_registry

VK1, VK2 = b"\x01" * 32, b"\x02" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RegistryStore]:
    with RegistryStore(tmp_path / "registry.sqlite3") as s:
        yield s


def test_schema_version_wal_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    store = RegistryStore(path)
    store.provision_device("c1")
    assert store.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for companion in tmp_path.glob("registry.sqlite3-*"):  # -wal / -shm get the db's mode
        assert stat.S_IMODE(companion.stat().st_mode) == 0o600
    store.close()
    store.close()  # idempotent
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_migrate_is_idempotent_and_refuses_newer_files(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    assert migrate(db) == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(KeyStorageError, match="newer"):
        migrate(db)
    db.close()


def test_group_readable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStorageError, match="group or others"):
        RegistryStore(path)


def test_closed_store_raises(store: RegistryStore) -> None:
    store.close()
    with pytest.raises(KeyStorageError):
        store.aggregator()


def test_token_is_stored_hashed_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "registry.sqlite3"
    caplog.set_level(logging.DEBUG)
    with RegistryStore(path) as store:
        token = store.provision_device("c1")
        store.import_tokens({"c2": "operator-made-token-0123456789"})
        store.enroll("c1", token, 5, VK1)
    assert len(token) >= MIN_TOKEN_LENGTH
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in raw and b"operator-made-token" not in raw
    assert hash_token(token) in raw
    assert token not in caplog.text and "operator-made-token" not in caplog.text


def test_enroll_is_idempotent_and_entries_follow(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    assert store.status("c1") is DeviceStatus.PROVISIONED
    assert store.entries(["c1"]) == []  # no keys yet
    assert store.enroll("c1", token, 12345, VK1) is True
    assert store.enroll("c1", token, 12345, VK1) is False  # same keys again: fine
    assert store.status("c1") is DeviceStatus.ENROLLED
    [entry] = store.entries(["c1", "nobody", "c1"])
    assert (entry.client_id, entry.elgamal_public, entry.verify_key, entry.revoked) == (
        "c1",
        12345,
        VK1,
        False,
    )


@pytest.mark.parametrize(
    ("client_id", "token_ok", "match"),
    [("nobody", True, "unknown device or wrong"), ("c1", False, "unknown device or wrong")],
)
def test_enroll_refuses_unknown_device_and_wrong_token(
    store: RegistryStore, client_id: str, token_ok: bool, match: str
) -> None:
    token = store.provision_device("c1")
    with pytest.raises(EnrollmentRefusedError, match=match):
        store.enroll(client_id, token if token_ok else token + "x", 5, VK1)


def test_re_enroll_with_other_keys_is_refused(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    store.enroll("c1", token, 5, VK1)
    with pytest.raises(EnrollmentRefusedError, match="other keys"):
        store.enroll("c1", token, 5, VK2)
    with pytest.raises(EnrollmentRefusedError, match="other keys"):
        store.enroll("c1", token, 7, VK1)
    assert store.entries(["c1"])[0].verify_key == VK1


def test_enroll_refuses_malformed_keys(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    with pytest.raises(EnrollmentRefusedError):
        store.enroll("c1", token, 5, b"short")
    with pytest.raises(EnrollmentRefusedError):
        store.enroll("c1", token, 1, VK1)


def test_revoke_then_reprovision(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    store.enroll("c1", token, 5, VK1)
    assert store.revoke("c1") is True
    assert store.revoke("c1") is False  # idempotent
    assert store.entries(["c1"])[0].revoked is True  # kept, marked
    with pytest.raises(EnrollmentRefusedError, match="revoked"):
        store.enroll("c1", token, 5, VK1)
    with pytest.raises(RegistryError, match="unknown"):
        store.revoke("nobody")
    new_token = store.provision_device("c1")  # a revoked device may be provisioned anew
    assert store.entries(["c1"]) == []
    assert store.enroll("c1", new_token, 7, VK2) is True
    with pytest.raises(EnrollmentRefusedError):
        store.enroll("c1", token, 7, VK2)  # the old token is dead


def test_provision_refuses_duplicates(store: RegistryStore) -> None:
    store.provision_device("c1")
    with pytest.raises(RegistryError, match="already provisioned"):
        store.provision_device("c1")
    with pytest.raises(RegistryError, match="invalid client id"):
        store.provision_device("bad id!")


@pytest.mark.parametrize("enrolled", [False, True], ids=["provisioned", "enrolled"])
def test_reprovision_refuses_a_device_that_is_not_revoked(store: RegistryStore, enrolled: bool) -> None:
    """--reprovision once un-enrolled an active device silently; now it changes nothing and says why."""
    token = store.provision_device("c1")
    if enrolled:
        store.enroll("c1", token, 5, VK1)
    before = store.list_devices()
    with pytest.raises(RegistryError, match=r"not revoked.*--force-active"):
        store.provision_device("c1", reprovision=True)
    assert store.list_devices() == before
    assert store.enroll("c1", token, 5, VK1) is not enrolled  # the device's token still works


def test_reprovision_replaces_a_revoked_devices_token(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    store.enroll("c1", token, 5, VK1)
    store.revoke("c1")
    new_token = store.provision_device("c1", reprovision=True)
    assert store.status("c1") is DeviceStatus.PROVISIONED
    assert store.enroll("c1", new_token, 7, VK2) is True


def test_force_active_reprovisions_an_enrolled_device(
    store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    token = store.provision_device("c1")
    store.enroll("c1", token, 5, VK1)
    new_token = store.provision_device("c1", reprovision=True, force_active=True)
    assert new_token != token
    assert store.status("c1") is DeviceStatus.PROVISIONED and store.entries(["c1"]) == []
    with pytest.raises(EnrollmentRefusedError):
        store.enroll("c1", token, 5, VK1)  # the old token is void
    assert store.enroll("c1", new_token, 7, VK2) is True
    assert "re-provisioned by force" in caplog.text
    assert token not in caplog.text and new_token not in caplog.text


def test_force_active_alone_is_a_usage_error(store: RegistryStore) -> None:
    token = store.provision_device("c1")
    with pytest.raises(ConfigurationError, match="--reprovision"):
        store.provision_device("c1", force_active=True)
    assert store.enroll("c1", token, 5, VK1) is True  # nothing changed


def test_list_devices_shows_status_and_dates_never_tokens(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.list_devices() == []
    clock = itertools.count(1000.0, 1000.0)
    monkeypatch.setattr("fedcast.services.keyserver.store.time", SimpleNamespace(time=lambda: next(clock)))
    tokens = {cid: store.provision_device(cid) for cid in ("c3", "c1", "c2")}  # at 1000, 2000, 3000
    store.enroll("c1", tokens["c1"], 5, VK1)  # 4000
    store.enroll("c2", tokens["c2"], 6, VK2)  # 5000
    store.revoke("c2")  # 6000
    assert store.list_devices() == [
        DeviceRecord("c1", DeviceStatus.ENROLLED, 2000.0, 4000.0, None),
        DeviceRecord("c2", DeviceStatus.REVOKED, 3000.0, 5000.0, 6000.0),
        DeviceRecord("c3", DeviceStatus.PROVISIONED, 1000.0, None, None),
    ]
    assert not any("token" in field.name or "hash" in field.name for field in fields(DeviceRecord))
    assert not any(token in repr(store.list_devices()) for token in tokens.values())


def test_import_tokens_is_idempotent(store: RegistryStore, caplog: pytest.LogCaptureFixture) -> None:
    tokens = {"c1": "a" * 20, "c2": "b" * 20}
    assert store.import_tokens(tokens) == 2
    assert store.import_tokens(tokens) == 0
    assert store.import_tokens({"c1": "c" * 20}) == 1  # rotated before enrollment
    store.enroll("c1", "c" * 20, 5, VK1)
    assert store.import_tokens({"c1": "d" * 20}) == 0  # enrolled: left alone, warned
    assert "not re-provisioned" in caplog.text and "d" * 20 not in caplog.text
    assert store.enroll("c1", "c" * 20, 5, VK1) is False
    with pytest.raises(ConfigurationError, match="printable ASCII"):
        store.import_tokens({"c3": "short"})
    with pytest.raises(ConfigurationError):
        store.import_tokens({"c3": "has spaces in the middle"})
    assert store.status("c3") is None


def test_entries_many_ids_in_request_order(store: RegistryStore) -> None:
    ids = [f"c{i}" for i in range(1200)]  # more than one sqlite chunk
    store.import_tokens({cid: f"token-for-device-{cid}" for cid in ids})
    for i, cid in enumerate(ids):
        store.enroll(cid, f"token-for-device-{cid}", 1000 + i, VK1)
    wanted = list(reversed(ids))
    assert [e.client_id for e in store.entries(wanted)] == wanted


def test_aggregator_roundtrip_and_replacement(store: RegistryStore) -> None:
    # The store keeps what the handler verified; the proofs travel on to every client.
    assert store.aggregator() is None
    info = AggregatorInfo(11, DlogProof(13, 17), 19, DlogProof(23, 2**700 + 1), VK1)
    assert store.set_aggregator(info) is True
    assert store.set_aggregator(info) is False
    assert store.aggregator() == info
    other = AggregatorInfo(29, DlogProof(31, 37), 41, DlogProof(43, 47), VK2)
    assert store.set_aggregator(other) is True
    assert store.aggregator() == other
    with pytest.raises(RegistryError):
        store.set_aggregator(AggregatorInfo(29, DlogProof(31, 37), 41, DlogProof(43, 47), b"short"))
    assert store.aggregator() == other


def test_modulus_binding(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    n1, n2 = 0xC5 * 2**600 + 1, 0xC7 * 2**600 + 3
    with RegistryStore(path) as store:
        store.bind_modulus(n1)
        store.bind_modulus(n1)  # idempotent
    with RegistryStore(path) as store:
        store.bind_modulus(n1)  # remembered across a reopen
        with pytest.raises(ConfigurationError, match="another modulus"):
            store.bind_modulus(n2)
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("registry.sqlite3-*"))
    assert format(n1, "x").encode() not in raw  # only a digest of N is kept


# -- protocol version 1 registries ------------------------------------------------------------------


def _open_files() -> set[str]:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc")
    found = set()
    for fd in fds.iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue
    return found


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [*db.iterdump(), f"user_version={db.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("enrolled", "aggregator", "counts"),
    [
        (True, False, r"1 device key\(s\) and 0 aggregator"),
        (False, True, r"0 device key\(s\) and 1 aggregator"),
    ],
    ids=["enrolled-device", "aggregator-row"],
)
def test_a_v1_registry_with_keys_is_refused_and_left_unchanged(
    tmp_path: Path, enrolled: bool, aggregator: bool, counts: str
) -> None:
    path = tmp_path / "registry.sqlite3"
    write_v1_registry(path, enrolled=enrolled, aggregator=aggregator)
    before = _dump(path)
    with pytest.raises(LegacyStateError, match=counts) as info:
        RegistryStore(path)
    message = str(info.value)
    assert "version 1" in message and "new state directory" in message and "re-provision" in message
    assert isinstance(info.value, KeyStorageError)  # the service treats it as unusable state
    assert str(path) not in _open_files()  # the refused store closed its connection
    assert _dump(path) == before  # nothing migrated, nothing dropped
    assert "user_version=1" in before


def test_a_v1_registry_with_provisioned_devices_only_migrates_and_keeps_their_tokens(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    token = write_v1_registry(path)
    with RegistryStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert store.status("c1") is DeviceStatus.PROVISIONED
        store.bind_federation("f1")  # the federation binding is kept too
        with pytest.raises(EnrollmentRefusedError):
            store.enroll("c1", "another-token-0123456789", 5, VK1)
        assert store.enroll("c1", token, 5, VK1) is True  # the operator's token still works
        info = AggregatorInfo(11, DlogProof(13, 17), 19, DlogProof(23, 29), VK2)
        assert store.set_aggregator(info) is True  # the version-2 aggregator table
        assert store.aggregator() == info


def test_federation_binding(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with RegistryStore(path) as store:
        store.bind_federation("f1")
        store.bind_federation("f1")
    with RegistryStore(path) as store, pytest.raises(ConfigurationError, match="belongs to federation"):
        store.bind_federation("f2")


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with RegistryStore(path) as store:
        token = store.provision_device("c1")
        store.enroll("c1", token, 5, VK1)
    with RegistryStore(path) as store:
        assert store.enroll("c1", token, 5, VK1) is False
        assert repr(store) == f"RegistryStore({str(path)!r})"


def test_service_ids_are_reserved(tmp_path: Path) -> None:
    with RegistryStore(tmp_path / "r.sqlite3") as store:
        for reserved in ("aggregator", "keyserver"):
            with pytest.raises(RegistryError, match="reserved"):
                store.provision_device(reserved)
