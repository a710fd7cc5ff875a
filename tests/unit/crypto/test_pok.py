"""Schnorr proof of possession of the ElGamal key: completeness, soundness checks, binding."""

from __future__ import annotations

import gmpy2
import pytest

from shared.crypto.group import GroupParams
from shared.crypto.keys import ClientKeyPair
from shared.crypto.pok import enrollment_context, prove_possession, verify_possession
from shared.errors import InvalidGroupElementError, InvalidKeyError

CTX = enrollment_context("plant-7", "line-3", b"\x01" * 32)


def test_honest_proofs_verify(small_group: GroupParams) -> None:
    for _ in range(5):
        kp = ClientKeyPair.generate(small_group)
        verify_possession(small_group, kp.public, prove_possession(kp, CTX), CTX)


def test_proofs_are_bound_to_key_and_context(small_group: GroupParams) -> None:
    kp, other = ClientKeyPair.generate(small_group), ClientKeyPair.generate(small_group)
    proof = prove_possession(kp, CTX)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, other.public, proof, CTX)
    for ctx in (
        enrollment_context("plant-8", "line-3", b"\x01" * 32),
        enrollment_context("plant-7", "line-4", b"\x01" * 32),
        enrollment_context("plant-7", "line-3", b"\x02" * 32),
    ):
        with pytest.raises(InvalidKeyError):
            verify_possession(small_group, kp.public, proof, ctx)


def test_rogue_key_cannot_be_proven(small_group: GroupParams) -> None:
    """pk_M = g^x / pk_A: whoever knows x does not know log(pk_M), so no valid proof exists."""
    victim = ClientKeyPair.generate(small_group)
    x = small_group.random_exponent()
    rogue = small_group.power(x) * gmpy2.invert(victim.public, small_group.p) % small_group.p
    # The attacker's best try: a proof made with the key it does know (g^x) for the rogue key.
    attempt = prove_possession(ClientKeyPair.from_secret(small_group, x), CTX)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, rogue, attempt, CTX)


def test_malformed_proofs(small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    t, s = prove_possession(kp, CTX)
    with pytest.raises(InvalidGroupElementError):
        verify_possession(small_group, kp.public, (int(small_group.p) - 1, s), CTX)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, kp.public, (t, int(small_group.q) + s), CTX)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, kp.public, (t, (s + 1) % int(small_group.q)), CTX)
