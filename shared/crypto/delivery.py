"""Model delivery: the aggregator sends each member the global model under a per-client key.

key_i = HKDF-SHA256(DH(D, pk_i)) where DH is g^(delta * sk_i) mod p (the
aggregator holds delta, client i holds sk_i); the envelope is AES-256-GCM with
a random 96-bit nonce and associated data that binds federation id, round id
and client id, so an envelope cannot be replayed into another round, another
federation or to another client. (The paper hashes pk_i^alpha; a dedicated
delivery key keeps the segment keys alpha_j single-purpose.)

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

from shared.crypto.group import GroupParams
from shared.errors import DeliveryError

__all__ = ["KEY_BYTES", "NONCE_BYTES", "delivery_key", "open_model", "seal_model"]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random, so < 2^32 envelopes per key (NIST SP 800-38D)
_HKDF_INFO = b"fedcast/v1/model-delivery"
_AD_LABEL = b"fedcast/v1/model-delivery-ad"


def delivery_key(group: GroupParams, own_secret: Any, peer_public: Any) -> bytes:
    """The 32-byte key shared by the aggregator (delta, pk_i) and client i (sk_i, D)."""
    peer = group.check_element(peer_public, "delivery peer public key")
    shared = gmpy2.powmod(peer, own_secret, group.p)
    ikm = int(shared).to_bytes(group.element_bytes, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_HKDF_INFO).derive(ikm)


def _associated_data(federation_id: str, round_id: int, client_id: str) -> bytes:
    # Length-prefixed fields: no two different triples encode to the same bytes.
    parts = [_AD_LABEL, federation_id.encode(), str(int(round_id)).encode(), client_id.encode()]
    return b"".join(len(x).to_bytes(4, "big") + x for x in parts)


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
