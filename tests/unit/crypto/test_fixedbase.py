"""Comb tables compute exactly powmod, whatever the shape; the memory cap falls back to powmod."""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.crypto.fixedbase import (
    AUTO_SHAPES,
    CombShape,
    CombTable,
    FixedBaseSet,
    pow_many_exponents,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.errors import ConfigurationError


@given(
    e=st.integers(0, 2**128 - 1),
    h=st.integers(1, 9),
    v=st.integers(1, 5),
)
def test_comb_equals_powmod(small_group: GroupParams, e: int, h: int, v: int) -> None:
    shape = CombShape(h=h, v=v, bits=128)
    base = small_group.lift(small_group.power(99991))
    table = CombTable(base, small_group.n2, shape)
    assert table.pow(shape.digits(e).steps()) == gmpy2.powmod(base, e, small_group.n2)


def test_fixed_base_set_respects_memory_budget(small_group: GroupParams) -> None:
    bases = [small_group.lift(small_group.power(i + 2)) for i in range(10)]
    full = FixedBaseSet(bases, small_group.n2, exponent_bits=128, memory_budget_bytes=1 << 30)
    none = FixedBaseSet(bases, small_group.n2, exponent_bits=128, memory_budget_bytes=0)
    smallest = FixedBaseSet(
        bases, small_group.n2, exponent_bits=128, memory_budget_bytes=1 << 30, shape=AUTO_SHAPES[-1]
    )
    some = FixedBaseSet(
        bases, small_group.n2, exponent_bits=128, memory_budget_bytes=smallest.estimated_memory_bytes // 3
    )
    assert full.n_tabulated == 10 and none.n_tabulated == 0 and 0 < some.n_tabulated < 10
    # With room for all, the fastest shape; with less, the smallest shape on as many bases as fit.
    assert (full.shape.h, full.shape.v) == (8, 4) and (some.shape.h, some.shape.v) == (8, 1)
    half = FixedBaseSet(
        bases, small_group.n2, exponent_bits=128, memory_budget_bytes=full.estimated_memory_bytes // 2
    )
    assert (half.shape.v, half.n_tabulated) == (2, 10)
    assert full.shape.eval_cost < half.shape.eval_cost < smallest.shape.eval_cost
    e = small_group.random_exponent(128)
    expected = [gmpy2.powmod(b, e, small_group.n2) for b in bases]
    assert full.pow_all(e) == expected == none.pow_all(e) == some.pow_all(e)


def test_pow_many_exponents(small_group: GroupParams) -> None:
    shape = CombShape(h=8, v=4, bits=128)
    exps = [small_group.random_exponent(128) for _ in range(5)]
    base = small_group.lift(small_group.power(5))
    got = pow_many_exponents(base, [shape.digits(e).steps() for e in exps], small_group.n2, shape)
    assert got == [gmpy2.powmod(base, e, small_group.n2) for e in exps]


def test_bad_shapes_and_exponents() -> None:
    with pytest.raises(ConfigurationError):
        CombShape(h=0)
    with pytest.raises(ConfigurationError):
        CombShape(bits=8).digits(256)
    with pytest.raises(ConfigurationError):
        FixedBaseSet([2], 7, exponent_bits=8, memory_budget_bytes=-1)


def test_the_decryptors_shape_sums_of_256_bit_exponents(small_group: GroupParams) -> None:
    """v2 unmasks with s_sum < |S| 2^256: tables sized 256 + bitlen(max members) bits."""
    bases = [small_group.lift(h) for h in small_group.segment_bases("plant-7", 3)]
    tables = FixedBaseSet(bases, small_group.n2, exponent_bits=256 + 5, memory_budget_bytes=1 << 26)
    s_sum = sum(small_group.random_exponent() for _ in range(16))
    assert 256 < s_sum.bit_length() <= 261
    assert tables.pow_all(s_sum) == [gmpy2.powmod(b, s_sum, small_group.n2) for b in bases]
    with pytest.raises(ConfigurationError):
        tables.pow_all(1 << 261)
