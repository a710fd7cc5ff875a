"""Ed25519 signing keys: RFC 8032 known answer, verification failures, serialization, redaction."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.signing import SigningKeyPair, verify_signature
from fedcast.shared.errors import InvalidKeyError, SignatureError
from tests.unit.wire.strategies import RFC8032_SECRET, RFC8032_VERIFY, TEST_KEY

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_known_answer() -> None:
    assert TEST_KEY.verify_key == RFC8032_VERIFY
    assert TEST_KEY.sign(b"") == RFC8032_SIGNATURE
    verify_signature(RFC8032_VERIFY, RFC8032_SIGNATURE, b"")


@given(st.binary(max_size=200))
def test_sign_and_verify(data: bytes) -> None:
    key = SigningKeyPair.generate()
    signature = key.sign(data)
    assert len(key.verify_key) == 32 and len(signature) == 64
    verify_signature(key.verify_key, signature, data)
    with pytest.raises(SignatureError):
        verify_signature(TEST_KEY.verify_key, signature, data)
    with pytest.raises(SignatureError):
        verify_signature(key.verify_key, signature, data + b"\x00")


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_bit_flip_breaks_the_signature(data: bytes, draw: st.DataObject) -> None:
    signature = TEST_KEY.sign(data)
    bit = draw.draw(st.integers(0, 8 * (len(data) + 64) - 1))
    blob = bytearray(data + signature)
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignatureError):
        verify_signature(TEST_KEY.verify_key, bytes(blob[len(data) :]), bytes(blob[: len(data)]))


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        (RFC8032_VERIFY, b"\x00" * 63),
        (RFC8032_VERIFY, b"\x00" * 65),
        ("not bytes", b"\x00" * 64),
        (RFC8032_VERIFY, None),
        (b"\xff" * 32, RFC8032_SIGNATURE),  # not a curve point
    ],
)
def test_malformed_key_or_signature_is_a_signature_error(key: Any, signature: Any) -> None:
    with pytest.raises(SignatureError):
        verify_signature(key, signature, b"")


def test_secret_dict_round_trip() -> None:
    key = SigningKeyPair.generate()
    doc = key.to_secret_dict()
    assert doc["format"] == "fedcast.signing-key" and doc["version"] == 1
    assert len(doc["secret"]) == 64
    loaded = SigningKeyPair.from_secret_dict(doc)
    assert loaded == key and loaded.verify_key == key.verify_key
    assert loaded.sign(b"m") == key.sign(b"m")
    assert SigningKeyPair.from_secret_dict(TEST_KEY.to_secret_dict()).verify_key == RFC8032_VERIFY
    assert TEST_KEY.to_secret_dict()["secret"] == RFC8032_SECRET.hex()


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {},
        {"format": "fedcast.client-secret-key", "version": 1, "secret": "00" * 32},
        {"format": "fedcast.signing-key", "version": 2, "secret": "00" * 32},
        {"format": "fedcast.signing-key", "version": True, "secret": "00" * 32},
        {"format": "fedcast.signing-key", "version": 1},
        {"format": "fedcast.signing-key", "version": 1, "secret": "00" * 31},
        {"format": "fedcast.signing-key", "version": 1, "secret": "zz" * 32},
        {"format": "fedcast.signing-key", "version": 1, "secret": "00 " * 21 + "0"},
        {"format": "fedcast.signing-key", "version": 1, "secret": 5},
    ],
)
def test_malformed_secret_dict_is_an_invalid_key(doc: Any) -> None:
    with pytest.raises(InvalidKeyError):
        SigningKeyPair.from_secret_dict(doc)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_malformed_private_bytes(raw: Any) -> None:
    with pytest.raises(InvalidKeyError):
        SigningKeyPair.from_private_bytes(raw)


def test_repr_never_shows_the_private_key() -> None:
    secret_hex = RFC8032_SECRET.hex()
    for text in (repr(TEST_KEY), str(TEST_KEY), f"{TEST_KEY}", repr([TEST_KEY])):
        assert secret_hex not in text and secret_hex[:8] not in text
        assert "<redacted>" in text
        assert RFC8032_VERIFY.hex()[:16] in text
        assert RFC8032_VERIFY.hex() not in text  # only a short prefix of the verify key


def test_constructor_refuses_a_mismatched_verify_key() -> None:
    other = SigningKeyPair.generate()
    with pytest.raises(InvalidKeyError):
        SigningKeyPair(TEST_KEY._private, other.verify_key)
    with pytest.raises(InvalidKeyError):
        SigningKeyPair("not a key", TEST_KEY.verify_key)  # type: ignore[arg-type]
