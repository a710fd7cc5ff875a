"""The attack computations on their own: each recovers what it should where the math allows it."""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz
from hypothesis import given
from hypothesis import strategies as st

from fedcast.attacks.context import AttackContext
from fedcast.attacks.legacy_v1 import V1AggregatorKey, V1Client
from fedcast.attacks.primitives import bsgs, euclid_relation, l_function, strip_mask


def test_l_function_is_strict() -> None:
    n = mpz(1009 * 1013)
    assert l_function(1 + 5 * n, n) == 5
    assert l_function(2 + 5 * n, n) is None


@given(st.lists(st.integers(min_value=0, max_value=2**400), min_size=2, max_size=2))
def test_strip_and_euclid_open_v1_uploads(attack_context: AttackContext, ms: list[int]) -> None:
    group = attack_context.v1
    key = V1AggregatorKey.generate(group, 2)
    clients = {m: V1Client(group, m, key) for m in ("a", "b")}
    ct, _ = clients["a"].encrypt(ms, {m: c.public for m, c in clients.items()}, attempt=0)
    assert [strip_mask(e, group.p) for e in ct.segments] == ms
    a1, a2 = key.alphas
    assert (
        euclid_relation(ct.segments[0], ct.segments[1], a1, a2, group.p)
        == (a2 * ms[0] - a1 * ms[1]) % group.p
    )
    # With exponents that are not the masks' the masks do not cancel: nothing comes out.
    assert euclid_relation(ct.segments[0], ct.segments[1], a1 + 1, a2, group.p) is None


def test_bsgs_finds_exactly_the_exponents_in_its_budget(attack_context: AttackContext) -> None:
    n2 = attack_context.group.n2
    base = attack_context.group.lift(attack_context.group.g)
    for s in (0, 1, 2**20 - 1, 123_456):
        result = bsgs(base, gmpy2.powmod(base, s, n2), n2, 20)
        assert result.exponent == s and result.baby == 2**10 and result.giant <= 2**10
    missed = bsgs(base, gmpy2.powmod(base, 2**20 + 5, n2), n2, 20)
    assert missed.exponent is None and (missed.baby, missed.giant) == (2**10, 2**10)
