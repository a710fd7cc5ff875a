"""Batch verification: multi-exponentiation and random small-exponent combinations.

Protocol version 1 batched *subgroup membership* tests of elements mod a prime
p = 2qq' + 1. Those tests do not apply modulo N = PQ: membership in QR_N cannot
be tested at all without P and Q. Version 2 instead squares every received
element (:meth:`fedcast.shared.crypto.group.GroupParams.received_square`), which puts it
in QR_N by construction at the cost of one multiplication, so no membership
test is needed. What still comes in sets is *proofs* (every member's proof of
knowledge of r2, checked by the aggregator and by every client before it
answers a challenge): those are verified together here.

**Small-exponent batch test** (M. Bellare, J. Garay, T. Rabin, "Fast batch
verification for modular exponentiation and digital signatures", EUROCRYPT '98).
To check equations y_i = x_i for i = 1..n between elements of QR_N, draw
independent uniform e_i of :data:`BATCH_EXPONENT_BITS` bits and check
prod y_i^e_i = prod x_i^e_i. If some delta_k = y_k / x_k != 1, its order in
QR_N (order p'q', both prime) is p', q' or p'q', all above 2^(|N|/2 - 2) >
2^128; for any values of the other e_i at most one e_k in [0, 2^128) satisfies
the batch equation, so a batch holding a false equation passes with
probability at most 2^-128. Equations are compared as squares, so the values
involved need only be units whose squares are in QR_N (the proofs of
:mod:`fedcast.shared.crypto.proofs` accept up to sign, as the element rule requires).

**Multi-exponentiation** (:func:`multi_exp`): prod b_i^e_i mod m by Pippenger's
bucket method with c-bit windows, about (max bits / c) * (n + 2^(c+1))
multiplications instead of n full exponentiations; the window is chosen per
call from n and the exponents' sizes, and zero digits cost nothing (short
exponents mixed with long ones pay only for their own length).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedcast.shared.errors import ConfigurationError

__all__ = ["BATCH_EXPONENT_BITS", "batch_exponents", "multi_exp"]

#: Width of the random batch exponents: a false equation survives with probability 2^-128.
BATCH_EXPONENT_BITS = 128


def batch_exponents(count: int) -> list[int]:
    """``count`` fresh uniform :data:`BATCH_EXPONENT_BITS`-bit exponents from the OS CSPRNG."""
    raw = secrets.token_bytes(count * BATCH_EXPONENT_BITS // 8)
    width = BATCH_EXPONENT_BITS // 8
    return [int.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width)]


def _window_bits(n: int, bits: int) -> int:
    """The window with the fewest multiplications for n bases with exponents of ``bits`` bits."""
    return min(range(1, 13), key=lambda c: -(-bits // c) * (n + (2 << c) + c))


def _digits(exponents: Sequence[int], c: int, windows: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """digits[w, i]: the w-th c-bit digit (most significant first) of exponent i."""
    n = len(exponents)
    width = -(-windows * c // 8)
    raw = np.frombuffer(b"".join(int(e).to_bytes(width, "little") for e in exponents), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(n, width), axis=1, bitorder="little")[:, : windows * c]
    weights = 1 << np.arange(c, dtype=np.int64)
    low_first = bits.reshape(n, windows, c).astype(np.int64) @ weights
    return np.ascontiguousarray(low_first[:, ::-1].T)


def multi_exp(bases: Sequence[Any], exponents: Sequence[int], modulus: Any) -> mpz:
    """prod bases[i]^exponents[i] mod ``modulus`` (non-negative exponents), Pippenger's method."""
    if len(bases) != len(exponents):
        raise ConfigurationError("bases and exponents differ in length")
    m = mpz(modulus)
    if any(e < 0 for e in exponents):
        raise ConfigurationError("exponents must be non-negative")
    pairs = [(mpz(b), int(e)) for b, e in zip(bases, exponents, strict=True) if e]
    if not pairs:
        return mpz(1) % m
    if len(pairs) == 1:
        return gmpy2.powmod(pairs[0][0], pairs[0][1], m)
    bits = max(e.bit_length() for _, e in pairs)
    c = _window_bits(len(pairs), bits)
    windows = -(-bits // c)
    digits = _digits([e for _, e in pairs], c, windows)
    values = [b for b, _ in pairs]
    acc = mpz(1)
    started = False
    for w in range(windows):
        if started:
            acc = gmpy2.powmod(acc, 1 << c, m)
        buckets: list[mpz | None] = [None] * (1 << c)
        for x, d in zip(values, digits[w].tolist(), strict=True):
            if d:
                b = buckets[d]
                buckets[d] = x if b is None else b * x % m
        # sum over d of d * bucket[d], by running products: at most 2 * 2^c multiplications.
        running: mpz | None = None
        total: mpz | None = None
        for b in reversed(buckets[1:]):
            if b is not None:
                running = b if running is None else running * b % m
            if running is not None:
                total = running if total is None else total * running % m
        if total is not None:
            acc = acc * total % m
            started = True
    return acc
