"""GroupParams: serialization, repr, generators from N, the lift, and the received-element rule."""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams
from fedcast.shared.errors import (
    InsecureParametersError,
    InvalidGroupElementError,
    InvalidParametersError,
    LegacyStateError,
)

from .helpers import SAFE_P as P
from .helpers import SAFE_Q as Q
from .helpers import known_group


@pytest.fixture(scope="module")
def known() -> GroupParams:
    for safe in (P, Q):
        assert gmpy2.is_prime(safe) and gmpy2.is_prime((safe - 1) // 2)
    return known_group()


def is_qr(x: int) -> bool:
    """Membership in QR_N, which only the holder of P and Q can test."""
    return bool(gmpy2.legendre(x, P) == 1 and gmpy2.legendre(x, Q) == 1)


# -- serialization and repr ------------------------------------------------------------------------


def test_round_trip_and_insecure_opt_in(small_group: GroupParams, group_2048: GroupParams) -> None:
    assert GroupParams.from_dict(group_2048.to_dict()) == group_2048
    doc = small_group.to_dict()
    assert doc["insecure"] is True and int(doc["n"], 16) == small_group.n
    with pytest.raises(InsecureParametersError):
        GroupParams.from_dict(doc)
    loaded = GroupParams.from_dict(doc, allow_insecure=True)
    assert loaded == small_group and loaded.insecure and loaded.g == small_group.g


def test_a_v1_group_document_is_refused_as_legacy() -> None:
    v1 = {"p": format(gmpy2.next_prime(mpz(1) << 2047), "x"), "q": "f" * 64, "g": "4", "insecure": False}
    with pytest.raises(LegacyStateError, match="version-1"):
        GroupParams.from_dict(v1)
    with pytest.raises(LegacyStateError):
        GroupParams.from_dict(v1, allow_insecure=True)


@pytest.mark.parametrize(
    "doc",
    [
        {"format": "fedcast.group", "version": 2, "n": "zz"},
        {"format": "fedcast.group", "version": 2},
        {"format": "something.else", "version": 2, "n": "ff"},
        {"format": "fedcast.group", "version": 3, "n": "ff"},
        ["n", "ff"],
        None,
    ],
)
def test_malformed_group_documents_are_refused(doc: object) -> None:
    with pytest.raises(InvalidParametersError):
        GroupParams.from_dict(doc, allow_insecure=True)


def test_a_document_is_validated_like_a_supplied_modulus(group_2048: GroupParams) -> None:
    doc = {**group_2048.to_dict(), "n": format(gmpy2.next_prime(group_2048.n), "x")}
    with pytest.raises(InvalidParametersError, match="prime"):
        GroupParams.from_dict(doc)


def test_repr_shows_only_a_prefix_of_n(group_2048: GroupParams) -> None:
    text = repr(group_2048)
    hex_n = format(group_2048.n, "x")
    assert hex_n[:16] in text and hex_n[:17] not in text and "2048" in text
    assert str(group_2048.n) not in text


# -- generators ------------------------------------------------------------------------------------


def test_generators_are_derived_deterministically_from_n(
    small_group: GroupParams, group_1024: GroupParams
) -> None:
    again = GroupParams(small_group.n, insecure=True)
    assert again.g == small_group.g
    assert again.segment_bases("plant-7", 4) == small_group.segment_bases("plant-7", 4)
    assert group_1024.g != small_group.g
    assert group_1024.segment_bases("plant-7", 1) != small_group.segment_bases("plant-7", 1)


def test_generators_are_squares_distinct_and_per_federation(small_group: GroupParams) -> None:
    g, n = small_group.g, small_group.n
    bases = small_group.segment_bases("plant-7", 8)
    others = small_group.segment_bases("plant-8", 8)
    everything = [g, *bases, *others]
    assert len(set(everything)) == len(everything)  # g, every h_j, every federation distinct
    for x in everything:
        assert 1 < x < n and gmpy2.jacobi(x, n) == 1 and gmpy2.gcd(x, n) == 1


def test_generators_are_in_qr_n(known: GroupParams) -> None:
    """FDH squares its output: with the factors known, g and every h_j are quadratic residues."""
    assert all(is_qr(x) for x in (known.g, *known.segment_bases("f", 20)))


def test_segment_bases_are_prefix_consistent(small_group: GroupParams) -> None:
    first, second = GroupParams(small_group.n, insecure=True), GroupParams(small_group.n, insecure=True)
    short = first.segment_bases("plant-7", 3)
    long = second.segment_bases("plant-7", 9)
    assert long[:3] == short == first.segment_bases("plant-7", 9)[:3]
    assert first.segment_bases("plant-7", 2) == short[:2]  # asking for fewer after more
    with pytest.raises(InvalidParametersError):
        first.segment_bases("plant-7", 0)


# -- the lift and exponents ------------------------------------------------------------------------


@given(st.integers(min_value=2, max_value=2**512))
def test_lift_is_x_to_the_n_and_a_homomorphism(small_group: GroupParams, e: int) -> None:
    n, n2 = small_group.n, small_group.n2
    x, y = small_group.power(e), small_group.power(e + 1)
    assert small_group.lift(x) == gmpy2.powmod(x, n, n2)
    assert small_group.lift(x * y % n) == small_group.lift(x) * small_group.lift(y) % n2
    assert small_group.lift(x) % n == gmpy2.powmod(x, n, n)


def test_random_exponents_are_fresh_and_in_range(small_group: GroupParams) -> None:
    seen = [small_group.random_exponent() for _ in range(200)]
    assert len(set(seen)) == 200 and all(0 < e < 2**EXPONENT_BITS for e in seen)
    assert max(e.bit_length() for e in seen) == EXPONENT_BITS  # full width, not short exponents
    assert all(0 < small_group.random_exponent(8) < 256 for _ in range(50))


# -- the received-element rule ---------------------------------------------------------------------


def test_honest_elements_are_accepted(small_group: GroupParams) -> None:
    n = small_group.n
    for x in (small_group.g, small_group.power(12345), small_group.power(2**255 + 7), n - small_group.g):
        assert small_group.check_element(x) == x
        assert small_group.received_square(x) == x * x % n
    assert small_group.check_element(int(small_group.g)) == small_group.g  # a plain int is fine


def test_order_two_and_out_of_range_values_are_refused(small_group: GroupParams) -> None:
    n, g = small_group.n, small_group.g
    for bad in (0, 1, n, n + 1, n + g, 2 * n, -g, -1):
        with pytest.raises(InvalidGroupElementError):
            small_group.received_square(bad)
    assert small_group.check_element(n - 1) == n - 1  # -1 passes the first half (Jacobi +1) ...
    with pytest.raises(InvalidGroupElementError, match="squares to 1"):
        small_group.received_square(n - 1)  # ... and is refused by its square


@pytest.mark.parametrize("bad", ["4", b"4", 4.0, 4.7, None, True, False, [5]])
def test_non_integers_are_refused(small_group: GroupParams, bad: object) -> None:
    assert gmpy2.jacobi(4, small_group.n) == 1  # 4 itself would be accepted
    with pytest.raises(InvalidGroupElementError, match="not an integer"):
        small_group.check_element(bad)


def test_jacobi_minus_one_is_refused(small_group: GroupParams) -> None:
    n = small_group.n
    x = next(x for x in range(2, 100) if gmpy2.jacobi(x, n) == -1)
    for bad in (x, small_group.g * x % n):
        with pytest.raises(InvalidGroupElementError, match="Jacobi"):
            small_group.check_element(bad)


def test_an_element_sharing_a_factor_with_n_is_refused(known: GroupParams) -> None:
    for bad in (P, Q, 4 * P, P * 12345 % (P * Q)):
        with pytest.raises(InvalidGroupElementError, match="factor"):
            known.check_element(bad)


def test_every_element_of_order_two_is_refused(known: GroupParams) -> None:
    """The square roots of 1 are +-1 and the two CRT mixes; the mixes have Jacobi -1 (Q = 3 mod 4)."""
    n = P * Q
    mixes = _crt_roots_of_one()
    assert all(x * x % n == 1 for x in mixes) and 1 not in mixes and n - 1 not in mixes
    assert all(gmpy2.jacobi(x, n) == -1 for x in mixes)
    for root in (*mixes, n - 1):
        with pytest.raises(InvalidGroupElementError):
            known.received_square(root)


def _crt_roots_of_one() -> list[int]:
    n = P * Q
    one_mod_p = Q * pow(Q, -1, P)  # 1 mod P, 0 mod Q
    one_mod_q = P * pow(P, -1, Q)
    return [(one_mod_p - one_mod_q) % n, (one_mod_q - one_mod_p) % n]


def test_squaring_puts_every_accepted_value_in_qr_n(known: GroupParams) -> None:
    """x with (x|P) = (x|Q) = -1 has Jacobi +1: it passes the rule but is no square; its square is."""
    n = P * Q
    x = next(x for x in range(2, 1000) if gmpy2.legendre(x, P) == -1 and gmpy2.legendre(x, Q) == -1)
    assert not is_qr(x) and known.check_element(x) == x
    assert is_qr(known.received_square(x)) and is_qr(known.received_square(n - x))
