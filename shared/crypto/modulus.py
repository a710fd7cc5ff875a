"""Generating the federation's RSA modulus N = P * Q from two safe primes, and forgetting P, Q.

Whoever knows P and Q can decrypt any single upload, so :func:`generate_group`
keeps them only in its own local variables: they never reach a file, a log, a
repr, an exception or a message, and the function returns only the group built
from N. The key service calls it once per federation (an operator may instead
supply N from a multi-party ceremony, :func:`fedcast.shared.crypto.group.validate_modulus`).

Safe primes P = 2p' + 1 are searched in windows of consecutive odd candidates
for p', each window sieved (numpy) for both p' and 2p' + 1 by every odd prime
below 2^16, so that only ~1 in 100 candidates reaches a test; a base-2 strong
probable-prime test of p' and a Fermat test of P come before 40 Miller-Rabin
rounds of each. Measured on the development machine: 0.2-0.6 s per 1024-bit
safe prime, 0.2-2.2 s per 1536-bit one (docs/BENCHMARKS.md has the N timings).
"""

from __future__ import annotations

import functools
import random
import secrets
import time
from collections.abc import Callable

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedcast.shared.crypto.group import (
    DEFAULT_MODULUS_BITS,
    MIN_MODULUS_BITS,
    SUPPORTED_MODULUS_BITS,
    GroupParams,
)
from fedcast.shared.errors import InvalidParametersError

__all__ = [
    "PRIMALITY_ROUNDS",
    "SIEVE_PRIME_BOUND",
    "Progress",
    "generate_group",
    "insecure_test_group",
]

#: Miller-Rabin rounds per prime: a composite passes with probability below 4^-40.
PRIMALITY_ROUNDS = 40
#: Candidates are sieved by every odd prime below this bound before any test.
SIEVE_PRIME_BOUND = 1 << 16
_WINDOW = 1 << 16
#: progress(message): called with human-readable progress lines during generation.
Progress = Callable[[str], None]


@functools.lru_cache(maxsize=1)
def _odd_small_primes(bound: int = SIEVE_PRIME_BOUND) -> tuple[int, ...]:
    sieve = np.ones(bound, dtype=bool)
    sieve[:2] = False
    for i in range(2, int(bound**0.5) + 1):  # ~256 iterations of the sieve of Eratosthenes
        if sieve[i]:
            sieve[i * i :: i] = False
    return tuple(int(x) for x in np.flatnonzero(sieve)[1:])  # drop 2: every candidate is odd


def _safe_prime(bits: int, randbits: Callable[[int], int], progress: Progress | None, what: str) -> mpz:
    """A safe prime 2p' + 1 of exactly ``bits`` bits whose top two bits are set."""
    tested = 0
    started = time.monotonic()
    reported = started
    primes = _odd_small_primes()
    while True:
        # p' has bits - 1 bits with its top two set, so P = 2p' + 1 has ``bits`` bits and
        # the product of two such primes has exactly 2 * bits bits.
        start = mpz(randbits(bits - 1)) | (mpz(3) << (bits - 3)) | 1
        alive = np.ones(_WINDOW, dtype=bool)  # alive[k]: p' = start + 2k is still a candidate
        for s in primes:
            r = int(start % s)
            # p' = 0 (mod s)  <=>  k = -r / 2 (mod s)
            alive[(-r * ((s + 1) // 2)) % s :: s] = False
            # P = 2(start + 2k) + 1 = 0 (mod s)  <=>  k = -(2r + 1) / 4 (mod s)
            alive[(-(2 * r + 1) * pow(4, -1, s)) % s :: s] = False
        for k in np.flatnonzero(alive).tolist():
            candidate = start + 2 * k
            tested += 1
            if progress is not None and time.monotonic() - reported >= 2.0:
                reported = time.monotonic()
                progress(f"{what}: {tested} candidates tested in {reported - started:.0f} s")
            if not gmpy2.is_strong_prp(candidate, 2):
                continue
            prime = 2 * candidate + 1
            if gmpy2.powmod(2, prime - 1, prime) != 1:
                continue
            if gmpy2.is_prime(candidate, PRIMALITY_ROUNDS) and gmpy2.is_prime(prime, PRIMALITY_ROUNDS):
                if progress is not None:
                    progress(f"{what}: found after {tested} candidates, {time.monotonic() - started:.1f} s")
                return prime


def _modulus(bits: int, randbits: Callable[[int], int], progress: Progress | None) -> mpz:
    half = bits // 2
    while True:
        first = _safe_prime(half, randbits, progress, "first safe prime")
        second = _safe_prime(half, randbits, progress, "second safe prime")
        # Factors this close would fall to Fermat's method; for random primes this never happens.
        if int(abs(first - second).bit_length()) <= max(half // 2, half - 100):
            continue
        n = first * second
        del first, second  # the factors go no further than this function
        if int(n.bit_length()) == bits:
            return n


def generate_group(bits: int = DEFAULT_MODULUS_BITS, *, progress: Progress | None = None) -> GroupParams:
    """A fresh group from N = P * Q, P and Q safe primes of |N|/2 bits drawn from the OS CSPRNG.

    Seconds at 2048 and 3072 bits. Only N leaves this function.
    """
    if bits not in SUPPORTED_MODULUS_BITS:
        raise InvalidParametersError(f"|N| must be one of {SUPPORTED_MODULUS_BITS}, got {bits}")
    n = _modulus(bits, secrets.randbits, progress)
    return GroupParams.from_modulus(n)


def insecure_test_group(bits: int = 512, seed: int = 0) -> GroupParams:
    """A small, deterministic group of the same shape for tests and demos. INSECURE.

    Deterministic in ``seed`` (so known-answer tests can pin values) and marked
    ``insecure=True``; :meth:`GroupParams.from_dict` refuses it unless told
    ``allow_insecure``. Anyone who reruns this function knows the factors.
    """
    if not 128 <= bits < MIN_MODULUS_BITS or bits % 2:
        raise InvalidParametersError(f"test moduli are even sizes in [128, {MIN_MODULUS_BITS})")
    rng = random.Random(seed)  # noqa: S311 - test-only determinism, not key material
    n = _modulus(bits, rng.getrandbits, None)
    return GroupParams.from_modulus(n, allow_insecure=True)
