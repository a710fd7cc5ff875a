"""Integer Schnorr and Chaum-Pedersen proofs in QR_N: completeness, every refusal, batch culprits."""

from __future__ import annotations

import dataclasses
import hashlib

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

import fedcast.shared.crypto.proofs as proofs
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams, frame
from fedcast.shared.crypto.proofs import (
    CHALLENGE_BITS,
    NONCE_BITS,
    RESPONSE_BITS,
    STATISTICAL_BITS,
    DlogProof,
    DlogStatement,
    EqualityProof,
    dlog_failures,
    prove_dlog,
    prove_equality,
    verify_dlog,
    verify_equality,
)
from fedcast.shared.errors import InvalidProofError

from .helpers import SAFE_P, SAFE_Q, known_group

CTX = frame(b"test", b"attempt 1", b"member c0")


def flipped_commitment_proof(group: GroupParams, w: int, x: int, context: bytes) -> DlogProof:
    """A prover that sends -t instead of t = G^k (and hashes what it sends)."""
    n = group.n
    k = proofs._nonce()
    t = n - gmpy2.powmod(group.g * group.g % n, k, n)
    c = proofs._challenge(group, proofs._TAG_DLOG, (x, t), context)
    return DlogProof(int(t), int(k + c * w))


@dataclasses.dataclass(frozen=True)
class Honest:
    """One honest statement, and the same key sent with its sign flipped (proven as sent)."""

    item: DlogStatement
    flipped: DlogStatement


def honest(group: GroupParams, i: int) -> Honest:
    w = group.random_exponent()
    x = group.power(w)
    context = frame(b"test", b"member %d" % i)
    minus = group.n - x
    return Honest(
        DlogStatement(x, prove_dlog(group, w, x, context), context),
        DlogStatement(minus, flipped_commitment_proof(group, w, minus, context), context),
    )


@pytest.fixture(scope="module")
def pool(small_group: GroupParams) -> list[Honest]:
    return [honest(small_group, i) for i in range(12)]


# -- knowledge of a discrete log -------------------------------------------------------------------


def test_honest_dlog_proofs_verify(small_group: GroupParams) -> None:
    for w in (1, 2, small_group.random_exponent(), 2**256 - 1):
        x = small_group.power(w)
        proof = prove_dlog(small_group, w, x, CTX)
        verify_dlog(small_group, x, proof, CTX)
        assert 0 <= proof.response < 2**RESPONSE_BITS


def test_sign_flips_of_received_values_are_accepted(small_group: GroupParams) -> None:
    """By design: only squares are used, so a sender may send -X or -t (and hashes what it sends)."""
    n = small_group.n
    w = small_group.random_exponent()
    x = small_group.power(w)
    verify_dlog(small_group, n - x, prove_dlog(small_group, w, n - x, CTX), CTX)
    verify_dlog(small_group, x, flipped_commitment_proof(small_group, w, x, CTX), CTX)
    verify_dlog(small_group, n - x, flipped_commitment_proof(small_group, w, n - x, CTX), CTX)
    # A flip *after* proving changes the hashed values: the proof is bound to what was sent.
    proof = prove_dlog(small_group, w, x, CTX)
    with pytest.raises(InvalidProofError):
        verify_dlog(small_group, n - x, proof, CTX)
    with pytest.raises(InvalidProofError):
        verify_dlog(small_group, x, DlogProof(int(n - proof.commitment), proof.response), CTX)


def test_widths_follow_from_the_challenge_width(small_group: GroupParams) -> None:
    """Nonces cover c * w plus the statistical slack; every honest response fits the bound."""
    assert NONCE_BITS == EXPONENT_BITS + CHALLENGE_BITS + STATISTICAL_BITS
    assert RESPONSE_BITS == NONCE_BITS + 1
    assert (2**NONCE_BITS - 1) + (2**CHALLENGE_BITS - 1) * (2**EXPONENT_BITS - 1) < 2**RESPONSE_BITS
    # the challenge is the first CHALLENGE_BITS / 8 bytes of the hash, using its whole width
    challenges = []
    for i in range(16):
        x = small_group.power(small_group.random_exponent())
        c = proofs._challenge(small_group, proofs._TAG_DLOG, (x, 5), CTX + bytes([i]))
        width = small_group.element_bytes
        digest = hashlib.sha256(
            frame(
                proofs._TAG_DLOG,
                *(int(v).to_bytes(width, "big") for v in (small_group.n, x, 5)),
                CTX + bytes([i]),
            )
        ).digest()
        assert c == int.from_bytes(digest[: CHALLENGE_BITS // 8], "big")
        challenges.append(c)
    assert max(challenges).bit_length() > CHALLENGE_BITS - 8  # fails with probability 2^-128


DLOG_TAMPERS = {
    "context": lambda g, x, t, z, ctx: (x, t, z, ctx + b"!"),
    "public": lambda g, x, t, z, ctx: (x * g.g % g.n, t, z, ctx),
    "t": lambda g, x, t, z, ctx: (x, t * g.g % g.n, z, ctx),
    "t_zero": lambda g, x, t, z, ctx: (x, 0, z, ctx),
    "z+1": lambda g, x, t, z, ctx: (x, t, z + 1, ctx),
    "z-1": lambda g, x, t, z, ctx: (x, t, z - 1, ctx),
    "z_too_wide": lambda g, x, t, z, ctx: (x, t, z + 2**RESPONSE_BITS, ctx),
    "z_negative": lambda g, x, t, z, ctx: (x, t, -z, ctx),
    "z_not_int": lambda g, x, t, z, ctx: (x, t, str(z), ctx),
    "z_bool": lambda g, x, t, z, ctx: (x, t, True, ctx),
}


@pytest.mark.parametrize("tamper", DLOG_TAMPERS)
def test_dlog_refusals(small_group: GroupParams, tamper: str) -> None:
    w = small_group.random_exponent()
    x = small_group.power(w)
    proof = prove_dlog(small_group, w, x, CTX)
    verify_dlog(small_group, x, proof, CTX)
    public, t, z, context = DLOG_TAMPERS[tamper](small_group, x, proof.commitment, proof.response, CTX)
    with pytest.raises(InvalidProofError):
        verify_dlog(small_group, public, DlogProof(t, z), context)


def test_a_response_out_of_range_is_refused_even_when_the_equation_holds() -> None:
    """With the group order known, z + m * ord(G) satisfies the equation; only the bound refuses it."""
    group = known_group()
    n, order = group.n, ((SAFE_P - 1) // 2) * ((SAFE_Q - 1) // 2)  # |QR_N| = p'q'
    w = 123456789
    x = group.power(w)
    proof = prove_dlog(group, w, x, CTX)
    wide = proof.response + order * (2**RESPONSE_BITS // order + 1)
    g2 = group.g * group.g % n
    assert gmpy2.powmod(g2, wide, n) == gmpy2.powmod(g2, proof.response, n)
    for z in (wide, proof.response - order * (proof.response // order + 1)):  # too wide, negative
        with pytest.raises(InvalidProofError, match="outside"):
            verify_dlog(group, x, DlogProof(proof.commitment, z), CTX)
        assert set(dlog_failures(group, [DlogStatement(x, DlogProof(proof.commitment, z), CTX)] * 2)) == {
            0,
            1,
        }


def test_a_proof_for_minus_one_is_refused_by_the_element_rule(small_group: GroupParams) -> None:
    """X = -1 satisfies the equation with w = 0 ((-1)^2 = G^0): only the element rule stops it."""
    n = small_group.n
    proof = prove_dlog(small_group, 0, n - 1, CTX)
    c = proofs._challenge(small_group, proofs._TAG_DLOG, (n - 1, proof.commitment), CTX)
    lhs = gmpy2.powmod(small_group.g**2 % n, proof.response, n)
    rhs = proof.commitment * gmpy2.powmod(n - 1, 2 * c, n) % n
    assert lhs**2 % n == rhs**2 % n  # the verification equation holds
    with pytest.raises(InvalidProofError, match="squares to 1"):
        verify_dlog(small_group, n - 1, proof, CTX)


def test_secrets_out_of_range_cannot_be_proven(small_group: GroupParams) -> None:
    for bad in (-1, 2**256):
        with pytest.raises(InvalidProofError):
            prove_dlog(small_group, bad, small_group.power(5), CTX)


def test_a_cancelling_first_component_cannot_be_proven(small_group: GroupParams) -> None:
    """Crypto note 5: a colluder's A_c = A_h^-1 g^t; it knows t, not log A_c, so its proof fails."""
    n = small_group.n
    r2 = small_group.random_exponent()
    a_h = small_group.power(r2)
    t = small_group.random_exponent()
    a_c = gmpy2.invert(a_h, n) * small_group.power(t) % n
    assert a_h * a_c % n == small_group.power(t)  # the product no longer depends on A_h
    for guess in (t, 0, 1):
        with pytest.raises(InvalidProofError):
            verify_dlog(small_group, a_c, prove_dlog(small_group, guess, a_c, CTX), CTX)


# -- batch verification ----------------------------------------------------------------------------

HONEST = ("ok", "flip")
KINDS = (*HONEST, "z", "t", "t_out", "context", "public", "range", "minus_one", "not_int")


def corrupt(group: GroupParams, honest: Honest, kind: str, other: Honest) -> DlogStatement:
    n, item = group.n, honest.item
    p = item.proof
    match kind:
        case "ok":
            return item
        case "flip":
            return honest.flipped
        case "z":
            return dataclasses.replace(item, proof=DlogProof(p.commitment, p.response + 1))
        case "t":
            return dataclasses.replace(item, proof=DlogProof(int(p.commitment * group.g % n), p.response))
        case "t_out":  # a commitment the element rule refuses
            return dataclasses.replace(item, proof=DlogProof(int(n), p.response))
        case "context":
            return dataclasses.replace(item, context=item.context + b"x")
        case "public":
            return dataclasses.replace(item, public=other.item.public)
        case "range":
            return dataclasses.replace(item, proof=DlogProof(p.commitment, p.response + 2**RESPONSE_BITS))
        case "minus_one":
            return dataclasses.replace(item, public=n - 1)
        case _:
            return dataclasses.replace(item, public="not a number")


def one_by_one(group: GroupParams, items: list[DlogStatement]) -> set[int]:
    failed = set()
    for i, item in enumerate(items):
        try:
            verify_dlog(group, item.public, item.proof, item.context)
        except InvalidProofError:
            failed.add(i)
    return failed


@given(data=st.data())
def test_dlog_failures_names_exactly_the_bad_proofs(
    small_group: GroupParams, pool: list[Honest], data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, len(pool)), label="count")
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=count, max_size=count), label="kinds")
    items = [corrupt(small_group, pool[i], k, pool[(i + 1) % len(pool)]) for i, k in enumerate(kinds)]
    expected = {i for i, k in enumerate(kinds) if k not in HONEST}
    assert set(dlog_failures(small_group, items)) == expected == one_by_one(small_group, items)


@given(data=st.data())
def test_screened_statements_get_the_same_verdicts(
    small_group: GroupParams, pool: list[Honest], data: st.DataObject
) -> None:
    """``publics_screened`` (the caller put every X through the element rule) skips only that:
    commitments, squares of 1, ranges and the equations are still checked."""
    kinds = [k for k in KINDS if k != "not_int"]  # an X the caller's screening refuses
    count = data.draw(st.integers(1, len(pool)), label="count")
    drawn = data.draw(st.lists(st.sampled_from(kinds), min_size=count, max_size=count), label="kinds")
    items = [corrupt(small_group, pool[i], k, pool[(i + 1) % len(pool)]) for i, k in enumerate(drawn)]
    _, refused = small_group.screen_elements([item.public for item in items], str)
    assert not refused
    expected = {i for i, k in enumerate(drawn) if k not in HONEST}
    assert set(dlog_failures(small_group, items, publics_screened=True)) == expected
    assert set(dlog_failures(small_group, items)) == expected


@given(data=st.data())
def test_bad_proofs_are_found_at_every_position(
    small_group: GroupParams, pool: list[Honest], data: st.DataObject
) -> None:
    count = data.draw(st.integers(2, len(pool)), label="count")
    bad = data.draw(st.sets(st.integers(0, count - 1), min_size=1), label="bad")
    items = [corrupt(small_group, pool[i], "z" if i in bad else "ok", pool[0]) for i in range(count)]
    assert set(dlog_failures(small_group, items)) == bad


def test_all_honest_batches_pass(small_group: GroupParams, pool: list[Honest]) -> None:
    assert dlog_failures(small_group, []) == {}
    for count in (1, 2, len(pool)):
        assert dlog_failures(small_group, [h.item for h in pool[:count]]) == {}
        assert dlog_failures(small_group, [h.flipped for h in pool[:count]]) == {}


def test_the_batch_exponents_are_what_catches_cancelling_errors(
    small_group: GroupParams, pool: list[Honest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """z_0 + 1 and z_1 - 1 cancel in an unweighted product; random weights expose both."""
    second = pool[1].item
    items = [
        corrupt(small_group, pool[0], "z", pool[0]),  # z_0 + 1
        dataclasses.replace(second, proof=DlogProof(second.proof.commitment, second.proof.response - 1)),
    ]
    assert set(dlog_failures(small_group, items)) == {0, 1}
    monkeypatch.setattr(proofs, "batch_exponents", lambda count: [1] * count)
    assert dlog_failures(small_group, items) == {}  # the weakness random weights remove


# -- equality of discrete logs (the response proofs) ------------------------------------------------


@pytest.fixture(scope="module")
def share(small_group: GroupParams) -> tuple[mpz, mpz, mpz, mpz, EqualityProof]:
    n = small_group.n
    sk = small_group.random_exponent()
    pk = small_group.power(sk)
    r = small_group.power(small_group.random_exponent())
    h = r * r % n
    t = gmpy2.powmod(h, sk, n)
    return sk, pk, h, t, prove_equality(small_group, sk, pk, h, t, CTX)


def test_honest_equality_proofs_verify_and_sign_flips_are_accepted(
    small_group: GroupParams, share: tuple[mpz, mpz, mpz, mpz, EqualityProof]
) -> None:
    n = small_group.n
    sk, pk, h, t, proof = share
    verify_equality(small_group, pk, h, t, proof, CTX)
    flipped = prove_equality(small_group, sk, n - pk, h, n - t, CTX)
    verify_equality(small_group, n - pk, h, n - t, flipped, CTX)


@pytest.mark.parametrize("tamper", ["context", "z", "t1", "t2", "public", "z_range", "share_minus_one"])
def test_equality_refusals(
    small_group: GroupParams, share: tuple[mpz, mpz, mpz, mpz, EqualityProof], tamper: str
) -> None:
    n = small_group.n
    _, pk, h, t, p = share
    args = {"public": pk, "value": t, "context": CTX}
    proof = p
    match tamper:
        case "context":
            args["context"] = CTX + b"!"
        case "z":
            proof = dataclasses.replace(p, response=p.response + 1)
        case "t1":
            proof = dataclasses.replace(p, commitment_g=int(p.commitment_g * small_group.g % n))
        case "t2":
            proof = dataclasses.replace(p, commitment_h=int(p.commitment_h * h % n))
        case "public":
            args["public"] = small_group.power(5)
        case "z_range":
            proof = dataclasses.replace(p, response=p.response + 2**RESPONSE_BITS)
        case "share_minus_one":
            args["value"] = n - 1
    with pytest.raises(InvalidProofError):
        verify_equality(small_group, args["public"], h, args["value"], proof, args["context"])  # type: ignore[arg-type]


def test_a_share_with_another_exponent_cannot_be_proven(
    small_group: GroupParams, share: tuple[mpz, mpz, mpz, mpz, EqualityProof]
) -> None:
    """T' = H^(sk + 1) (or H^x for the sender's other key x) fails against the registered pk."""
    n = small_group.n
    sk, pk, h, _, _ = share
    for exponent in (sk + 1, small_group.random_exponent()):
        wrong = gmpy2.powmod(h, exponent, n)
        for claimed in (sk, exponent):
            proof = prove_equality(small_group, claimed, pk, h, wrong, CTX)
            with pytest.raises(InvalidProofError):
                verify_equality(small_group, pk, h, wrong, proof, CTX)
