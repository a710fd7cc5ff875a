"""Attacks of crypto note sections 0, 1 and 5: each works with its defense bypassed and fails with it.

A round trip shows correctness, never secrecy (crypto note 6): these tests show what the
defenses are for. Assumptions, stated where users read them (docs/SECURITY.md): DCR, DDH in
QR_N with 256-bit exponents, and an honest setup of N.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import ClientTables, ElGamalClient, respond_to
from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.crypto.keys import AggregatorPublicKey, aggregator_key_context
from fedcast.shared.crypto.proofs import prove_dlog
from fedcast.shared.errors import ChallengeRejectedError, InvalidKeyError

from .helpers import FEDERATION, VERIFY_KEY, Federation


def _strict_l(y: mpz, n: mpz) -> mpz | None:
    return (y - 1) // n if y % n == 1 else None


def test_beta_minus_one_would_expose_every_upload_and_is_refused(small_group: GroupParams) -> None:
    """beta = N - 1 has order 2: B = lift(beta^2) = 1, so K_i = 1 + s N and anyone reads s, then m."""
    n, n2 = small_group.n, small_group.n2
    fed = Federation.create(small_group, 3, 10)
    proof = prove_dlog(small_group, 0, n - 1, frame(b"beta", aggregator_key_context(FEDERATION, VERIFY_KEY)))
    # Bypassing the check: a client that took beta = -1 at face value.
    evil = AggregatorPublicKey(small_group, n - 1, fed.public.delivery, proof, fed.public.delivery_proof)
    tables = ClientTables(evil, federation=FEDERATION, n_segments=fed.n_segments)
    client = ElGamalClient(fed.keypairs["c0"], evil, tables)
    secret_segment = mpz(123456789)
    ct, _ = client.encrypt(
        [secret_segment],
        fed.online,
        fed.context,
        client_id="c0",
        claimed_aggregate_key=fed.online.aggregate_key,
        min_online=2,
    )
    s = _strict_l(ct.key_segment, n)
    assert s is not None  # an eavesdropper reads s ...
    h = small_group.segment_bases(FEDERATION, 1)[0]
    unmasked = ct.segments[0] * gmpy2.invert(gmpy2.powmod(small_group.lift(h), s, n2), n2) % n2
    assert _strict_l(unmasked, n) == secret_segment  # ... and then the data
    # The defense: the element rule refuses beta = -1 before any client builds tables from it.
    with pytest.raises(InvalidKeyError):
        AggregatorPublicKey.verified(
            small_group,
            n - 1,
            fed.public.delivery,
            proof,
            fed.public.delivery_proof,
            federation=FEDERATION,
            verify_key=VERIFY_KEY,
        )


def test_a_challenge_r_equal_to_one_members_a_would_unmask_it_and_is_refused(
    small_group: GroupParams,
) -> None:
    """Crypto note 5: shares computed on R' = A_v give pkbar_S^(r2_v); B_v / T = g^(r1_v) decrypts v."""
    n, n2 = small_group.n, small_group.n2
    fed = Federation.create(small_group, 3, 10)
    victim_vector = np.full(10, 0.75)
    upload = fed.upload_all({"c0": np.zeros(10), "c1": victim_vector, "c2": np.zeros(10)})
    _, firsts = upload.aggregation.challenge()
    forged = firsts["c1"].value
    # Bypassing the check: every member answers R' with respond_to.
    shares = [
        respond_to(fed.keypairs[m], upload.attempts[m], forged * forged % n)[0] for m in fed.online.members
    ]
    victim = upload.ciphertexts["c1"]
    x = victim.second * gmpy2.invert(small_group.product(shares), n) % n
    y = victim.key_segment * fed.decryptor.key_unmask(x * x % n) % n2
    s_v = _strict_l(y, n)
    assert s_v is not None
    leaked = [
        _strict_l(e * u % n2, n)
        for e, u in zip(victim.segments, fed.decryptor.data_unmasks(s_v), strict=True)
    ]
    slots = fed.params.layout.unpack(leaked, 10, n_clients=1)
    assert np.allclose(
        fed.params.encoding.decode_sum(slots, 1), victim_vector, atol=1 / fed.params.encoding.scale
    )
    # The defense: every member refuses R' (it is not the product of the listed A_j).
    for cid, attempt in upload.attempts.items():
        with pytest.raises(ChallengeRejectedError):
            fed.clients[cid].respond(attempt, forged, firsts)
