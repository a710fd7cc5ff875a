"""The one exception tree of fedcast.

Every error that the library raises on purpose derives from :class:`FedcastError`
and carries a short, stable ``reason`` code. Services count rejected input in a
metric labelled by that code (bounded cardinality: one label value per class),
so the codes are part of the operator-facing interface and must not change
casually.

Lower-level errors (``ValueError`` from ``int.from_bytes``, ``InvalidTag`` from
``cryptography``, ``OSError`` from file I/O, ...) are translated at the module
boundary with ``raise ... from exc``; callers never need to catch them.

    FedcastError
    ├── ConfigurationError
    ├── CryptoError
    │   ├── InvalidParametersError
    │   │   └── InsecureParametersError
    │   ├── InvalidGroupElementError
    │   ├── InvalidKeyError
    │   ├── InvalidProofError
    │   ├── KeyStorageError
    │   │   └── LegacyStateError
    │   ├── CiphertextShapeError
    │   ├── OnlineSetError
    │   │   ├── OnlineSetTooSmallError
    │   │   ├── NotAMemberError
    │   │   └── AggregateKeyMismatchError
    │   ├── ChallengeRejectedError
    │   │   └── ModelAlreadyAnsweredError
    │   ├── ProtocolOrderError
    │   ├── DecryptionError
    │   └── DeliveryError
    ├── EncodingError
    │   ├── SlotOverflowError
    │   └── PackingError
    ├── DataError
    ├── ExportError
    ├── TrainingDivergedError
    ├── WireError
    │   ├── MalformedMessageError
    │   ├── UnsupportedVersionError
    │   ├── OversizeMessageError
    │   ├── SignatureError
    │   ├── UnknownSenderError
    │   └── StaleMessageError
    ├── RegistryError
    │   ├── EnrollmentRefusedError
    │   └── NotAuthorizedError
    ├── TransportError
    │   └── RequestTimeoutError
    └── InternalError
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AggregateKeyMismatchError",
    "ChallengeRejectedError",
    "CiphertextShapeError",
    "ConfigurationError",
    "CryptoError",
    "DataError",
    "DecryptionError",
    "DeliveryError",
    "EncodingError",
    "EnrollmentRefusedError",
    "ExportError",
    "FedcastError",
    "InsecureParametersError",
    "InternalError",
    "InvalidGroupElementError",
    "InvalidKeyError",
    "InvalidParametersError",
    "InvalidProofError",
    "KeyStorageError",
    "LegacyStateError",
    "MalformedMessageError",
    "ModelAlreadyAnsweredError",
    "NotAMemberError",
    "NotAuthorizedError",
    "OnlineSetError",
    "OnlineSetTooSmallError",
    "OversizeMessageError",
    "PackingError",
    "ProtocolOrderError",
    "RegistryError",
    "RequestTimeoutError",
    "SignatureError",
    "SlotOverflowError",
    "StaleMessageError",
    "TrainingDivergedError",
    "TransportError",
    "UnknownSenderError",
    "UnsupportedVersionError",
    "WireError",
]


class FedcastError(Exception):
    """Base class of every error fedcast raises on purpose."""

    reason: ClassVar[str] = "fedcast_error"


class ConfigurationError(FedcastError, ValueError):
    """A configuration value is out of range or inconsistent with another."""

    reason = "invalid_configuration"


class CryptoError(FedcastError):
    """Something in the secure-aggregation scheme was rejected."""

    reason = "crypto_error"


class InvalidParametersError(CryptoError):
    """The modulus N fails validation (prime, even, a perfect power, a small factor, ...) or is malformed."""

    reason = "invalid_parameters"


class InsecureParametersError(InvalidParametersError):
    """Group parameters are well formed but smaller than the configured minimum."""

    reason = "insecure_parameters"


class InvalidGroupElementError(CryptoError):
    """A received value fails the element rule: 1 < x < N, gcd(x, N) = 1, Jacobi +1, x^2 != 1 mod N."""

    reason = "invalid_group_element"


class InvalidKeyError(CryptoError):
    """Key material is malformed, out of range, or belongs to another group."""

    reason = "invalid_key"


class InvalidProofError(CryptoError):
    """A zero-knowledge proof (of a key, a first component or a decryption share) does not verify."""

    reason = "invalid_proof"


class KeyStorageError(CryptoError):
    """A key file could not be read or written, or has unsafe permissions."""

    reason = "key_storage"


class LegacyStateError(KeyStorageError):
    """State written by a protocol-version-1 service (prime-modulus group): refused, never converted."""

    reason = "legacy_state"


class CiphertextShapeError(CryptoError):
    """A ciphertext has the wrong number of components or a component of the wrong size."""

    reason = "ciphertext_shape"


class OnlineSetError(CryptoError):
    """The online set S offered to a client is not one it may encrypt for."""

    reason = "online_set"


class OnlineSetTooSmallError(OnlineSetError):
    """|S| is below max(2, configured minimum): the aggregate would reveal one client's input."""

    reason = "online_set_too_small"


class NotAMemberError(OnlineSetError):
    """The client (or an uploader) is not a member of the online set."""

    reason = "not_a_member"


class AggregateKeyMismatchError(OnlineSetError):
    """pk_S is not the product of the listed members' registered public keys."""

    reason = "aggregate_key_mismatch"


class ChallengeRejectedError(CryptoError):
    """A challenge R failed the client's checks (crypto note section 5), or was already answered."""

    reason = "challenge_rejected"


class ModelAlreadyAnsweredError(ChallengeRejectedError):
    """The client already answered a challenge for this model (crypto note 0.3): no second answer/upload."""

    reason = "model_already_answered"


class ProtocolOrderError(CryptoError):
    """An operation was called in a state that does not allow it (duplicate upload, early decrypt)."""

    reason = "protocol_order"


class DecryptionError(CryptoError):
    """The aggregate did not decrypt to a well-formed plaintext (wrong key, tampering, bad share)."""

    reason = "decryption_failed"


class DeliveryError(CryptoError):
    """A model-delivery envelope failed authentication or is malformed."""

    reason = "delivery_failed"


class EncodingError(FedcastError):
    """Fixed-point encoding or packing was given values it cannot represent."""

    reason = "encoding_error"


class SlotOverflowError(EncodingError):
    """A slot would (or did) exceed its width: the sum could carry into the next slot."""

    reason = "slot_overflow"


class PackingError(EncodingError):
    """Packed data has the wrong length or layout."""

    reason = "packing_error"


class DataError(FedcastError):
    """An input data file or data set is malformed."""

    reason = "data_error"


class ExportError(FedcastError):
    """The model cannot be exported (no checkpoint, a damaged one, a task mismatch, an unwritable path)."""

    reason = "export_refused"


class TrainingDivergedError(FedcastError):
    """Training produced a non-finite or exploding loss (step too large, or clipped uploads)."""

    reason = "training_diverged"


class WireError(FedcastError):
    """A message from the broker was rejected before it reached the protocol."""

    reason = "wire_error"


class MalformedMessageError(WireError):
    """Not a well-formed fedcast message: bad msgpack, wrong field types, counts or widths."""

    reason = "malformed"


class UnsupportedVersionError(WireError):
    """The message's protocol version is not one this build speaks."""

    reason = "unsupported_version"


class OversizeMessageError(WireError):
    """The message exceeds the configured maximum size."""

    reason = "oversize"


class SignatureError(WireError):
    """The Ed25519 signature does not verify under the claimed sender's registered key."""

    reason = "bad_signature"


class UnknownSenderError(WireError):
    """The sender is not registered (or revoked) at the key service."""

    reason = "unknown_sender"


class StaleMessageError(WireError):
    """A replay or a late message: its round or attempt is not the current one, or it repeats."""

    reason = "stale"


class RegistryError(FedcastError):
    """The key service refused a registry operation."""

    reason = "registry_error"


class EnrollmentRefusedError(RegistryError):
    """Unknown device, wrong enrollment token, or a token already bound to other keys."""

    reason = "enrollment_refused"


class NotAuthorizedError(RegistryError):
    """An administrative request without the right token."""

    reason = "not_authorized"


class TransportError(FedcastError):
    """The broker connection failed in a way the transport could not recover from."""

    reason = "transport_error"


class RequestTimeoutError(TransportError):
    """An RPC got no reply in time."""

    reason = "request_timeout"


class InternalError(FedcastError):
    """A bug or an unexpected failure inside a service (reported to peers without details)."""

    reason = "internal_error"
