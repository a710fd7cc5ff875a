"""Ed25519 message signatures: every fedcast message is signed by its sender.

Clients sign with the key they enrolled at the key service, the aggregator with
the key it registered there, the key service with its own key (clients pin its
verify key). Ed25519 (RFC 8032): deterministic, 32-byte verify keys, 64-byte
signatures, no parameters to get wrong.

Keys and signing go through ``cryptography`` (OpenSSL); verification through
libsodium (PyNaCl's ``crypto_sign_open``), about twice as fast here (56 us against
113 us per verification of a 700-byte message, idle 2-core test machine; 55 against
175 us under load), which matters because a client verifies ~90 first-component
signatures per challenge. libsodium is
the stricter of the two: beyond RFC 8032 section 5.1.7 (S < L, the group equation
without the cofactor) it refuses small-order and non-canonical verify keys and
small-order R, so every signature it accepts OpenSSL accepts too, and signatures
made by any RFC 8032 implementation with an honestly generated key verify
(``tests/unit/wire/test_signing.py``: the RFC's vectors; the two libraries agree on
honest keys' signatures, intact or altered; libsodium refuses a small-order-key forgery
that OpenSSL accepts).

Like :mod:`fedcast.shared.crypto.keys` this module is pure: the private key never
appears in ``repr``/``str`` and serializes to a plain JSON-friendly dict;
files are :mod:`fedcast.shared.keystore`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

from fedcast.shared.errors import InvalidKeyError, SignatureError

__all__ = [
    "SECRET_KEY_BYTES",
    "SIGNATURE_BYTES",
    "VERIFY_KEY_BYTES",
    "SigningKeyPair",
    "verify_signature",
]

#: Raw Ed25519 sizes (RFC 8032 section 5.1.5/5.1.6).
SECRET_KEY_BYTES = 32
VERIFY_KEY_BYTES = 32
SIGNATURE_BYTES = 64

_SECRET_FORMAT = "fedcast.signing-key"  # noqa: S105 - a format tag, not a secret
_FORMAT_VERSION = 1
_REDACTED = "<redacted>"


@dataclass(frozen=True)
class SigningKeyPair:
    """An Ed25519 key pair. Equality and hashing go by the verify key only.

    Construct with :meth:`generate`, :meth:`from_private_bytes` or
    :meth:`from_secret_dict`; the bare constructor is for those.
    """

    _private: Ed25519PrivateKey = field(repr=False, compare=False)
    verify_key: bytes  # 32 raw bytes

    def __post_init__(self) -> None:
        if not isinstance(self._private, Ed25519PrivateKey):
            raise InvalidKeyError("not an Ed25519 private key")
        if self.verify_key != self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw):
            raise InvalidKeyError("verify key does not belong to the private key")

    @classmethod
    def generate(cls) -> SigningKeyPair:
        """A fresh key pair from the OS CSPRNG."""
        return cls._from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, secret: bytes) -> SigningKeyPair:
        """Load a raw 32-byte private key (the RFC 8032 seed)."""
        if not isinstance(secret, bytes) or len(secret) != SECRET_KEY_BYTES:
            raise InvalidKeyError(f"an Ed25519 private key is {SECRET_KEY_BYTES} raw bytes")
        try:
            private = Ed25519PrivateKey.from_private_bytes(secret)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError("not a usable Ed25519 private key") from exc
        return cls._from_private(private)

    @classmethod
    def _from_private(cls, private: Ed25519PrivateKey) -> SigningKeyPair:
        return cls(private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data`` (deterministic)."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKeyPair(verify_key={self.verify_key.hex()[:16]}..., secret={_REDACTED})"

    __str__ = __repr__

    def to_secret_dict(self) -> dict[str, Any]:
        """Secret-key document: ``{"format", "version", "secret": hex of the raw 32 bytes}``."""
        raw = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {"format": _SECRET_FORMAT, "version": _FORMAT_VERSION, "secret": raw.hex()}

    @classmethod
    def from_secret_dict(cls, data: Any) -> SigningKeyPair:
        """Inverse of :meth:`to_secret_dict`; anything malformed raises InvalidKeyError."""
        if not isinstance(data, dict) or data.get("format") != _SECRET_FORMAT:
            raise InvalidKeyError(f"not a {_SECRET_FORMAT} document")
        version = data.get("version")
        if type(version) is not int or version != _FORMAT_VERSION:
            raise InvalidKeyError(f"unsupported {_SECRET_FORMAT} version")
        secret = data.get("secret")
        # bytes.fromhex tolerates whitespace; a key file should not, so check the exact form.
        if not isinstance(secret, str) or len(secret) != 2 * SECRET_KEY_BYTES:
            raise InvalidKeyError("signing key secret must be 64 hex digits")
        try:
            raw = bytes.fromhex(secret)
        except ValueError as exc:
            raise InvalidKeyError("signing key secret is not hex") from exc
        if len(raw) != SECRET_KEY_BYTES:
            raise InvalidKeyError("signing key secret must be 64 hex digits")
        return cls.from_private_bytes(raw)


def verify_signature(verify_key: bytes, signature: bytes, data: bytes) -> None:
    """Check an Ed25519 signature; raise SignatureError on any failure, malformed input included."""
    if not isinstance(verify_key, bytes) or len(verify_key) != VERIFY_KEY_BYTES:
        raise SignatureError(f"a verify key is {VERIFY_KEY_BYTES} raw bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"a signature is {SIGNATURE_BYTES} bytes")
    try:
        # libsodium's combined form (signature || message); it refuses what RFC 8032 refuses
        # and also small-order or non-canonical keys and small-order R (module docstring).
        crypto_sign_open(b"".join((signature, data)), verify_key)
    except BadSignatureError as exc:
        raise SignatureError("signature does not verify") from exc
    except (CryptoError, ValueError, TypeError) as exc:
        raise SignatureError("malformed verify key or signature") from exc
