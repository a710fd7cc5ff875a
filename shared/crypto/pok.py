"""Proof of possession of a client's ElGamal key at enrollment (integer Schnorr, in QR_N).

Why: pkbar_S is the product of the members' registered keys. Without a proof,
a device with a valid enrollment token could register a rogue key
pk_M = g^x / pk_A (a key it cannot use, but whose product with A's key has the
known discrete log x); with S = {A, M}, the aggregator colluding with M would
decrypt A's upload alone. Requiring a proof that the enrolling device knows sk
with pk = g^sk makes every registered key one whose owner knows its discrete
log, which the collusion argument assumes.

The proof is :func:`fedcast.shared.crypto.proofs.prove_dlog` (responses over the
integers, bounded, verified on squares: the group order is unknown), bound to
the federation, the client id and its Ed25519 verify key so it cannot be
replayed for another identity.
"""

from __future__ import annotations

from typing import Any

from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog, verify_dlog
from fedcast.shared.errors import InvalidKeyError, InvalidProofError

__all__ = ["enrollment_context", "prove_possession", "verify_possession"]

_DOMAIN = b"fedcast/v2/enrollment"


def enrollment_context(federation: str, client_id: str, verify_key: bytes) -> bytes:
    """What an enrollment proof is bound to (length-prefixed, so fields cannot shift)."""
    return frame(_DOMAIN, federation.encode(), client_id.encode(), bytes(verify_key))


def prove_possession(keypair: ClientKeyPair, context: bytes) -> DlogProof:
    """A proof that the holder of ``keypair`` knows its secret key."""
    return prove_dlog(keypair.group, keypair.secret, keypair.public, context)


def verify_possession(group: GroupParams, public: Any, proof: DlogProof, context: bytes) -> None:
    """Raise InvalidKeyError unless ``proof`` shows knowledge of log_g(public) under ``context``."""
    try:
        verify_dlog(group, public, proof, context, "enrollment proof")
    except InvalidProofError as exc:
        raise InvalidKeyError(f"the proof of possession of the ElGamal key does not verify: {exc}") from exc
