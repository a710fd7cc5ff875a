"""Schnorr proof of knowledge of a client's ElGamal secret key (proof of possession).

Why: pk_S is the product of the members' registered keys. Without a proof, a
device with a valid enrollment token could register a rogue key
pk_M = g^x / pk_A (a key it cannot use, but whose product with A's key has the
known discrete log x); with S = {A, M}, g^(r1) of A would be unmasked by anyone
knowing x, and the aggregator colluding with M would decrypt A's upload alone.
Requiring a proof that the enrolling device knows sk with pk = g^sk makes every
registered key one whose owner knows its discrete log, which is what the
collusion analysis of the paper (Theorem 3) assumes.

Non-interactive (Fiat-Shamir): t = g^k, c = H(domain, p, q, g, pk, t, context)
mod q, s = k + c*sk mod q; the verifier checks g^s = t * pk^c. The context
binds the proof to the federation, the client id and its Ed25519 verify key, so
a proof cannot be replayed for another identity.
"""

from __future__ import annotations

import hashlib
from typing import Any

import gmpy2
from gmpy2 import mpz

from shared.crypto.group import GroupParams
from shared.crypto.keys import ClientKeyPair
from shared.errors import InvalidKeyError

__all__ = ["enrollment_context", "prove_possession", "verify_possession"]

_DOMAIN = b"fedcast/v1/schnorr-pok"


def enrollment_context(federation: str, client_id: str, verify_key: bytes) -> bytes:
    """What an enrollment proof is bound to (length-prefixed, so fields cannot shift)."""
    parts = [federation.encode(), client_id.encode(), bytes(verify_key)]
    return b"".join(len(x).to_bytes(4, "big") + x for x in parts)


def _challenge(group: GroupParams, public: Any, commitment: Any, context: bytes) -> mpz:
    width = group.element_bytes
    digest = hashlib.sha256(_DOMAIN)
    for value in (group.p, group.q, group.g, public, commitment):
        digest.update(int(value).to_bytes(width, "big"))
    digest.update(len(context).to_bytes(4, "big") + context)
    return mpz(int.from_bytes(digest.digest(), "big")) % group.q


def prove_possession(keypair: ClientKeyPair, context: bytes) -> tuple[int, int]:
    """(t, s): a proof that the holder of ``keypair`` knows its secret key."""
    group = keypair.group
    k = group.random_exponent()
    commitment = group.power(k)
    c = _challenge(group, keypair.public, commitment, context)
    response = (k + c * keypair.secret) % group.q
    return int(commitment), int(response)


def verify_possession(group: GroupParams, public: Any, proof: tuple[Any, Any], context: bytes) -> None:
    """Raise InvalidKeyError unless ``proof`` shows knowledge of log_g(public) under ``context``."""
    commitment = group.check_element(proof[0], "proof commitment")
    response = mpz(proof[1])
    if not 0 <= response < group.q:
        raise InvalidKeyError("proof response is outside [0, q)")
    c = _challenge(group, public, commitment, context)
    lhs = gmpy2.powmod(group.g, response, group.p)
    rhs = commitment * gmpy2.powmod(public, c, group.p) % group.p
    if lhs != rhs:
        raise InvalidKeyError("the proof of possession of the ElGamal key does not verify")
