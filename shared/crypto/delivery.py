"""Model delivery: the aggregator sends each member the global model under a per-client key.

key_i = HKDF-SHA256(DH) where DH = g^(2 delta sk_i) mod N: the aggregator
computes pkbar_i^delta, client i computes Dbar^sk_i, each from the *square* of
the other's public key (the element rule: a public key with its sign flipped
gives the same key). The envelope is AES-256-GCM with a random 96-bit nonce and
associated data that binds federation id, round id and client id, so an
envelope cannot be replayed into another round, another federation or to
another client. A dedicated delivery key keeps the aggregator's alpha
single-purpose.

Wire layout (docs/PROTOCOL.md section 7): ``nonce (12 bytes) || ciphertext || tag (16 bytes)``;
HKDF with no salt and info ``"fedcast/v2/model-delivery"`` over the DH value as
a fixed-width big-endian integer of E bytes; associated data
``frame("fedcast/v2/model-delivery-ad", federation, decimal round, client id)``.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import os
from typing import Any

import gmpy2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.errors import DeliveryError

__all__ = ["KEY_BYTES", "NONCE_BYTES", "delivery_key", "open_model", "seal_model"]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random, so < 2^32 envelopes per key (NIST SP 800-38D)
_HKDF_INFO = b"fedcast/v2/model-delivery"
_AD_LABEL = b"fedcast/v2/model-delivery-ad"


def delivery_key(group: GroupParams, own_secret: Any, peer_public: Any) -> bytes:
    """The 32-byte key shared by the aggregator (delta, pk_i) and client i (sk_i, D)."""
    peer_square = group.received_square(peer_public, "delivery peer public key")
    shared = gmpy2.powmod(peer_square, own_secret, group.n)
    ikm = int(shared).to_bytes(group.element_bytes, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_HKDF_INFO).derive(ikm)


def _associated_data(federation_id: str, round_id: int, client_id: str) -> bytes:
    # Length-prefixed fields: no two different triples encode to the same bytes.
    return frame(_AD_LABEL, federation_id.encode(), str(int(round_id)).encode(), client_id.encode())


def seal_model(key: bytes, model: bytes, *, federation_id: str, round_id: int, client_id: str) -> bytes:
    """nonce || AES-256-GCM(model) with the binding associated data."""
    if len(key) != KEY_BYTES:
        raise DeliveryError("delivery key must be 32 bytes")
    nonce = os.urandom(NONCE_BYTES)
    ad = _associated_data(federation_id, round_id, client_id)
    return nonce + AESGCM(key).encrypt(nonce, model, ad)


def open_model(key: bytes, envelope: bytes, *, federation_id: str, round_id: int, client_id: str) -> bytes:
    """Inverse of :func:`seal_model`; any mismatch or tampering raises DeliveryError."""
    if len(key) != KEY_BYTES:
        raise DeliveryError("delivery key must be 32 bytes")
    if len(envelope) < NONCE_BYTES + 16:
        raise DeliveryError("envelope is too short")
    ad = _associated_data(federation_id, round_id, client_id)
    try:
        return AESGCM(key).decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], ad)
    except InvalidTag as exc:
        raise DeliveryError("envelope failed authentication (wrong key, binding or tampering)") from exc
