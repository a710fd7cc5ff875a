"""The RSA modulus: generation (factors forgotten), deterministic test moduli, validation of a supplied N."""

from __future__ import annotations

import dataclasses

import gmpy2
import pytest
from gmpy2 import mpz

from fedcast.shared.crypto.group import MIN_MODULUS_BITS, SMALL_FACTOR_BOUND, GroupParams, validate_modulus
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.errors import InsecureParametersError, InvalidParametersError
from tests.conftest import stored_modulus


def _prime(bits: int, offset: int = 0) -> mpz:
    return gmpy2.next_prime((mpz(1) << (bits - 1)) + (mpz(3) << (bits - 4)) + offset)


def assert_no_factor_kept(group: GroupParams) -> None:
    """No attribute of the group (at any depth) is P, Q or a multiple of one: gcd with N is 1 or N."""
    assert {f.name for f in dataclasses.fields(group)} == {"n", "insecure", "_n2", "_g", "_bases"}
    assert set(vars(group)) == {"n", "insecure", "_n2", "_g", "_bases"}
    group.segment_bases("any federation", 3)  # populate the cache too

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif not isinstance(value, bool) and isinstance(value, int | type(mpz(0))):
            assert gmpy2.gcd(value, group.n) in (1, group.n)

    walk(vars(group))


# -- generation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> tuple[GroupParams, list[str]]:
    lines: list[str] = []
    return generate_group(2048, progress=lines.append), lines


@pytest.mark.slow
def test_generate_group_gives_a_valid_odd_2048_bit_modulus(generated: tuple[GroupParams, list[str]]) -> None:
    group, lines = generated
    assert group.modulus_bits == 2048 and group.n % 2 == 1 and not group.insecure
    assert validate_modulus(group.n) == group.n  # odd, composite, not a power, no factor below 2^20
    assert sum("found" in line for line in lines) >= 2  # both safe primes reported
    assert_no_factor_kept(group)
    assert format(group.n, "x") not in repr(group)


def test_generate_group_refuses_unsupported_sizes() -> None:
    for bits in (512, 1024, 2047, 4096):
        with pytest.raises(InvalidParametersError):
            generate_group(bits)


@pytest.mark.parametrize("bits", [128, 256, 512, 1024])
def test_insecure_test_groups_have_the_requested_size(bits: int) -> None:
    group = insecure_test_group(bits, seed=5)
    assert group.modulus_bits == bits and group.n % 2 == 1 and group.insecure
    validate_modulus(group.n, allow_insecure=True)
    assert_no_factor_kept(group)


def test_insecure_test_groups_are_deterministic_per_seed() -> None:
    assert insecure_test_group(256, seed=3).n == insecure_test_group(256, seed=3).n
    assert insecure_test_group(256, seed=3).n != insecure_test_group(256, seed=4).n
    # The stored moduli of tests/data are seed 0: regenerating gives the very same N.
    assert insecure_test_group(512, seed=0).n == stored_modulus(512)


@pytest.mark.parametrize("bits", [64, 127, 513, MIN_MODULUS_BITS])
def test_insecure_test_group_refuses_odd_tiny_or_production_sizes(bits: int) -> None:
    with pytest.raises(InvalidParametersError):
        insecure_test_group(bits)


# -- validation of a supplied modulus --------------------------------------------------------------


def test_a_real_modulus_validates() -> None:
    n = stored_modulus(2048)
    assert validate_modulus(n) == n
    assert GroupParams.from_modulus(n).n == n


def test_a_prime_is_refused_the_v1_flaw() -> None:
    p = _prime(2048)
    assert p.bit_length() == 2048
    with pytest.raises(InvalidParametersError, match="prime"):
        validate_modulus(p)
    with pytest.raises(InvalidParametersError, match="prime"):
        GroupParams.from_modulus(p)


def test_why_a_prime_modulus_is_refused(small_group: GroupParams) -> None:
    """Crypto note 0.1: with a public prime p, E^p strips the mask of E = (1 + m p) lift(h)^s.

    The same computation modulo an RSA modulus recovers nothing.
    """
    m, s = mpz(424242), mpz(2) ** 200 + 12345
    p = _prime(512)
    for modulus, leaks in ((p, True), (small_group.n, False)):
        n2 = modulus * modulus
        mask = gmpy2.powmod(gmpy2.powmod(7, modulus, n2), s, n2)  # lift(h)^s with h = 7
        e = (1 + m * modulus) * mask % n2
        y = e * gmpy2.invert(gmpy2.powmod(e, modulus, n2), n2) % n2
        assert ((y - 1) // modulus == m and y % modulus == 1) is leaks


def test_even_and_degenerate_values_are_refused() -> None:
    with pytest.raises(InvalidParametersError, match="even"):
        validate_modulus(stored_modulus(2048) + 1)
    for bad in (0, 1, 2, -stored_modulus(2048), mpz(1) << 9000, "not a number", None):
        with pytest.raises(InvalidParametersError):
            validate_modulus(bad, allow_insecure=True)


def test_a_perfect_power_is_refused() -> None:
    p = _prime(1024)
    for power in (p * p, _prime(683) ** 3):
        with pytest.raises(InvalidParametersError, match="perfect power"):
            validate_modulus(power, allow_insecure=True)


@pytest.mark.parametrize("small", [3, 65537, 1048573])  # 1048573: the largest prime below 2^20
def test_a_factor_below_2_to_the_20_is_refused(small: int) -> None:
    n = small * _prime(2048 - small.bit_length() + 1)
    assert n.bit_length() >= 2048
    with pytest.raises(InvalidParametersError, match="factor below"):
        validate_modulus(n)


def test_a_smallest_factor_just_above_the_bound_is_accepted() -> None:
    small = gmpy2.next_prime(SMALL_FACTOR_BOUND)
    n = small * _prime(2048 - small.bit_length() + 1)
    assert validate_modulus(n) == n  # the bound is exactly 2^20, not a larger guess


def test_a_small_modulus_needs_an_explicit_opt_in() -> None:
    n = stored_modulus(1024)
    with pytest.raises(InsecureParametersError):
        validate_modulus(n)
    with pytest.raises(InsecureParametersError):
        GroupParams.from_modulus(n)
    assert validate_modulus(n, allow_insecure=True) == n
    assert GroupParams.from_modulus(n, allow_insecure=True).insecure
