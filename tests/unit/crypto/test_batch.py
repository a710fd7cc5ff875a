"""Batch subgroup checks: the group shape they need; they catch exactly what one-by-one checks catch."""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

import shared.crypto.batch as batch
from shared.crypto.batch import BATCH_MIN_ELEMENTS, check_elements, invalid_elements, screen_element
from shared.crypto.group import GroupParams, generate_group, insecure_test_group
from shared.errors import InvalidGroupElementError


def q_prime_part(group: GroupParams) -> mpz:
    """An element of order q' (the cofactor prime): a quadratic residue outside the order-q subgroup."""
    h = mpz(3)
    while (z := gmpy2.powmod(h, 2 * group.q, group.p)) == 1:
        h += 1
    return z


def valid(group: GroupParams, k: int) -> mpz:
    return group.power(1000 + 7 * k)


# -- the group shape -------------------------------------------------------------------------------


def test_generated_groups_have_a_prime_cofactor(small_group: GroupParams, group_2048: GroupParams) -> None:
    for group in (small_group, group_2048):
        q_prime = (group.p - 1) // (2 * group.q)
        assert group.p == 2 * group.q * q_prime + 1
        assert gmpy2.is_prime(q_prime, 40) and q_prime.bit_length() >= 160
        assert group.batch_verifiable


def test_generate_group_2048_has_the_batch_shape() -> None:
    group = generate_group(2048)
    assert (group.p.bit_length(), group.q.bit_length()) == (2048, 256)
    assert group.batch_verifiable and not group.insecure
    assert gmpy2.powmod(group.g, group.q, group.p) == 1 and group.g != 1


def test_other_group_shapes_are_not_batch_verifiable(group_2048_dsa: GroupParams) -> None:
    assert not group_2048_dsa.batch_verifiable  # DSA: p - 1 = q * k with k full of small factors
    assert not insecure_test_group(128, 32).batch_verifiable  # q' below 160 bits: 128-bit test unsound


# -- screening and batches -------------------------------------------------------------------------

KINDS = ("valid", "q_prime", "minus", "zero", "one", "p", "not_int")


def _make(group: GroupParams, kind: str, k: int) -> object:
    x = valid(group, k)
    return {
        "valid": x,
        "q_prime": x * q_prime_part(group) % group.p,  # passes the Legendre screen, fails the batch
        "minus": group.p - x,  # order-2 component: p = 3 mod 4, so -1 is a non-residue
        "zero": 0,
        "one": 1,
        "p": group.p,
        "not_int": "x",
    }[kind]


@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=12))
def test_batch_checks_agree_with_one_by_one_checks(small_group: GroupParams, kinds: list[str]) -> None:
    values = [_make(small_group, kind, k) for k, kind in enumerate(kinds)]
    screened, caught_by_screen = [], []
    for i, v in enumerate(values):
        try:
            screened.append((i, screen_element(small_group, v)))
        except InvalidGroupElementError:
            caught_by_screen.append(i)
    assert caught_by_screen == [i for i, k in enumerate(kinds) if k not in ("valid", "q_prime")]
    bad = [screened[j][0] for j in invalid_elements(small_group, [x for _, x in screened])]
    assert bad == [i for i, k in enumerate(kinds) if k == "q_prime"]
    one_by_one = []
    for i, v in enumerate(values):
        try:
            small_group.check_element(v)
        except InvalidGroupElementError:
            one_by_one.append(i)
    if one_by_one:
        with pytest.raises(InvalidGroupElementError) as raised:
            check_elements(small_group, values, lambda i: f"<x{i}>")
        assert any(f"<x{i}>" in str(raised.value) for i in one_by_one)
    else:
        assert check_elements(small_group, values, lambda i: f"x{i}") == [mpz(v) for v in values]  # type: ignore[call-overload]


def test_a_large_batch_runs_one_batch_test_and_names_the_culprit(
    group_2048: GroupParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = batch._batch_holds

    def spy(group: GroupParams, elements: list[mpz]) -> bool:
        calls.append(len(elements))
        return real(group, elements)

    monkeypatch.setattr(batch, "_batch_holds", spy)
    elements = [valid(group_2048, k) for k in range(40)]
    assert check_elements(group_2048, elements, str) == elements
    assert calls == [40]
    elements[17] = elements[17] * q_prime_part(group_2048) % group_2048.p
    with pytest.raises(InvalidGroupElementError, match="element 17 is not in the order-q subgroup"):
        check_elements(group_2048, elements, lambda i: f"element {i}")
    assert invalid_elements(group_2048, elements) == [17]


def test_every_position_and_several_culprits_are_found(small_group: GroupParams) -> None:
    z = q_prime_part(small_group)
    for n in (BATCH_MIN_ELEMENTS, 9, 33):
        for bad in ([0], [n - 1], sorted({1, n // 2, n - 1})):
            elements = [valid(small_group, k) for k in range(n)]
            for i in bad:
                elements[i] = elements[i] * z % small_group.p
            assert invalid_elements(small_group, elements) == bad


def test_elements_of_a_dsa_group_are_checked_one_by_one(
    group_2048_dsa: GroupParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "_batch_holds", lambda *a: pytest.fail("batch test on a DSA group"))
    group = group_2048_dsa
    elements = [group.power(5 + k) for k in range(6)]
    assert check_elements(group, elements, str) == elements
    # An element with a component of small order (p - 1 = q * k, k with small factors).
    k = (group.p - 1) // group.q
    stray = gmpy2.powmod(mpz(2), group.q, group.p)  # order divides k, not 1 here
    assert stray != 1 and gmpy2.powmod(stray, k, group.p) == 1
    elements[3] = elements[3] * stray % group.p
    with pytest.raises(InvalidGroupElementError, match="3"):
        check_elements(group, elements, str)
