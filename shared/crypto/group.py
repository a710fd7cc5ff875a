"""Schnorr group parameters (p, q, g): generation, validation, element checks, the lift.

The scheme works in the order-q subgroup of Z_p^* (ElGamal part) and in the
order-q subgroup of Z_{p^2}^* (the Paillier-like masked plaintexts). Sizes:

* |p| = 2048 bits by default, 3072 supported. NIST SP 800-57 Part 1 Rev. 5,
  Table 2, rates finite-field groups with |p| = 2048 / |q| = 224 at 112-bit
  security and |p| = 3072 / |q| = 256 at 128-bit; we use |q| = 256 in both so
  that exponents never limit the security level. The paper's kappa_1 = 512 is
  refused: anything below :data:`MIN_P_BITS` exists only through
  :func:`insecure_test_group`, which tests use for speed.
* Generated groups have p = 2*q*q' + 1 with q' prime as well (a "Lim-Lee
  prime": C. H. Lim and P. J. Lee, "A key recovery attack on discrete
  log-based schemes using a prime order subgroup", CRYPTO '97, recommend
  exactly this shape). Then Z_p^* has no subgroups but those of order 1, 2,
  q, q' and their products, so a quadratic residue is in the order-q subgroup
  iff its q'-component is trivial, and that can be tested for a whole batch
  of elements at once (:mod:`shared.crypto.batch`). Groups of any other shape
  (for example FIPS 186-4 DSA parameters) stay fully supported: their
  elements are checked one by one.

All arithmetic is gmpy2: it is the hot path of every party.
"""

from __future__ import annotations

import functools
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from shared.errors import (
    InsecureParametersError,
    InvalidGroupElementError,
    InvalidParametersError,
)

__all__ = [
    "DEFAULT_P_BITS",
    "MIN_P_BITS",
    "MIN_Q_BITS",
    "PRIMALITY_ROUNDS",
    "Q_BITS",
    "SIEVE_PRIME_BOUND",
    "SUPPORTED_P_BITS",
    "GroupParams",
    "generate_group",
    "insecure_test_group",
]

#: Default modulus size (NIST SP 800-57 Part 1 Rev. 5, Table 2: 112-bit security).
DEFAULT_P_BITS = 2048
#: Sizes ``generate_group`` produces.
SUPPORTED_P_BITS = (2048, 3072, 4096)
#: Smallest modulus accepted outside the explicitly insecure test constructor.
MIN_P_BITS = 2048
#: Subgroup order size: 256 bits, so exponent attacks cost 2^128 (Pollard rho).
Q_BITS = 256
#: Smallest subgroup order accepted outside tests.
MIN_Q_BITS = 256
#: Miller-Rabin rounds when validating loaded parameters: a composite passes with
#: probability below 4^-40 = 2^-80 (FIPS 186-5 Table B.1 asks for fewer at these sizes).
PRIMALITY_ROUNDS = 40
#: Candidates for q' and p are sieved by every odd prime below this bound before any
#: Miller-Rabin test: it removes ~92 % of the pairs at a fraction of a test's cost.
SIEVE_PRIME_BOUND = 1 << 16
#: Smallest q' for which the batch membership test is sound with 128-bit random exponents
#: (the test needs the random exponents to be distinct mod q').
_MIN_COFACTOR_PRIME_BITS = 160


@dataclass(frozen=True)
class GroupParams:
    """A Schnorr group: primes p and q with q | p - 1, and g of order q mod p.

    Construct through :meth:`from_ints` (validates), :func:`generate_group` or
    :func:`insecure_test_group`; the bare constructor trusts its caller.
    ``insecure`` marks groups below the production minimums; such a group
    round-trips through serialization but :meth:`from_ints` refuses it unless
    the caller passes ``allow_insecure=True`` explicitly.
    """

    p: mpz
    q: mpz
    g: mpz
    insecure: bool = False
    _p2: mpz = field(init=False, repr=False, compare=False)
    _q_inv_mod_p: mpz = field(init=False, repr=False, compare=False)
    _derived: dict[str, bool] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("p", "q", "g"):
            object.__setattr__(self, name, mpz(getattr(self, name)))
        object.__setattr__(self, "_p2", self.p * self.p)
        # Used by the fast lift; q < p and p is prime, so q is invertible mod p.
        q_inv = gmpy2.invert(self.q % self.p, self.p) if self.p > 1 and self.q % self.p else mpz(0)
        object.__setattr__(self, "_q_inv_mod_p", q_inv)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_ints(
        cls, p: int, q: int, g: int, *, allow_insecure: bool = False, check_primes: bool = True
    ) -> GroupParams:
        """Build and validate a group; raise the typed errors on any failure."""
        group = cls(mpz(p), mpz(q), mpz(g), insecure=allow_insecure and _below_minimum(p, q))
        group.validate(allow_insecure=allow_insecure, check_primes=check_primes)
        return group

    def validate(self, *, allow_insecure: bool = False, check_primes: bool = True) -> None:
        """Check p, q prime; q | p-1; 1 < g < p; g^q = 1 mod p; sizes at or above the minimums.

        ``check_primes=False`` skips only the Miller-Rabin tests, for parameters
        this process generated itself or already validated.
        """
        p, q, g = self.p, self.q, self.g
        if p < 5 or q < 2 or p.bit_length() <= q.bit_length():
            raise InvalidParametersError("p and q must satisfy 2 <= q < p")
        if check_primes and not gmpy2.is_prime(p, PRIMALITY_ROUNDS):
            raise InvalidParametersError("p is not prime")
        if check_primes and not gmpy2.is_prime(q, PRIMALITY_ROUNDS):
            raise InvalidParametersError("q is not prime")
        if (p - 1) % q != 0:
            raise InvalidParametersError("q does not divide p - 1")
        if not 1 < g < p or gmpy2.powmod(g, q, p) != 1:
            raise InvalidParametersError("g is not an element of order q mod p")
        if _below_minimum(p, q) and not allow_insecure:
            raise InsecureParametersError(
                f"group of |p|={p.bit_length()}, |q|={q.bit_length()} bits is below the minimum "
                f"|p|>={MIN_P_BITS}, |q|>={MIN_Q_BITS}"
            )

    # -- sizes -------------------------------------------------------------------------

    @property
    def p2(self) -> mpz:
        """p squared: the modulus of the masked plaintexts E_ij."""
        return self._p2

    @property
    def element_bytes(self) -> int:
        """Fixed width of a group element (mod p) on the wire."""
        return int(self.p.bit_length() + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Fixed width of one segment ciphertext (mod p^2) on the wire."""
        return int(self._p2.bit_length() + 7) // 8

    @property
    def exponent_bytes(self) -> int:
        """Fixed width of an exponent (mod q)."""
        return int(self.q.bit_length() + 7) // 8

    @property
    def plaintext_bits(self) -> int:
        """Bits a segment plaintext may use: any value below 2^(|p|-1) is below p."""
        return int(self.p.bit_length()) - 1

    @property
    def batch_verifiable(self) -> bool:
        """True iff p = 2*q*q' + 1 with q' a prime of at least 160 bits, q' != q.

        Then the elements of a batch can be checked together (:mod:`shared.crypto.batch`).
        Derived from p and q alone, so it needs no field on the wire; the primality
        test of q' (~50 ms at 2048 bits) runs once per process and group.
        """
        cached = self._derived.get("batch")
        if cached is None:  # screen_element asks once per received element: cache on the instance
            cached = self._derived["batch"] = _cofactor_is_prime(int(self.p), int(self.q))
        return cached

    # -- elements ----------------------------------------------------------------------

    def check_range(self, x: Any, what: str = "group element") -> mpz:
        """Return ``x`` as an mpz if it is an integer with 1 < x < p, else raise."""
        try:
            value = mpz(x)
        except (TypeError, ValueError) as exc:
            raise InvalidGroupElementError(f"{what} is not an integer") from exc
        if not 1 < value < self.p:
            raise InvalidGroupElementError(f"{what} is outside 1 < x < p")
        return value

    def check_element(self, x: Any, what: str = "group element") -> mpz:
        """Return ``x`` as an mpz if 1 < x < p and x^q = 1 mod p, else raise.

        Every group element received from another party goes through here or
        through the batch checks of :mod:`shared.crypto.batch` (same acceptance):
        public keys, both E_i2 components, the challenge's A_i, responses T_i.
        """
        value = self.check_range(x, what)
        if gmpy2.powmod(value, self.q, self.p) != 1:
            raise InvalidGroupElementError(f"{what} is not in the order-q subgroup")
        return value

    def random_exponent(self) -> mpz:
        """A fresh uniformly random exponent in [1, q-1] from the OS CSPRNG."""
        return mpz(1 + secrets.randbelow(int(self.q) - 1))

    def power(self, exponent: Any) -> mpz:
        """g^exponent mod p."""
        return gmpy2.powmod(self.g, exponent, self.p)

    def lift(self, x: Any) -> mpz:
        """Map x (order q mod p) to the unique order-q element of Z_{p^2}^* congruent to x.

        Equal to x^p mod p^2 (crypto note section 1) but costs a |q|-bit instead
        of a |p|-bit exponent: with x^q = 1 + s*p (mod p^2), the element
        x * (1 + t*p) with t = -s/q mod p has order q, because
        (x(1+tp))^q = (1+sp)(1+qtp) = 1 + (s+qt)p = 1 (mod p^2), and the lift
        is unique.
        """
        p, p2 = self.p, self._p2
        s = (gmpy2.powmod(x, self.q, p2) - 1) // p
        t = (-s * self._q_inv_mod_p) % p
        return (x * (1 + t * p)) % p2

    # -- serialization -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/msgpack-friendly form: hex strings, no pickle."""
        return {
            "p": format(self.p, "x"),
            "q": format(self.q, "x"),
            "g": format(self.g, "x"),
            "insecure": self.insecure,
        }

    @classmethod
    def from_dict(cls, data: Any, *, allow_insecure: bool = False, check_primes: bool = True) -> GroupParams:
        """Inverse of :meth:`to_dict`, with full validation."""
        try:
            p, q, g = (int(str(data[k]), 16) for k in ("p", "q", "g"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParametersError("group parameters are malformed") from exc
        return cls.from_ints(p, q, g, allow_insecure=allow_insecure, check_primes=check_primes)


def _below_minimum(p: Any, q: Any) -> bool:
    return bool(mpz(p).bit_length() < MIN_P_BITS or mpz(q).bit_length() < MIN_Q_BITS)


@functools.lru_cache(maxsize=16)
def _cofactor_is_prime(p: int, q: int) -> bool:
    if q < 2 or (p - 1) % (2 * q) != 0:
        return False
    cofactor = (p - 1) // (2 * q)
    if cofactor == q or cofactor.bit_length() < _MIN_COFACTOR_PRIME_BITS:
        return False
    return bool(gmpy2.is_prime(cofactor, PRIMALITY_ROUNDS))


@functools.lru_cache(maxsize=1)
def _odd_small_primes(bound: int = SIEVE_PRIME_BOUND) -> tuple[int, ...]:
    sieve = np.ones(bound, dtype=bool)
    sieve[:2] = False
    for i in range(2, int(bound**0.5) + 1):  # ~256 iterations: the sieve of Eratosthenes
        if sieve[i]:
            sieve[i * i :: i] = False
    return tuple(int(x) for x in np.flatnonzero(sieve)[1:])  # drop 2: every candidate is odd


def _lim_lee_group(
    p_bits: int, q_bits: int, randbits: Callable[[int], int], *, insecure: bool
) -> GroupParams:
    """A group with p = 2*q*q' + 1, q a ``q_bits`` prime and q' prime, |p| = ``p_bits``.

    q' (the large one) is drawn first; then q is searched in windows of consecutive
    odd candidates, each window sieved (numpy) for both q and p = 2*q*q' + 1 by
    every small odd prime. Searching the small prime is the cheap order: a failed
    candidate costs a test of q (256 bits) far more often than one of p.
    """
    cofactor_bits = p_bits - q_bits  # |q'|, with its top bits 10 so that q can have q_bits
    top = (mpz(2) << (cofactor_bits - 2)) | mpz(randbits(cofactor_bits - 2))
    q_prime = gmpy2.next_prime(top)
    two_q_prime = 2 * q_prime
    low = max(mpz(1) << (q_bits - 1), ((mpz(1) << (p_bits - 1)) + two_q_prime - 1) // two_q_prime)
    high = min((mpz(1) << q_bits) - 1, ((mpz(1) << p_bits) - 2) // two_q_prime)
    window = min(1 << 14, int(high - low) // 4)
    if window < 64:
        raise InvalidParametersError(f"no room for q with |p| = {p_bits}, |q| = {q_bits}")
    primes = _odd_small_primes()
    while True:
        start = (low + mpz(randbits(int(high - low).bit_length())) % (high - low - 2 * window)) | 1
        alive = np.ones(window, dtype=bool)  # alive[k]: q = start + 2k is still a candidate
        four_q_prime = 2 * two_q_prime
        for s in primes:  # ~6,500 small primes: a loop over the sieve, not over candidates
            if s >= start:
                break
            # q = start + 2k = 0 (mod s)  <=>  k = -start / 2 (mod s)
            alive[(-int(start % s) * ((s + 1) // 2)) % s :: s] = False
            # p = 2q'(start + 2k) + 1 = 0 (mod s)  <=>  k = -(2q'*start + 1) / (4q') (mod s)
            inverse = int(four_q_prime % s)
            if inverse:
                alive[(-int((two_q_prime * start + 1) % s) * pow(inverse, -1, s)) % s :: s] = False
        for k in np.flatnonzero(alive).tolist():
            q = start + 2 * k
            if q == q_prime or not gmpy2.is_strong_prp(q, 2):  # q = q' only in tiny test groups
                continue
            p = two_q_prime * q + 1
            if not gmpy2.is_strong_prp(p, 2):
                continue
            if all(gmpy2.is_prime(x, PRIMALITY_ROUNDS) for x in (q, q_prime, p)):
                return _with_generator(p, q, q_prime, insecure=insecure)


def _with_generator(p: mpz, q: mpz, q_prime: mpz, *, insecure: bool) -> GroupParams:
    # Any element of order q generates the subgroup; h = 2, 3, ... is as good as a random h.
    h = mpz(2)
    while (g := gmpy2.powmod(h, 2 * q_prime, p)) == 1:
        h += 1
    group = GroupParams(p, q, g, insecure=insecure)
    group.validate(allow_insecure=insecure)
    return group


def generate_group(p_bits: int = DEFAULT_P_BITS) -> GroupParams:
    """Generate a fresh group p = 2*q*q' + 1 with |p| = ``p_bits``, |q| = 256 (about 0.1-1 s at 2048)."""
    if p_bits not in SUPPORTED_P_BITS:
        raise InvalidParametersError(f"|p| must be one of {SUPPORTED_P_BITS}, got {p_bits}")
    return _lim_lee_group(p_bits, Q_BITS, secrets.randbits, insecure=False)


def insecure_test_group(p_bits: int = 512, q_bits: int = 128, seed: int = 0) -> GroupParams:
    """A small, deterministic group of the same shape (p = 2*q*q' + 1) for tests. INSECURE.

    Deterministic in ``seed`` so known-answer tests can pin values. Marked
    ``insecure=True``; validation refuses it unless told ``allow_insecure``.
    """
    if not 16 <= q_bits or p_bits - q_bits < 40:
        raise InvalidParametersError("need q_bits >= 16 and p_bits - q_bits >= 40")
    rng = random.Random(seed)  # noqa: S311 - test-only determinism, not key material
    return _lim_lee_group(p_bits, q_bits, rng.getrandbits, insecure=True)
