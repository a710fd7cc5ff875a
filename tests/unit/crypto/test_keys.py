"""Keys: generation, serialization, redaction, legacy refusal, the aggregator's proven public key."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams, frame
from fedcast.shared.crypto.keys import (
    REDACTED,
    AggregatorPublicKey,
    AggregatorSecretKey,
    ClientKeyPair,
    aggregator_key_context,
)
from fedcast.shared.crypto.proofs import prove_dlog
from fedcast.shared.errors import InvalidKeyError, KeyStorageError, LegacyStateError
from fedcast.shared.keystore import read_json, read_secret_json, write_json_atomic

FED, VK = "plant-7", b"\x01" * 32


# -- client keys -----------------------------------------------------------------------------------


def test_client_key_generation_round_trip_and_redaction(small_group: GroupParams, caplog) -> None:
    kp = ClientKeyPair.generate(small_group)
    assert 0 < kp.secret < 2**EXPONENT_BITS
    assert kp.public == small_group.power(kp.secret)
    assert kp.public_square == kp.public**2 % small_group.n
    assert ClientKeyPair.from_secret_dict(kp.to_secret_dict(), small_group) == kp
    assert ClientKeyPair.from_secret(small_group, kp.secret) == kp
    secret_hex, secret_dec = format(kp.secret, "x"), str(kp.secret)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key %s %r", kp, kp)
    for text in (repr(kp), str(kp), caplog.text):
        assert secret_hex not in text and secret_dec not in text
    assert REDACTED in repr(kp)
    assert ClientKeyPair.generate(small_group).secret != kp.secret


@pytest.mark.parametrize("bad", [0, -1, 2**EXPONENT_BITS, True, "zz", None])
def test_client_secret_out_of_range(small_group: GroupParams, bad: object) -> None:
    with pytest.raises(InvalidKeyError):
        ClientKeyPair.from_secret(small_group, bad)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: {**d, "format": "other"},
        lambda d: {**d, "version": 99},
        lambda d: {k: v for k, v in d.items() if k != "version"},
        lambda d: {**d, "secret": "zz"},
        lambda d: {**d, "secret": "0"},
        lambda d: {k: v for k, v in d.items() if k != "secret"},
        lambda d: {k: v for k, v in d.items() if k != "group"},
        lambda d: ["not", "a", "dict"],
    ],
)
def test_malformed_client_key_documents(small_group: GroupParams, mutate) -> None:
    doc = ClientKeyPair.generate(small_group).to_secret_dict()
    with pytest.raises(InvalidKeyError):
        ClientKeyPair.from_secret_dict(mutate(doc), small_group)


def test_v1_key_documents_are_refused_as_legacy(small_group: GroupParams) -> None:
    client = {**ClientKeyPair.generate(small_group).to_secret_dict(), "version": 1}
    aggregator = {**AggregatorSecretKey.generate(small_group).to_secret_dict(), "version": 1}
    v1_group = {"p": "ff", "q": "7", "g": "4", "insecure": True}
    for doc in (client, {**client, "group": v1_group}):
        with pytest.raises(LegacyStateError):
            ClientKeyPair.from_secret_dict(doc, small_group)
    with pytest.raises(LegacyStateError) as raised:
        AggregatorSecretKey.from_secret_dict({**aggregator, "alphas": ["3", "5"]}, small_group)
    assert isinstance(raised.value, KeyStorageError)


def test_keys_of_another_group_are_refused(small_group: GroupParams, group_1024: GroupParams) -> None:
    with pytest.raises(InvalidKeyError, match="different group"):
        ClientKeyPair.from_secret_dict(ClientKeyPair.generate(group_1024).to_secret_dict(), small_group)
    with pytest.raises(InvalidKeyError, match="different group"):
        AggregatorSecretKey.from_secret_dict(
            AggregatorSecretKey.generate(group_1024).to_secret_dict(), small_group
        )


# -- the aggregator's key --------------------------------------------------------------------------


def test_aggregator_key_generation_round_trip_and_redaction(small_group: GroupParams) -> None:
    sk = AggregatorSecretKey.generate(small_group)
    assert sk.alpha != sk.delivery_secret
    assert all(0 < x < 2**EXPONENT_BITS for x in (sk.alpha, sk.delivery_secret))
    assert AggregatorSecretKey.from_secret_dict(sk.to_secret_dict(), small_group) == sk
    for secret in (sk.alpha, sk.delivery_secret):
        assert format(secret, "x") not in repr(sk) and str(secret) not in str(sk)
    with pytest.raises(InvalidKeyError):
        AggregatorSecretKey.from_secrets(small_group, 7, 7)
    with pytest.raises(InvalidKeyError):
        AggregatorSecretKey.from_secrets(small_group, 0, 7)


def test_the_public_key_is_proven_and_verifies(small_group: GroupParams) -> None:
    sk = AggregatorSecretKey.generate(small_group)
    pub = sk.public(federation=FED, verify_key=VK)
    assert pub.beta == small_group.power(sk.alpha) and pub.delivery == small_group.power(sk.delivery_secret)
    assert pub.beta_square == pub.beta**2 % small_group.n
    got = AggregatorPublicKey.verified(
        small_group, pub.beta, pub.delivery, pub.beta_proof, pub.delivery_proof, federation=FED, verify_key=VK
    )
    assert got == pub


def _ctx() -> bytes:
    return aggregator_key_context(FED, VK)


def _verify(group: GroupParams, pub: AggregatorPublicKey, **changes: object) -> AggregatorPublicKey:
    args = {
        "beta": pub.beta,
        "delivery": pub.delivery,
        "beta_proof": pub.beta_proof,
        "delivery_proof": pub.delivery_proof,
        "federation": FED,
        "verify_key": VK,
        **changes,
    }
    return AggregatorPublicKey.verified(group, **args)  # type: ignore[arg-type]


def test_verified_refuses_every_substitution(small_group: GroupParams) -> None:
    n = small_group.n
    sk = AggregatorSecretKey.generate(small_group)
    pub = sk.public(federation=FED, verify_key=VK)
    refusals = [
        {"beta_proof": pub.delivery_proof, "delivery_proof": pub.beta_proof},  # swapped proofs
        {"beta": pub.delivery, "delivery": pub.beta},  # swapped keys
        {"federation": "plant-8"},  # proofs made for another federation ...
        {"verify_key": b"\x02" * 32},  # ... or another aggregator identity
        {"beta": small_group.power(sk.alpha + 1)},
        {"beta": n - 1, "beta_proof": prove_dlog(small_group, 0, n - 1, frame(b"beta", _ctx()))},
        {"delivery_proof": pub.beta_proof},  # only the delivery key's proof is wrong
        {"delivery": small_group.power(sk.delivery_secret + 1)},
        {"delivery": n - 1, "delivery_proof": prove_dlog(small_group, 0, n - 1, frame(b"delivery", _ctx()))},
    ]
    for changes in refusals:
        with pytest.raises(InvalidKeyError):
            _verify(small_group, pub, **changes)


def test_beta_equal_to_the_delivery_key_is_refused(small_group: GroupParams) -> None:
    """Even with valid proofs for both: one key may not serve both purposes (nor its sign flip)."""
    n = small_group.n
    alpha = small_group.random_exponent()
    beta = small_group.power(alpha)
    for delivery in (beta, n - beta):
        beta_proof = prove_dlog(small_group, alpha, beta, frame(b"beta", _ctx()))
        delivery_proof = prove_dlog(small_group, alpha, delivery, frame(b"delivery", _ctx()))
        with pytest.raises(InvalidKeyError, match="coincide"):
            AggregatorPublicKey.verified(
                small_group, beta, delivery, beta_proof, delivery_proof, federation=FED, verify_key=VK
            )


# -- key files -------------------------------------------------------------------------------------


def test_secret_files_are_0600_and_atomic(tmp_path: Path, small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    path = write_json_atomic(tmp_path / "keys" / "client.json", kp.to_secret_dict(), secret=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ClientKeyPair.from_secret_dict(read_secret_json(path), small_group) == kp
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]  # no temp files left
    public = write_json_atomic(tmp_path / "pub.json", kp.group.to_dict(), secret=False)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert read_json(public)["n"] == format(small_group.n, "x")


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
