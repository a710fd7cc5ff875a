"""Performance-only paths of the crypto layer give exactly what the plain computation gives.

* :meth:`GroupParams.power` and :meth:`GroupParams.power_square` use a comb table of g and of
  g^2 for the exponents it covers and gmpy2.powmod for everything else;
* :class:`ProofSampler` remembers its last choice: asked again with the same inputs it returns
  the same list (a fresh copy), and any change of input is a fresh ranking.
"""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcast.shared.crypto import group as group_module
from fedcast.shared.crypto.elgamal import ClientAttempt, OnlineSet, ProofSampler
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.proofs import (
    DlogStatement,
    dlog_batch_holds,
    dlog_failures,
    prove_dlog,
    screen_dlogs,
)

from .helpers import context_for

EXPONENTS = st.one_of(
    st.integers(0, 3),
    st.integers(0, 2**256 - 1),
    st.just(2**256 - 1),
    st.just(2**256),  # just past the table of g
    st.integers(0, 2**704 - 1),
    st.just(2**704 - 1),
    st.just(2**704),  # just past the table of g^2
    st.integers(2**704, 2**900),
)


@settings(max_examples=200, deadline=None)
@given(exponent=EXPONENTS, as_mpz=st.booleans())
def test_powers_of_g_equal_powmod(small_group: GroupParams, exponent: int, as_mpz: bool) -> None:
    e = mpz(exponent) if as_mpz else exponent
    n, g = small_group.n, small_group.g
    assert small_group.power(e) == gmpy2.powmod(g, exponent, n)
    assert small_group.power_square(e) == gmpy2.powmod(g * g % n, exponent, n)
    assert type(small_group.power(e)) is type(mpz(0))


def test_negative_and_odd_exponents_fall_back_to_powmod(small_group: GroupParams) -> None:
    n, g = small_group.n, small_group.g
    assert small_group.power(-1) == gmpy2.invert(g, n)
    assert small_group.power_square(-3) == gmpy2.powmod(g * g % n, -3, n)
    with pytest.raises(TypeError):
        small_group.power(1.5)


def test_the_2048_bit_tables(group_2048: GroupParams) -> None:
    n, g = group_2048.n, group_2048.g
    for e in (0, 1, 2**255 + 7, 2**640 + 3, 2**703 + 1):
        assert group_2048.power(e) == gmpy2.powmod(g, e, n)
        assert group_2048.power_square(e) == gmpy2.powmod(g * g % n, e, n)


def test_the_table_cache_stays_small(small_group: GroupParams) -> None:
    for k in range(group_module._G_TABLES_MAX + 3):
        p = gmpy2.next_prime(mpz(2) ** 200 + 1000 * k)
        other = GroupParams(p * gmpy2.next_prime(p + 10**6), insecure=True)  # widths only, no checks
        assert other.power(12345) == gmpy2.powmod(other.g, 12345, other.n)
    assert len(group_module._G_TABLES) <= group_module._G_TABLES_MAX
    assert small_group.power(77) == gmpy2.powmod(small_group.g, 77, small_group.n)


def test_the_batch_test_with_the_table_agrees(small_group: GroupParams) -> None:
    statements = []
    for i in range(6):
        secret = small_group.random_exponent()
        public = small_group.power(secret)
        context = f"ctx-{i}".encode()
        statements.append(DlogStatement(public, prove_dlog(small_group, secret, public, context), context))
    failures, screened = screen_dlogs(small_group, statements)
    assert not failures and not dlog_failures(small_group, statements)
    g2 = small_group.g * small_group.g % small_group.n
    assert dlog_batch_holds(small_group.n, g2, screened)
    assert dlog_batch_holds(small_group.n, g2, screened, power=small_group.power_square)
    bad = [*statements[:3], DlogStatement(statements[3].public, statements[4].proof, statements[3].context)]
    assert set(dlog_failures(small_group, bad)) == {3}


# -- the sampler's memo ------------------------------------------------------------------------


def _attempt(group: GroupParams, members: int, who: str = "m000", attempt: int = 0) -> ClientAttempt:
    keys = {f"m{i:03d}": ClientKeyPair.generate(group).public for i in range(members)}
    online = OnlineSet.from_registry(group, keys)
    return ClientAttempt(who, online, context_for(online.members, attempt=attempt), mpz(5), 3)


def test_the_sampler_memo_returns_what_a_fresh_sampler_chooses(small_group: GroupParams) -> None:
    big = _attempt(small_group, 100)
    key = b"\x07" * 32
    sampler = ProofSampler(key)
    r = int(small_group.power(4242))
    first = sampler.choose(big, r, 3)
    again = sampler.choose(big, mpz(r), 3)
    assert again == first and again is not first
    again.append("tampered")
    assert sampler.choose(big, r, 3) == first  # the memo is not the caller's list
    other_r = r * int(small_group.g) % int(small_group.n)
    assert sampler.choose(big, other_r, 3) == ProofSampler(key).choose(big, other_r, 3)
    assert sampler.choose(big, r, 3) == first
    other_attempt = _attempt(small_group, 100, attempt=1)
    assert sampler.choose(other_attempt, r, 3) == ProofSampler(key).choose(other_attempt, r, 3)
    other_client = ClientAttempt("m001", big.online, big.context, big.first, 3)
    assert sampler.choose(other_client, r, 3) == ProofSampler(key).choose(other_client, r, 3)
    assert "m001" not in sampler.choose(other_client, r, 3)
    assert len(sampler.choose(big, r, 30)) == len(ProofSampler(key).choose(big, r, 30)) != len(first)
    sampler.check_all = True
    assert len(sampler.choose(big, r, 3)) == 99
