"""Proof of possession at enrollment: completeness, binding to federation/id/key, no rogue keys."""

from __future__ import annotations

import gmpy2
import pytest

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.pok import enrollment_context, prove_possession, verify_possession
from fedcast.shared.crypto.proofs import RESPONSE_BITS, DlogProof
from fedcast.shared.errors import InvalidKeyError

VK = b"\x01" * 32
CTX = enrollment_context("plant-7", "line-3", VK)


def test_honest_proofs_verify(small_group: GroupParams) -> None:
    for _ in range(5):
        kp = ClientKeyPair.generate(small_group)
        verify_possession(small_group, kp.public, prove_possession(kp, CTX), CTX)


@pytest.mark.parametrize(
    "other",
    [
        enrollment_context("plant-8", "line-3", VK),
        enrollment_context("plant-7", "line-4", VK),
        enrollment_context("plant-7", "line-3", b"\x02" * 32),
        enrollment_context("plant-7line-3", "", VK),  # fields cannot shift into each other
    ],
)
def test_a_proof_is_bound_to_federation_id_and_verify_key(small_group: GroupParams, other: bytes) -> None:
    kp = ClientKeyPair.generate(small_group)
    proof = prove_possession(kp, CTX)
    assert other != CTX
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, kp.public, proof, other)


def test_a_proof_is_bound_to_its_key(small_group: GroupParams) -> None:
    kp, other = ClientKeyPair.generate(small_group), ClientKeyPair.generate(small_group)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, other.public, prove_possession(kp, CTX), CTX)


def test_rogue_key_cannot_be_proven(small_group: GroupParams) -> None:
    """pk_M = g^x / pk_A: whoever knows x does not know log(pk_M), so no valid proof exists."""
    n = small_group.n
    victim = ClientKeyPair.generate(small_group)
    x = small_group.random_exponent()
    rogue = small_group.power(x) * gmpy2.invert(victim.public, n) % n
    assert rogue * victim.public % n == small_group.power(x)  # the product has a known log
    attempt = prove_possession(ClientKeyPair.from_secret(small_group, x), CTX)
    with pytest.raises(InvalidKeyError):
        verify_possession(small_group, rogue, attempt, CTX)


def test_malformed_proofs_and_keys_are_refused(small_group: GroupParams) -> None:
    n = small_group.n
    kp = ClientKeyPair.generate(small_group)
    proof = prove_possession(kp, CTX)
    for bad in (
        DlogProof(int(n - 1), proof.response),
        DlogProof(0, proof.response),
        DlogProof(proof.commitment, proof.response + 2**RESPONSE_BITS),
        DlogProof(proof.commitment, proof.response + 1),
    ):
        with pytest.raises(InvalidKeyError):
            verify_possession(small_group, kp.public, bad, CTX)
    for key in (n - 1, 1, 0, n + kp.public):
        with pytest.raises(InvalidKeyError):
            verify_possession(small_group, key, proof, CTX)
