"""Ed25519 signing keys: RFC 8032 known answer, verification failures, serialization, redaction."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.signing import SigningKeyPair, verify_signature
from fedcast.shared.errors import InvalidKeyError, SignatureError
from tests.unit.wire.strategies import (
    ED25519_L,
    IDENTITY_VERIFY_KEY,
    RFC8032_SECRET,
    RFC8032_VERIFY,
    TEST_KEY,
    identity_key_forgery,
)

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


# RFC 8032 section 7.1, TEST 2 and TEST 3: (secret, verify key, message, signature).
RFC8032_MORE = [
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("secret", "verify_key", "message", "signature"), RFC8032_MORE)
def test_rfc8032_more_known_answers(secret: str, verify_key: str, message: str, signature: str) -> None:
    key = SigningKeyPair.from_private_bytes(bytes.fromhex(secret))
    assert key.verify_key.hex() == verify_key
    assert key.sign(bytes.fromhex(message)).hex() == signature
    verify_signature(bytes.fromhex(verify_key), bytes.fromhex(signature), bytes.fromhex(message))


@given(st.binary(max_size=300), st.booleans(), st.data())
def test_verification_agrees_with_openssl_on_honest_keys(
    data: bytes, flip: bool, draw: st.DataObject
) -> None:
    """Signing is OpenSSL's, verification libsodium's: they agree on every honest key's signatures."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = SigningKeyPair.generate()
    signature = bytearray(key.sign(data))
    if flip:
        bit = draw.draw(st.integers(0, 511))
        signature[bit // 8] ^= 1 << (bit % 8)
    try:
        Ed25519PublicKey.from_public_bytes(key.verify_key).verify(bytes(signature), data)
        openssl = True
    except InvalidSignature:
        openssl = False
    try:
        verify_signature(key.verify_key, bytes(signature), data)
        ours = True
    except SignatureError:
        ours = False
    assert ours == openssl == (not flip)


def test_verification_takes_any_bytes_like_message() -> None:
    signature = TEST_KEY.sign(b"payload")
    verify_signature(TEST_KEY.verify_key, signature, bytearray(b"payload"))
    verify_signature(TEST_KEY.verify_key, signature, memoryview(b"payload"))


def test_a_non_canonical_s_is_refused() -> None:
    """S + L verifies the same group equation; RFC 8032 requires S < L (no malleable copies)."""
    signature = TEST_KEY.sign(b"m")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + ED25519_L).to_bytes(32, "little")
    with pytest.raises(SignatureError):
        verify_signature(TEST_KEY.verify_key, malleated, b"m")


def test_a_small_order_verify_key_signs_nothing() -> None:
    """The identity point as a verify key: without the small-order check, one (R, S) is a
    valid signature of *every* message under it (OpenSSL accepts it). libsodium refuses."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    forged = identity_key_forgery()
    for message in (b"", b"any message at all"):
        # the forgery is real: RFC 8032's equation holds (OpenSSL, as of this writing, accepts it)
        try:
            Ed25519PublicKey.from_public_bytes(IDENTITY_VERIFY_KEY).verify(forged, message)
        except Exception:
            pass
        with pytest.raises(SignatureError):
            verify_signature(IDENTITY_VERIFY_KEY, forged, message)
