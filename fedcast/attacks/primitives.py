"""The attack computations of the crypto note, generic in the modulus (a prime p or an RSA N).

Each function is the attacker's whole computation and is run unchanged against the
old construction and against v2; the callers decide success by comparing what it
returns with the true secret values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gmpy2
from gmpy2 import mpz

__all__ = ["BsgsResult", "bsgs", "euclid_relation", "l_function", "strip_mask"]


def l_function(y: Any, modulus: Any) -> mpz | None:
    """L(y) = (y - 1) / n if y = 1 (mod n), else None (the value is not of the form 1 + k n)."""
    n = mpz(modulus)
    value = mpz(y) % (n * n)
    if value % n != 1:
        return None
    return (value - 1) // n


def strip_mask(ciphertext: Any, modulus: Any) -> mpz:
    """Crypto note 0.1: ``(E * (E^n)^-1 mod n^2 - 1) / n`` for E = (1 + m n) * mask, no key used.

    With a public prime p every mask M has order dividing p - 1, so E^p = M and this is
    exactly m. With an RSA modulus N it is garbage. Returns the quotient whether or not
    the value was 1 mod n (the caller compares it with the truth).
    """
    n = mpz(modulus)
    n2 = n * n
    e = mpz(ciphertext)
    y = e * gmpy2.invert(gmpy2.powmod(e, n, n2), n2) % n2
    return ((y - 1) // n) % n


def euclid_relation(first: Any, second: Any, exp_first: Any, exp_second: Any, modulus: Any) -> mpz | None:
    """Crypto note 0.2: c = exp_second * m_1 - exp_first * m_2 (mod n), if the masks are X^exp_j.

    With E_j = (1 + m_j n) X^(e_j) and x e_1 + y e_2 = d (extended Euclid over the
    integers): W = E_1^x E_2^y = (1 + n)^(x m_1 + y m_2) X^d and
    E_1^d / W^(e_1) = (1 + n)^(y (e_2 m_1 - e_1 m_2)), so L of it divided by y is c.
    None if that value is not 1 mod n (the masks did not cancel: the e_j are wrong).
    """
    n = mpz(modulus)
    n2 = n * n
    e1, e2 = mpz(exp_first), mpz(exp_second)
    d, x, y = gmpy2.gcdext(e1, e2)
    if y == 0 or gmpy2.gcd(y, n) != 1:
        return None
    w = gmpy2.powmod(first, x, n2) * gmpy2.powmod(second, y, n2) % n2
    value = l_function(gmpy2.powmod(first, d, n2) * gmpy2.invert(gmpy2.powmod(w, e1, n2), n2), n)
    if value is None:
        return None
    return value * gmpy2.invert(y % n, n) % n


@dataclass(frozen=True)
class BsgsResult:
    """The exponent found (or None) and the steps spent: ``baby`` table entries, ``giant`` steps."""

    exponent: mpz | None
    baby: int
    giant: int


def bsgs(base: Any, target: Any, modulus: Any, exponent_bits: int) -> BsgsResult:
    """Baby-step giant-step: s < 2^exponent_bits with base^s = target (mod modulus), or None.

    2^ceil(b/2) baby steps (a table keyed by the low 64 bits) and at most as many giant
    steps: the budget covers exactly the exponents below 2^b, whatever the true one is.
    """
    m = mpz(modulus)
    steps = 1 << -(-exponent_bits // 2)
    b, t = mpz(base) % m, mpz(target) % m
    table: dict[int, int] = {}
    value = mpz(1)
    for i in range(steps):
        table.setdefault(int(gmpy2.f_mod_2exp(value, 64)), i)
        value = value * b % m
    stride = gmpy2.invert(value, m)  # base^-steps
    gamma = t
    for j in range(steps):
        hit = table.get(int(gmpy2.f_mod_2exp(gamma, 64)))
        if hit is not None:
            candidate = mpz(j * steps + hit)
            if gmpy2.powmod(b, candidate, m) == t:
                return BsgsResult(candidate, steps, j + 1)
        gamma = gamma * stride % m
    return BsgsResult(None, steps, steps)
