from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from shared.crypto.group import (
    MIN_P_BITS,
    GroupParams,
    generate_group,
    insecure_test_group,
)
from shared.errors import (
    InsecureParametersError,
    InvalidGroupElementError,
    InvalidParametersError,
)


def test_generated_group_has_production_sizes() -> None:
    group = generate_group(2048)
    assert group.p.bit_length() == 2048
    assert group.q.bit_length() == 256
    assert not group.insecure
    assert (group.p - 1) % group.q == 0
    assert gmpy2.powmod(group.g, group.q, group.p) == 1
    assert group.element_bytes == 256 and group.ciphertext_bytes == 512


def test_unsupported_size_is_refused() -> None:
    with pytest.raises(InvalidParametersError):
        generate_group(1024)


def test_stored_group_validates(group_2048: GroupParams) -> None:
    group_2048.validate()
    assert group_2048.plaintext_bits == 2047


def test_small_group_refused_without_explicit_opt_in(small_group: GroupParams) -> None:
    with pytest.raises(InsecureParametersError):
        GroupParams.from_ints(small_group.p, small_group.q, small_group.g)
    loaded = GroupParams.from_dict(small_group.to_dict(), allow_insecure=True)
    assert loaded == small_group and loaded.insecure
    assert small_group.p.bit_length() < MIN_P_BITS


def test_insecure_test_group_is_deterministic() -> None:
    assert insecure_test_group(256, 64, seed=3) == insecure_test_group(256, 64, seed=3)
    assert insecure_test_group(256, 64, seed=3) != insecure_test_group(256, 64, seed=4)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, q, g: (p + 2, q, g), "p is not prime"),
        (lambda p, q, g: (p, q + 2, g), "q"),
        (lambda p, q, g: (p, q, mpz(1)), "order q"),
        (lambda p, q, g: (p, q, p - 1), "order q"),  # order 2, not q
        (lambda p, q, g: (p, q, p + 5), "order q"),
    ],
)
def test_invalid_parameters_are_rejected(small_group: GroupParams, mutate, message: str) -> None:
    p, q, g = mutate(small_group.p, small_group.q, small_group.g)
    with pytest.raises(InvalidParametersError, match=message):
        GroupParams.from_ints(p, q, g, allow_insecure=True)


def test_q_not_dividing_p_minus_1_is_rejected(small_group: GroupParams) -> None:
    other_q = gmpy2.next_prime(small_group.q)
    with pytest.raises(InvalidParametersError):
        GroupParams.from_ints(small_group.p, other_q, small_group.g, allow_insecure=True)


def test_malformed_dict_is_rejected() -> None:
    with pytest.raises(InvalidParametersError):
        GroupParams.from_dict({"p": "zz", "q": "1", "g": "2"})
    with pytest.raises(InvalidParametersError):
        GroupParams.from_dict({"p": "ff"})


def test_check_element(small_group: GroupParams) -> None:
    p = small_group.p
    good = small_group.power(12345)
    assert small_group.check_element(good) == good
    for bad in (0, 1, p, p + 1, -good, p - 1):  # p-1 has order 2
        with pytest.raises(InvalidGroupElementError):
            small_group.check_element(bad)
    # A quadratic non-residue-ish element outside the subgroup (order not dividing q):
    with pytest.raises(InvalidGroupElementError):
        small_group.check_element(mpz(2) if gmpy2.powmod(2, small_group.q, p) != 1 else mpz(3))
    with pytest.raises(InvalidGroupElementError):
        small_group.check_element("not a number")


@given(st.integers(min_value=1, max_value=2**127))
def test_lift_equals_x_to_the_p(small_group: GroupParams, e: int) -> None:
    """The fast lift is the crypto note's x^p mod p^2: congruent to x, order q mod p^2."""
    x = small_group.power(e)
    lifted = small_group.lift(x)
    assert lifted == gmpy2.powmod(x, small_group.p, small_group.p2)
    assert lifted % small_group.p == x
    assert gmpy2.powmod(lifted, small_group.q, small_group.p2) == 1


def test_lift_is_a_homomorphism(group_2048: GroupParams) -> None:
    a, b = group_2048.power(7), group_2048.power(11)
    assert group_2048.lift(a * b % group_2048.p) == group_2048.lift(a) * group_2048.lift(b) % group_2048.p2


def test_random_exponents_are_in_range_and_fresh(small_group: GroupParams) -> None:
    seen = {int(small_group.random_exponent()) for _ in range(200)}
    assert len(seen) == 200
    assert all(0 < e < small_group.q for e in seen)
