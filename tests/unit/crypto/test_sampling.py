"""Sampled first-component proof checks: how many proofs a client checks, and which.

A client checks the element rule on every A_j, equal squares and R = prod A_j always, and the
proofs of knowledge of r2 of a keyed, deterministic sample of k of the other |S| - 1 members
(docs/PROTOCOL.md section 5.3, docs/SECURITY.md section 6).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

import gmpy2
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import (
    SAMPLING_SECURITY_BITS,
    ClientAttempt,
    ElGamalClient,
    OnlineSet,
    ProofSampler,
    SignedFirst,
    check_challenge,
    proof_sample_size,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.errors import ChallengeRejectedError

from .helpers import Federation, context_for

LN2 = math.log(2)


# -- proof_sample_size -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "expected"),
    [(1, 0), (2, 1), (3, 2), (20, 19), (89, 88), (90, 89), (91, 89), (100, 89), (610, 89), (1000, 89)],
)
def test_sample_size_with_the_default_minimum(members: int, expected: int) -> None:
    """min_online 3: h = |S| - 1 = the others, so k = min(|S| - 1, ceil(128 ln 2)) = min(|S| - 1, 89)."""
    assert SAMPLING_SECURITY_BITS == 128 and math.ceil(128 * LN2) == 89
    assert proof_sample_size(members, 3) == expected


@pytest.mark.parametrize(
    ("members", "min_online", "expected"),
    [
        (100, 2, 88),  # no colluder allowed: h = |S|
        (610, 2, 89),
        (100, 4, 90),  # ceil(88.72 * 99 / 98)
        (100, 10, 96),  # ceil(88.72 * 99 / 92)
        (610, 4, 89),  # ceil(88.72 * 609 / 608)
        (610, 10, 90),  # ceil(88.72 * 609 / 602)
        (610, 300, 174),  # ceil(88.72 * 609 / 312)
        (1000, 500, 177),  # ceil(88.72 * 999 / 502)
        (100, 100, 99),  # h = 2: more than all, so all
        (610, 609, 609),
        (3, 4, 2),  # h = 1: every proof
        (20, 20, 19),
    ],
)
def test_sample_size_with_larger_minimums(members: int, min_online: int, expected: int) -> None:
    assert proof_sample_size(members, min_online) == expected


def _escape_bound_bits(members: int, min_online: int, k: int) -> float:
    """-log2 of exp(-k h / (|S|-1)): the bound on a bad proof escaping every honest sample."""
    h = members - max(0, min_online - 2)
    return k * h / (members - 1) / LN2


@pytest.mark.parametrize("min_online", [2, 3, 4, 10, 50])
def test_sample_size_is_the_smallest_that_reaches_2_128(min_online: int) -> None:
    for members in range(max(3, min_online), 1500, 7):
        others = members - 1
        k = proof_sample_size(members, min_online)
        assert 0 < k <= others
        if k < others:  # a real sample: the bound holds, and one proof fewer would miss it
            h = members - (min_online - 2)
            assert h * math.log1p(-k / others) / LN2 <= -128  # (1 - k/(|S|-1))^h <= 2^-128
            assert _escape_bound_bits(members, min_online, k) >= 128
            assert _escape_bound_bits(members, min_online, k - 1) < 128


def test_sample_size_is_monotonic() -> None:
    for members in (3, 20, 100, 610, 1000):
        # more colluders allowed (a larger minimum): never fewer proofs checked
        by_minimum = [proof_sample_size(members, m) for m in range(2, members + 1)]
        assert by_minimum == sorted(by_minimum)
        assert by_minimum[-1] == members - 1
    for min_online in (2, 3):
        # no colluder or one: the sample never shrinks as S grows, and stays below ceil(128 ln 2)
        sizes = [proof_sample_size(s, min_online) for s in range(1, 3000)]
        assert sizes == sorted(sizes) and sizes[-1] == 89
    for min_online in (4, 10, 50):
        # more colluders: every proof while S is small, then fewer as S grows (the colluders'
        # share of S shrinks), down towards ceil(128 ln 2) = 89 from above
        sizes = [proof_sample_size(s, min_online) for s in range(min_online, 5000)]
        peak = sizes.index(max(sizes))
        assert sizes[: peak + 1] == list(range(min_online - 1, min_online + peak))
        assert sizes[peak:] == sorted(sizes[peak:], reverse=True)
        assert 89 <= sizes[-1] <= 90


# -- ProofSampler ------------------------------------------------------------------------------------


def _frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _attempt(group: GroupParams, members: int, who: str = "m000", attempt: int = 0) -> ClientAttempt:
    keys = {f"m{i:03d}": ClientKeyPair.generate(group).public for i in range(members)}
    online = OnlineSet.from_registry(group, keys)
    return ClientAttempt(who, online, context_for(online.members, attempt=attempt), mpz(5), 3)


@pytest.fixture(scope="module")
def big(small_group: GroupParams) -> ClientAttempt:
    """|S| = 100 with min_online 3: a client checks 89 of its 99 others."""
    return _attempt(small_group, 100)


def test_the_sample_is_the_documented_keyed_ranking(small_group: GroupParams, big: ClientAttempt) -> None:
    keypair = ClientKeyPair.generate(small_group)
    sampler = ProofSampler.for_client(keypair)
    r = int(small_group.power(12345))
    chosen = sampler.choose(big, r, 3)
    key = hashlib.sha256(
        _frame(b"fedcast/v2/proof-sample-key", int(keypair.secret).to_bytes(32, "big"))
    ).digest()
    prefix = big.context.digest + r.to_bytes(small_group.element_bytes, "big")
    others = [m for m in big.online.members if m != big.client_id]
    ranked = sorted(others, key=lambda m: hmac.new(key, prefix + m.encode(), "sha256").digest())
    assert chosen == ranked[:89] and len(chosen) == proof_sample_size(100, 3)
    assert ProofSampler(key).choose(big, r, 3) == chosen


def test_the_sample_is_deterministic_for_a_challenge(small_group: GroupParams, big: ClientAttempt) -> None:
    keypair = ClientKeyPair.generate(small_group)
    sampler = ProofSampler.for_client(keypair)
    r = int(small_group.power(777))
    first = sampler.choose(big, r, 3)
    assert sampler.choose(big, r, 3) == first  # a re-sent challenge meets the same sample
    assert ProofSampler.for_client(keypair).choose(big, r, 3) == first  # after a restart too
    assert ProofSampler.for_client(keypair, check_all=False).choose(big, mpz(r), 3) == first


def test_the_sample_differs_for_another_r_attempt_or_key(
    small_group: GroupParams, big: ClientAttempt
) -> None:
    keypair = ClientKeyPair.generate(small_group)
    sampler = ProofSampler.for_client(keypair)
    r = int(small_group.power(777))
    first = set(sampler.choose(big, r, 3))
    # 89 of 99: two independent samples coincide with probability 1 / C(99, 10) < 10^-13
    assert set(sampler.choose(big, r * int(small_group.g) % int(small_group.n), 3)) != first
    other_attempt = ClientAttempt(
        big.client_id, big.online, context_for(big.online.members, attempt=1), big.first, 3
    )
    assert set(sampler.choose(other_attempt, r, 3)) != first
    assert set(ProofSampler.for_client(ClientKeyPair.generate(small_group)).choose(big, r, 3)) != first
    assert set(ProofSampler(b"\x00" * 32).choose(big, r, 3)) != first


def test_the_sample_never_includes_the_client_itself(small_group: GroupParams, big: ClientAttempt) -> None:
    sampler = ProofSampler(b"\x01" * 32)
    for who in ("m000", "m042", "m099"):
        attempt = ClientAttempt(who, big.online, big.context, big.first, 3)
        for r in (2, 3, int(small_group.g)):
            chosen = sampler.choose(attempt, r, 3)
            assert who not in chosen and len(chosen) == len(set(chosen)) == 89
            assert set(chosen) <= set(big.online.members)


def test_small_sets_and_check_all_check_every_proof(small_group: GroupParams, big: ClientAttempt) -> None:
    others = [m for m in big.online.members if m != big.client_id]
    everything = ProofSampler(b"\x02" * 32, check_all=True)
    assert everything.check_all and sorted(everything.choose(big, 2, 3)) == others
    assert sorted(everything.choose(big, 2, 100)) == others
    assert sorted(ProofSampler(b"\x02" * 32).choose(big, 2, 100)) == others  # h = 2: all of them
    small = _attempt(small_group, 90)
    assert sorted(ProofSampler(b"\x02" * 32).choose(small, 2, 3)) == sorted(
        m for m in small.online.members if m != "m000"
    )


def test_the_sampler_never_shows_its_key(small_group: GroupParams) -> None:
    keypair = ClientKeyPair.generate(small_group)
    sampler = ProofSampler.for_client(keypair)
    key = hashlib.sha256(
        _frame(b"fedcast/v2/proof-sample-key", int(keypair.secret).to_bytes(32, "big"))
    ).digest()
    assert key.hex() not in repr(sampler) and "redacted" in repr(sampler)


def test_elgamal_clients_sample_unless_told_to_check_all(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, 10)
    keypair = fed.keypairs["c0"]
    assert not fed.clients["c0"].sampler.check_all
    assert ElGamalClient(keypair, fed.public, fed.tables, check_all_proofs=True).sampler.check_all


# -- the sample in a real challenge -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hundred(small_group: GroupParams) -> Federation:
    return Federation.create(small_group, 100, 10, max_clients=128)


def test_a_bad_proof_outside_the_sample_is_answered_inside_it_refused(hundred: Federation) -> None:
    fed = hundred
    upload = fed.upload_all()
    challenge, firsts = upload.aggregation.challenge(verify=False)
    client = fed.clients["c0"]
    attempt = upload.attempts["c0"]
    assert attempt.min_online == 2  # Federation.encrypt enforces MIN_ONLINE: h = |S|, k = 88 of 99
    chosen = client.sampler.choose(attempt, int(challenge), attempt.min_online)
    assert len(chosen) == proof_sample_size(100, 2) == 88
    outside = next(m for m in fed.online.members if m != "c0" and m not in chosen)
    inside = chosen[0]

    def with_bad_proof(member: str) -> dict[str, SignedFirst]:
        first = firsts[member]
        bad = DlogProof(first.proof.commitment, first.proof.response + 1)  # A unchanged: R still holds
        return {**firsts, member: SignedFirst(first.value, bad)}

    group = fed.group
    with pytest.raises(ChallengeRejectedError, match="proofs of"):
        check_challenge(group, attempt, challenge, with_bad_proof(inside), sampler=client.sampler)
    lucky = with_bad_proof(outside)
    # checking every proof catches it; the sample does not, and the element rule, squares and R pass
    with pytest.raises(ChallengeRejectedError, match="proofs of"):
        check_challenge(group, attempt, challenge, lucky)
    with pytest.raises(ChallengeRejectedError, match="proofs of"):
        check_challenge(group, attempt, challenge, lucky, sampler=ProofSampler(b"\x03" * 32, check_all=True))
    assert not attempt.answered
    share, _ = client.respond(attempt, challenge, lucky)
    assert attempt.answered
    assert share == gmpy2.powmod(challenge * challenge % group.n, fed.keypairs["c0"].secret, group.n)


def test_the_sample_never_skips_the_element_rule_or_r(hundred: Federation) -> None:
    """Sampling covers only the proofs: an A_j outside the sample is still screened, R still checked."""
    fed = hundred
    upload = fed.upload_all(seed=1)
    challenge, firsts = upload.aggregation.challenge(verify=False)
    client, attempt = fed.clients["c0"], upload.attempts["c0"]
    chosen = client.sampler.choose(attempt, int(challenge), attempt.min_online)
    outside = next(m for m in fed.online.members if m != "c0" and m not in chosen)
    n = int(fed.group.n)
    for value in (n - 1, 0, n):  # squares to 1, zero, out of range
        forged = {**firsts, outside: SignedFirst(value, firsts[outside].proof)}
        with pytest.raises(ChallengeRejectedError):
            check_challenge(fed.group, attempt, challenge, forged, sampler=client.sampler)
    twin = {**firsts, outside: firsts[chosen[0]]}  # a copied upload outside the sample
    with pytest.raises(ChallengeRejectedError, match="equal squares"):
        check_challenge(fed.group, attempt, challenge, twin, sampler=client.sampler)
    with pytest.raises(ChallengeRejectedError, match="product"):
        check_challenge(fed.group, attempt, challenge * 4 % n, firsts, sampler=client.sampler)
    assert check_challenge(fed.group, attempt, challenge, firsts, sampler=client.sampler) == challenge**2 % n
