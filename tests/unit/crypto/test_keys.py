"""Key generation, serialization, redaction and key files on disk."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from shared.crypto.group import GroupParams, insecure_test_group
from shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from shared.errors import InvalidGroupElementError, InvalidKeyError, KeyStorageError
from shared.keystore import read_json, read_secret_json, write_json_atomic


def test_client_key_round_trip_and_redaction(small_group: GroupParams, caplog) -> None:
    kp = ClientKeyPair.generate(small_group)
    assert 0 < kp.secret < small_group.q
    assert kp.public == small_group.power(kp.secret)
    loaded = ClientKeyPair.from_secret_dict(kp.to_secret_dict(), small_group)
    assert loaded == kp
    secret_hex = format(kp.secret, "x")
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key %s %r", kp, kp)
    assert secret_hex not in repr(kp) and secret_hex not in str(kp) and secret_hex not in caplog.text
    assert "<redacted>" in repr(kp)


def test_aggregator_keys_round_trip_and_redaction(small_group: GroupParams) -> None:
    sk = AggregatorSecretKey.generate(small_group, 5)
    assert len(set(sk.alphas)) == 5
    assert sk.public.betas == tuple(small_group.power(a) for a in sk.alphas)
    assert AggregatorSecretKey.from_secret_dict(sk.to_secret_dict(), small_group) == sk
    assert AggregatorPublicKey.from_dict(sk.public.to_dict(), small_group) == sk.public
    for a in sk.alphas:
        assert format(a, "x") not in repr(sk)
    assert format(sk.delivery_secret, "x") not in repr(sk)


def test_key_from_another_group_is_refused(small_group: GroupParams) -> None:
    other = insecure_test_group(512, 128, seed=1)
    with pytest.raises(InvalidKeyError, match="different group"):
        ClientKeyPair.from_secret_dict(ClientKeyPair.generate(other).to_secret_dict(), small_group)
    with pytest.raises(InvalidKeyError, match="different group"):
        AggregatorSecretKey.from_secret_dict(
            AggregatorSecretKey.generate(other, 2).to_secret_dict(), small_group
        )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: {**d, "format": "other"},
        lambda d: {**d, "version": 99},
        lambda d: {**d, "secret": "zz"},
        lambda d: {**d, "secret": "0"},
        lambda d: {k: v for k, v in d.items() if k != "secret"},
    ],
)
def test_malformed_client_key_documents(small_group: GroupParams, mutate) -> None:
    doc = ClientKeyPair.generate(small_group).to_secret_dict()
    with pytest.raises(InvalidKeyError):
        ClientKeyPair.from_secret_dict(mutate(doc), small_group)


def test_public_key_documents_are_validated(small_group: GroupParams) -> None:
    doc = AggregatorSecretKey.generate(small_group, 3).public.to_dict()
    with pytest.raises(InvalidGroupElementError):
        AggregatorPublicKey.from_dict(
            {**doc, "betas": [*doc["betas"][:2], format(small_group.p - 1, "x")]}, small_group
        )
    with pytest.raises(InvalidKeyError):
        AggregatorPublicKey.from_dict({**doc, "betas": [doc["betas"][0]] * 2}, small_group)
    with pytest.raises(InvalidKeyError):
        AggregatorPublicKey.from_dict({**doc, "betas": []}, small_group)
    with pytest.raises(InvalidKeyError):
        AggregatorSecretKey.from_secrets(small_group, [3, 3], 5)


def test_secret_files_are_0600_and_atomic(tmp_path: Path, small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    path = write_json_atomic(tmp_path / "keys" / "client.json", kp.to_secret_dict(), secret=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ClientKeyPair.from_secret_dict(read_secret_json(path), small_group) == kp
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]  # no temp files left
    public = write_json_atomic(tmp_path / "pub.json", kp.group.to_dict(), secret=False)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert read_json(public)["p"] == format(small_group.p, "x")


def test_group_readable_secret_file_is_refused(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "k.json", {"x": 1}, secret=True)
    os.chmod(path, 0o640)
    with pytest.raises(KeyStorageError, match="chmod 600"):
        read_secret_json(path)
    assert read_secret_json(path, check_permissions=False) == {"x": 1}


def test_unreadable_and_corrupt_files_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyStorageError):
        read_json(tmp_path / "missing.json")
    with pytest.raises(KeyStorageError):
        read_secret_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KeyStorageError):
        read_json(bad)
