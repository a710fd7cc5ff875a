"""Multi-exponentiation equals the naive product; batch exponents are fresh and 128 bits wide."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.batch import BATCH_EXPONENT_BITS, batch_exponents, multi_exp
from fedcast.shared.crypto.group import GroupParams

# Exponents of very different sizes in one call (zeros, a few bits, batch weights, 2c * e products).
EXPONENTS = st.one_of(
    st.just(0),
    st.integers(1, 255),
    st.integers(0, 2**BATCH_EXPONENT_BITS - 1),
    st.integers(0, 2**700),
)


def naive(bases: list[int], exponents: list[int], modulus: int) -> int:
    acc = 1 % modulus
    for b, e in zip(bases, exponents, strict=True):
        acc = acc * pow(b, e, modulus) % modulus
    return acc


@given(data=st.data())
def test_multi_exp_equals_the_naive_product(small_group: GroupParams, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, 40), label="count")
    modulus = data.draw(st.sampled_from([int(small_group.n), int(small_group.n2), 1_000_003, 2**61]))
    bases = data.draw(st.lists(st.integers(0, modulus - 1), min_size=count, max_size=count), label="bases")
    exponents = data.draw(st.lists(EXPONENTS, min_size=count, max_size=count), label="exponents")
    assert multi_exp(bases, exponents, modulus) == naive(bases, exponents, modulus)


@given(st.integers(2, 64), st.integers(1, 700))
def test_multi_exp_with_equal_sized_exponents(small_group: GroupParams, count: int, bits: int) -> None:
    n = int(small_group.n)
    bases = [int(small_group.power(i + 2)) for i in range(count)]
    exponents = [(2**bits - 1) // (i + 1) for i in range(count)]
    assert multi_exp(bases, exponents, n) == naive(bases, exponents, n)


def test_multi_exp_edge_cases(small_group: GroupParams) -> None:
    n = small_group.n
    g = small_group.g
    assert multi_exp([], [], n) == 1
    assert multi_exp([g, g], [0, 0], n) == 1
    assert multi_exp([g], [5], n) == small_group.power(5)
    assert multi_exp([g, g], [5, 7], n) == small_group.power(12)
    assert multi_exp([g], [5], 1) == 0
    with pytest.raises(ValueError):
        multi_exp([g, g], [1], n)
    with pytest.raises(ValueError):
        multi_exp([g, g], [1, -1], n)


def test_batch_exponents_are_fresh_and_full_width() -> None:
    assert batch_exponents(0) == []
    draws = [batch_exponents(50) for _ in range(4)]
    values = [e for d in draws for e in d]
    assert all(len(d) == 50 for d in draws)
    assert all(0 <= e < 2**BATCH_EXPONENT_BITS for e in values)
    assert len(set(values)) == len(values)  # no repeats within or across calls
    assert max(e.bit_length() for e in values) == BATCH_EXPONENT_BITS
