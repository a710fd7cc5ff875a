"""The client's checks of a challenge (crypto note section 5): each forgery is refused on its own.

Every forged challenge below keeps R equal to the product of the first components it lists
(unless R itself is the forgery), so the check named in each test is the one that refuses.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import SignedFirst, check_challenge, compute_challenge
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog, verify_dlog
from fedcast.shared.errors import ChallengeRejectedError, InvalidProofError

from .helpers import Federation, Upload, context_for

Firsts = dict[str, SignedFirst]
PRODUCT = object()  # "R = the product of the listed first components"


@pytest.fixture
def round_(small_group: GroupParams) -> tuple[Federation, Upload, mpz, Firsts]:
    fed = Federation.create(small_group, 4, 10)
    upload = fed.upload_all({cid: np.full(10, 0.5) for cid in fed.online.members})
    challenge, firsts = upload.aggregation.challenge()
    return fed, upload, challenge, firsts


def proven(fed: Federation, member: str, r2: int, value: int | None = None) -> SignedFirst:
    """A first component with a valid proof of knowledge for ``member`` in this attempt."""
    a = fed.group.power(r2) if value is None else value
    return SignedFirst(int(a), prove_dlog(fed.group, r2, a, fed.context.first_context(member)))


def refused(fed: Federation, upload: Upload, firsts: Firsts, challenge: object = PRODUCT) -> None:
    """c0 refuses (R defaults to the product of what is listed) and may still answer the real one."""
    attempt = upload.attempts["c0"]
    r = (
        compute_challenge(fed.group, [f.value for f in firsts.values()])
        if challenge is PRODUCT
        else challenge
    )
    with pytest.raises(ChallengeRejectedError):
        fed.clients["c0"].respond(attempt, r, firsts)
    assert not attempt.answered


def test_the_honest_challenge_is_answered(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, challenge, firsts = round_
    assert challenge == compute_challenge(fed.group, [f.value for f in firsts.values()])
    assert check_challenge(fed.group, upload.attempts["c0"], challenge, firsts) == challenge**2 % fed.group.n
    fed.respond_all(upload)
    sums = upload.aggregation.decrypt(fed.decryptor)
    assert np.array_equal(fed.params.layout.unpack(sums, 10, n_clients=4), upload.expected)


def test_a_member_list_that_is_not_s(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, _, firsts = round_
    refused(fed, upload, {m: f for m, f in firsts.items() if m != "c3"})  # a member dropped
    refused(fed, upload, {**firsts, "c9": proven(fed, "c9", 12345)})  # a stranger added


def test_our_own_first_component_replaced(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, _, firsts = round_
    refused(fed, upload, {**firsts, "c0": proven(fed, "c0", fed.group.random_exponent())})
    own = firsts["c0"]
    refused(fed, upload, {**firsts, "c0": SignedFirst(int(fed.group.n - own.value), own.proof)})


def test_an_invalid_element(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, challenge, firsts = round_
    n = fed.group.n
    jacobi_minus = next(x for x in range(2, 100) if gmpy2.jacobi(x, n) == -1)
    minus_one = SignedFirst(int(n - 1), prove_dlog(fed.group, 0, n - 1, fed.context.first_context("c1")))
    for bad in (minus_one, SignedFirst(0, firsts["c1"].proof), SignedFirst(jacobi_minus, firsts["c1"].proof)):
        refused(fed, upload, {**firsts, "c1": bad})
    as_text = SignedFirst(str(firsts["c1"].value), firsts["c1"].proof)  # type: ignore[arg-type]
    refused(fed, upload, {**firsts, "c1": as_text}, challenge)


def test_duplicate_squares(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    """Two colluders using one r2 (each with a valid proof in its own context), or its sign flip."""
    fed, upload, _, firsts = round_
    r2 = fed.group.random_exponent()
    a = fed.group.power(r2)
    for twin in (a, fed.group.n - a):
        refused(
            fed, upload, {**firsts, "c1": proven(fed, "c1", r2), "c2": proven(fed, "c2", r2, value=int(twin))}
        )
    # A plain copy of another member's entry (its proof names that member) is refused as well.
    refused(fed, upload, {**firsts, "c2": firsts["c1"]})


def test_a_cancelling_first_component_with_a_proof_it_cannot_make(
    round_: tuple[Federation, Upload, mpz, Firsts],
) -> None:
    """Colluder c3 sends A_c = A_1^-1 g^t: R = A_0 A_2 g^t no longer depends on c1's A."""
    fed, upload, _, firsts = round_
    group, n = fed.group, fed.group.n
    t = group.random_exponent()
    a_c = gmpy2.invert(firsts["c1"].value, n) * group.power(t) % n
    context = fed.context.first_context("c3")
    forged = prove_dlog(group, t, a_c, context)  # the best c3 can do: it knows t, not log A_c
    with pytest.raises(InvalidProofError):
        verify_dlog(group, a_c, forged, context)
    cheating = {**firsts, "c3": SignedFirst(int(a_c), forged)}
    r = compute_challenge(group, [f.value for f in cheating.values()])
    assert r == firsts["c0"].value * firsts["c2"].value * group.power(t) % n
    refused(fed, upload, cheating, r)


@pytest.mark.parametrize("kind", ["tampered_z", "other_member", "other_attempt"])
def test_a_bad_proof(round_: tuple[Federation, Upload, mpz, Firsts], kind: str) -> None:
    fed, upload, _, firsts = round_
    first = firsts["c1"]
    r2 = fed.group.random_exponent()
    a = fed.group.power(r2)
    bad = {
        "tampered_z": SignedFirst(first.value, DlogProof(first.proof.commitment, first.proof.response + 1)),
        "other_member": SignedFirst(int(a), prove_dlog(fed.group, r2, a, fed.context.first_context("c2"))),
        "other_attempt": SignedFirst(
            int(a),
            prove_dlog(fed.group, r2, a, context_for(fed.online.members, attempt=1).first_context("c1")),
        ),
    }[kind]
    refused(fed, upload, {**firsts, "c1": bad})


def test_r_not_the_product(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, challenge, firsts = round_
    n = fed.group.n
    for r in (challenge * fed.group.g % n, firsts["c1"].value, n - challenge, str(challenge), True, None):
        refused(fed, upload, firsts, r)  # R = A_c1 would unmask c1 alone


def test_a_second_answer_of_the_same_attempt(round_: tuple[Federation, Upload, mpz, Firsts]) -> None:
    fed, upload, challenge, firsts = round_
    attempt = upload.attempts["c0"]
    fed.clients["c0"].respond(attempt, challenge, firsts)
    assert attempt.answered
    with pytest.raises(ChallengeRejectedError, match="already"):
        fed.clients["c0"].respond(attempt, challenge, firsts)
