"""Schnorr group parameters (p, q, g): generation, validation, element checks, the lift.

The scheme works in the order-q subgroup of Z_p^* (ElGamal part) and in the
order-q subgroup of Z_{p^2}^* (the Paillier-like masked plaintexts). Sizes:

* |p| = 2048 bits by default, 3072 supported. NIST SP 800-57 Part 1 Rev. 5,
  Table 2, rates finite-field groups with |p| = 2048 / |q| = 224 at 112-bit
  security and |p| = 3072 / |q| = 256 at 128-bit; we use |q| = 256 in both so
  that exponents never limit the security level. The paper's kappa_1 = 512 is
  refused: anything below :data:`MIN_P_BITS` exists only through
  :func:`insecure_test_group`, which tests use for speed.
* Parameter generation uses OpenSSL's FIPS 186-4 DSA domain-parameter
  generation (through ``cryptography``), which yields exactly such a group.

All arithmetic is gmpy2: it is the hot path of every party.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import Any

import gmpy2
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
    "SUPPORTED_P_BITS",
    "GroupParams",
    "generate_group",
    "insecure_test_group",
]

#: Default modulus size (NIST SP 800-57 Part 1 Rev. 5, Table 2: 112-bit security).
DEFAULT_P_BITS = 2048
#: Sizes ``generate_group`` produces (those OpenSSL's DSA parameter generation supports).
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

    # -- elements ----------------------------------------------------------------------

    def check_element(self, x: Any, what: str = "group element") -> mpz:
        """Return ``x`` as an mpz if 1 < x < p and x^q = 1 mod p, else raise.

        Every group element received from another party goes through here:
        public keys, both E_i2 components, the challenge R, responses T_i.
        """
        try:
            value = mpz(x)
        except (TypeError, ValueError) as exc:
            raise InvalidGroupElementError(f"{what} is not an integer") from exc
        if not 1 < value < self.p:
            raise InvalidGroupElementError(f"{what} is outside 1 < x < p")
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


def generate_group(p_bits: int = DEFAULT_P_BITS) -> GroupParams:
    """Generate a fresh group with |p| = ``p_bits`` and |q| = 256 (about 0.3 s for 2048)."""
    # Imported here: only the key service generates groups.
    from cryptography.hazmat.primitives.asymmetric import dsa

    if p_bits not in SUPPORTED_P_BITS:
        raise InvalidParametersError(f"|p| must be one of {SUPPORTED_P_BITS}, got {p_bits}")
    numbers = dsa.generate_parameters(key_size=p_bits).parameter_numbers()
    group = GroupParams(mpz(numbers.p), mpz(numbers.q), mpz(numbers.g))
    if group.q.bit_length() != Q_BITS:  # OpenSSL picks 256 for these sizes; check, not assume
        raise InvalidParametersError(f"generated |q| = {group.q.bit_length()}, expected {Q_BITS}")
    group.validate()
    return group


def insecure_test_group(p_bits: int = 512, q_bits: int = 128, seed: int = 0) -> GroupParams:
    """A small, deterministic Schnorr group for tests. INSECURE: never use in a deployment.

    Deterministic in ``seed`` so known-answer tests can pin values. Marked
    ``insecure=True``; validation refuses it unless told ``allow_insecure``.
    """
    if not 16 <= q_bits < p_bits:
        raise InvalidParametersError("need 16 <= q_bits < p_bits")
    rng = random.Random(seed)  # noqa: S311 - test-only determinism, not key material
    q = gmpy2.next_prime(mpz(rng.getrandbits(q_bits)) | (mpz(1) << (q_bits - 1)))
    while q.bit_length() != q_bits:
        q = gmpy2.next_prime(mpz(rng.getrandbits(q_bits)) | (mpz(1) << (q_bits - 1)))
    while True:
        k = mpz(rng.getrandbits(p_bits - q_bits)) | (mpz(1) << (p_bits - q_bits - 1))
        p = k * q + 1
        if p.bit_length() == p_bits and gmpy2.is_prime(p, PRIMALITY_ROUNDS):
            break
    h = mpz(2)
    while (g := gmpy2.powmod(h, (p - 1) // q, p)) == 1:
        h += 1
    group = GroupParams(p, q, g, insecure=True)
    group.validate(allow_insecure=True)
    return group
