"""The federation's group: an RSA modulus N = PQ of unknown factorization (crypto note section 1).

Protocol version 2 works modulo an RSA modulus N whose factors P = 2p' + 1 and
Q = 2q' + 1 are safe primes that nobody keeps (:mod:`fedcast.shared.crypto.modulus`
generates them and forgets them). Two structures live there:

* the ElGamal part in QR_N, the squares mod N (order p'q', unknown to everyone):
  the generator g, client keys pk_i = g^sk_i, the aggregator's beta, and per
  upload A_i, B_i, the challenge R and the responses T_i;
* the Paillier-like part mod N^2: ``lift(x) = x^N mod N^2`` maps Z_N^* onto
  the N-th residues (a homomorphism nobody can invert without P, Q), and
  ``(1 + m N)`` carries a plaintext m < N. With a *public prime* modulus
  (protocol version 1) raising a ciphertext to the modulus stripped every mask
  (crypto note 0.1); with N of unknown factorization that needs phi(N).

Generators are never accepted from anyone: every party derives them from N by
the full-domain hash of :func:`fdh`, ``g = FDH("fedcast/v2/g", N)`` and
``h_j = FDH("fedcast/v2/h", N, federation, j)``. A hash as wide as N (plus 128
bits) gives the h_j no known or findable relation to g or to each other;
h_j = g^H(j) would bring back the linear relations of crypto note 0.2.

**The received-element rule** (:meth:`GroupParams.received_square`): an element
x received from anyone must satisfy 1 < x < N, gcd(x, N) = 1 and Jacobi
(x | N) = +1; it is then used only through ``x^2 mod N``, and refused if that
square is 1. Membership in QR_N cannot be tested without P and Q; squaring puts
every accepted value in QR_N whatever sign a sender slipped in, and refusing a
square of 1 stops the elements of order 2 (beta = N - 1 passes every other
check and would expose every s and m; ``tests/unit/crypto/test_attacks.py``).

Sizes: |N| = 2048 by default (NIST SP 800-57 Part 1 Rev. 5, Table 2: 112-bit
security), 3072 supported (128-bit). Secret exponents are uniform integers of
:data:`EXPONENT_BITS` = 256 bits: anyone can compute E^N = (H^N)^s from an
upload, so an exponent of l bits falls to baby-step giant-step in 2^(l/2)
steps (36-bit s: 0.45 s, crypto note section 1).

All arithmetic is gmpy2.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
from gmpy2 import mpz

from fedcast.shared.crypto.fixedbase import CombShape, CombTable
from fedcast.shared.errors import (
    InsecureParametersError,
    InvalidGroupElementError,
    InvalidParametersError,
    LegacyStateError,
)

__all__ = [
    "DEFAULT_MODULUS_BITS",
    "EXPONENT_BITS",
    "FDH_EXTRA_BITS",
    "MAX_MODULUS_BITS",
    "MIN_MODULUS_BITS",
    "SMALL_FACTOR_BOUND",
    "SUPPORTED_MODULUS_BITS",
    "GroupParams",
    "fdh",
    "frame",
    "validate_modulus",
]

#: Default modulus size (NIST SP 800-57 Part 1 Rev. 5, Table 2: 112-bit security).
DEFAULT_MODULUS_BITS = 2048
#: Sizes the key service generates (3072: 128-bit security).
SUPPORTED_MODULUS_BITS = (2048, 3072)
#: Smallest modulus accepted outside the explicitly insecure test groups.
MIN_MODULUS_BITS = 2048
#: Largest modulus accepted (the wire's bound on PARAMS integers, 1024 bytes).
MAX_MODULUS_BITS = 8192
#: Width of every secret exponent (sk, alpha, delta, r1, r2, s): 2^128 steps for
#: baby-step giant-step or Pollard's lambda on any one of them.
EXPONENT_BITS = 256
#: The FDH draws |N| + 128 bits before reducing mod N: the result is within 2^-128
#: of uniform in Z_N.
FDH_EXTRA_BITS = 128
#: A supplied modulus must have no prime factor below this bound (crypto note section 1).
SMALL_FACTOR_BOUND = 1 << 20

_MPZ = type(mpz(0))
#: Exponent widths the fixed-base tables of g and g^2 cover (:meth:`GroupParams.power`,
#: :meth:`GroupParams.power_square`): the r's and secrets (256 bits), and proof nonces and
#: responses (641 bits) and batch-test sums (~660 bits). Wider exponents use powmod.
_G_SHAPE = CombShape(8, 1, EXPONENT_BITS)
_G2_SHAPE = CombShape(8, 1, 704)
#: Tables of g and g^2 per modulus, built on first use (~1 ms at 2048 bits, ~70 KB each);
#: a few moduli at most (a process normally has one group).
_G_TABLES: dict[tuple[int, int], CombTable] = {}
_G_TABLES_MAX = 8
_LABEL_G = b"fedcast/v2/g"
_LABEL_H = b"fedcast/v2/h"
_FORMAT = "fedcast.group"
_VERSION = 2


def frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation (4-byte big-endian lengths): no two inputs share an encoding."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _minimal_bytes(value: Any) -> bytes:
    number = int(value)
    return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")


def fdh(n: Any, label: bytes, *parts: bytes) -> mpz:
    """The full-domain hash of crypto note section 1: a square mod N, derived from N and the inputs.

    ``H_i = SHA-256(frame(label, N, *parts) || uint32_be(i))`` for i = 0..k-1 with
    k = ceil((|N| + 128) / 256); the top |N| + 128 bits of H_0 || ... || H_(k-1),
    as a big-endian integer, reduced mod N, then squared mod N.
    """
    modulus = mpz(n)
    width = int(modulus.bit_length()) + FDH_EXTRA_BITS
    blocks = -(-width // 256)
    prefix = frame(label, _minimal_bytes(modulus), *parts)
    stream = b"".join(hashlib.sha256(prefix + i.to_bytes(4, "big")).digest() for i in range(blocks))
    x = (mpz(int.from_bytes(stream, "big")) >> (blocks * 256 - width)) % modulus
    square = x * x % modulus
    if square <= 1 or gmpy2.gcd(square, modulus) != 1:  # probability ~2^-1000 for a real N
        raise InvalidParametersError("the hash of the generator input is degenerate for this modulus")
    return square


@functools.lru_cache(maxsize=1)
def _small_primes_product(bound: int = SMALL_FACTOR_BOUND) -> mpz:
    """The product of every prime below ``bound`` (one gcd then tests them all)."""
    import numpy as np

    sieve = np.ones(bound, dtype=bool)
    sieve[:2] = False
    for i in range(2, int(bound**0.5) + 1):  # ~1,000 iterations of the sieve of Eratosthenes
        if sieve[i]:
            sieve[i * i :: i] = False
    primes = [mpz(int(p)) for p in np.flatnonzero(sieve)]
    while len(primes) > 1:  # a product tree: balanced multiplications are fast
        paired = [a * b for a, b in zip(primes[::2], primes[1::2], strict=False)]
        if len(primes) % 2:
            paired.append(primes[-1])
        primes = paired
    return primes[0]


def validate_modulus(n: Any, *, allow_insecure: bool = False) -> mpz:
    """Check an RSA modulus someone supplied (crypto note section 1); return it as an mpz.

    Size (|N| >= 2048 unless ``allow_insecure``), odd, not prime, not a perfect
    power, no prime factor below 2^20. This cannot prove that N has exactly two
    safe-prime factors, or that nobody kept them: trust in whoever set N up is
    unavoidable (docs/SECURITY.md).
    """
    try:
        modulus = mpz(n)
    except (TypeError, ValueError) as exc:
        raise InvalidParametersError("the modulus is not an integer") from exc
    bits = int(modulus.bit_length())
    if modulus < 3 or bits > MAX_MODULUS_BITS:
        raise InvalidParametersError(
            f"the modulus must be a positive integer of at most {MAX_MODULUS_BITS} bits"
        )
    if bits < MIN_MODULUS_BITS and not allow_insecure:
        raise InsecureParametersError(f"a modulus of {bits} bits is below the minimum of {MIN_MODULUS_BITS}")
    if modulus % 2 == 0:
        raise InvalidParametersError("the modulus is even")
    if gmpy2.is_prime(modulus, 40):
        # A prime modulus is protocol version 1's flaw: Z_{N^2}^* splits publicly (crypto note 0.1).
        raise InvalidParametersError("the modulus is prime: its factorization is public")
    if gmpy2.is_power(modulus):
        raise InvalidParametersError("the modulus is a perfect power")
    if gmpy2.gcd(modulus, _small_primes_product()) != 1:
        raise InvalidParametersError(f"the modulus has a prime factor below {SMALL_FACTOR_BOUND}")
    return modulus


@dataclass(frozen=True)
class GroupParams:
    """The federation's modulus N and everything derived from it (g, N^2, widths).

    Construct through :meth:`from_modulus` (validates), :func:`fedcast.shared.crypto.modulus.generate_group`
    or :func:`fedcast.shared.crypto.modulus.insecure_test_group`; the bare constructor trusts its
    caller. ``insecure`` marks test moduli below the production minimum; such a group
    round-trips through serialization but :meth:`from_dict` refuses it unless the caller
    passes ``allow_insecure=True`` explicitly.
    """

    n: mpz
    insecure: bool = False
    _n2: mpz = field(init=False, repr=False, compare=False)
    _g: mpz = field(init=False, repr=False, compare=False)
    _bases: dict[str, list[mpz]] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", mpz(self.n))
        object.__setattr__(self, "_n2", self.n * self.n)
        object.__setattr__(self, "_g", fdh(self.n, _LABEL_G))

    def __repr__(self) -> str:
        return (
            f"GroupParams(|N|={self.modulus_bits}, n={format(self.n, 'x')[:16]}..., insecure={self.insecure})"
        )

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_modulus(cls, n: Any, *, allow_insecure: bool = False) -> GroupParams:
        """Validate a modulus (:func:`validate_modulus`) and derive the group from it."""
        modulus = validate_modulus(n, allow_insecure=allow_insecure)
        return cls(modulus, insecure=int(modulus.bit_length()) < MIN_MODULUS_BITS)

    # -- sizes -------------------------------------------------------------------------

    @property
    def n2(self) -> mpz:
        """N squared: the modulus of the key and data segments."""
        return self._n2

    @property
    def modulus_bits(self) -> int:
        return int(self.n.bit_length())

    @property
    def element_bytes(self) -> int:
        """Fixed width of an element mod N on the wire."""
        return (self.modulus_bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Fixed width of one segment ciphertext mod N^2 on the wire."""
        return int(self._n2.bit_length() + 7) // 8

    @property
    def plaintext_bits(self) -> int:
        """Bits a segment plaintext may use: any value below 2^(|N|-1) is below N."""
        return self.modulus_bits - 1

    # -- generators --------------------------------------------------------------------

    @property
    def g(self) -> mpz:
        """The generator of the ElGamal part, FDH("fedcast/v2/g", N): a square, derived locally."""
        return self._g

    def segment_bases(self, federation: str, count: int) -> tuple[mpz, ...]:
        """h_1..h_count = FDH("fedcast/v2/h", N, federation, j): the data segments' PRF bases.

        Cached per federation on this instance (each costs a few SHA-256 blocks and one
        multiplication); the first ``count`` are the same whatever count is asked for.
        """
        if count < 1:
            raise InvalidParametersError("need at least one segment base")
        cached = self._bases.setdefault(federation, [])
        fed = federation.encode()
        for j in range(len(cached) + 1, count + 1):
            cached.append(fdh(self.n, _LABEL_H, fed, j.to_bytes(4, "big")))
        return tuple(cached[:count])

    # -- elements ----------------------------------------------------------------------

    def check_element(self, x: Any, what: str = "group element") -> mpz:
        """``x`` as an mpz if 1 < x < N, gcd(x, N) = 1 and Jacobi (x | N) = +1, else raise.

        The first half of the received-element rule; use :meth:`received_square` for the
        value a computation may use. One Jacobi symbol decides both conditions: it is 0
        exactly when gcd(x, N) > 1, so no separate gcd is computed.
        """
        # Only ints: mpz() would also parse "4", b"4" and truncate 4.7 or Fraction(9, 2).
        if isinstance(x, bool) or not isinstance(x, int | _MPZ):
            raise InvalidGroupElementError(f"{what} is not an integer")
        value = mpz(x)
        why = self._refusal(value)
        if why:
            raise InvalidGroupElementError(f"{what} {why}")
        return value

    def _refusal(self, value: mpz) -> str:
        if not 1 < value < self.n:
            return "is outside 1 < x < N"
        symbol = gmpy2.jacobi(value, self.n)
        if symbol == 0:
            return "shares a factor with N"
        if symbol != 1:
            return "has Jacobi symbol -1 mod N"
        return ""

    def screen_elements(
        self, values: Sequence[Any], what: Callable[[int], str]
    ) -> tuple[list[mpz], dict[int, str]]:
        """The first half of the rule for many elements: (the values as mpz, {index: why refused}).

        Same acceptance as :meth:`check_element` one by one; refused entries are returned as
        0 in the first list.
        """
        out: list[mpz] = []
        failures: dict[int, str] = {}
        n, jacobi, zero = self.n, gmpy2.jacobi, mpz(0)
        for i, x in enumerate(values):
            kind = type(x)
            exact = kind is int or kind is _MPZ
            if not exact and (isinstance(x, bool) or not isinstance(x, int | _MPZ)):
                failures[i] = f"{what(i)} is not an integer"
                out.append(zero)
                continue
            value = mpz(x)
            # The common case inline (1 < x < N, Jacobi +1); every refusal worded by _refusal.
            if 1 < value < n and jacobi(value, n) == 1:
                out.append(value)
                continue
            failures[i] = f"{what(i)} {self._refusal(value)}"
            out.append(zero)
        return out, failures

    def received_square(self, x: Any, what: str = "group element") -> mpz:
        """The received-element rule: check x, return x^2 mod N, refuse x if that square is 1."""
        return self.received(x, what)[1]

    def received(self, x: Any, what: str = "group element") -> tuple[mpz, mpz]:
        """The received-element rule, returning both (x, x^2 mod N): one check for callers needing both."""
        value = self.check_element(x, what)
        square = value * value % self.n
        if square == 1:  # x = -1 (or a root of 1 only the holder of P, Q can compute)
            raise InvalidGroupElementError(f"{what} squares to 1")
        return value, square

    def random_exponent(self, bits: int = EXPONENT_BITS) -> mpz:
        """A fresh uniform exponent in [1, 2^bits) from the OS CSPRNG."""
        return mpz(1 + secrets.randbelow((1 << bits) - 1))

    def power(self, exponent: Any) -> mpz:
        """g^exponent mod N."""
        return self._fixed_power(self._g, _G_SHAPE, exponent)

    def power_square(self, exponent: Any) -> mpz:
        """(g^2)^exponent mod N: the proofs' base G = g^2."""
        return self._fixed_power(self._g * self._g % self.n, _G2_SHAPE, exponent)

    def _fixed_power(self, base: mpz, shape: CombShape, exponent: Any) -> mpz:
        """base^exponent mod N through a comb table of ``base`` (built once per process and
        modulus) for exponents it covers; gmpy2.powmod for anything else. Same value either way."""
        kind = type(exponent)
        if (kind is int or kind is _MPZ) and 0 <= exponent and exponent.bit_length() <= shape.bits:
            key = (int(base), int(self.n))
            table = _G_TABLES.get(key)
            if table is None:
                if len(_G_TABLES) >= _G_TABLES_MAX:
                    _G_TABLES.clear()  # atomic, whatever other threads do; rebuilt on demand
                table = _G_TABLES[key] = CombTable(base, self.n, shape)
            if table.shape == shape:
                return table.pow(shape.digits(exponent).steps())
        return gmpy2.powmod(base, exponent, self.n)

    def lift(self, x: Any) -> mpz:
        """lift(x) = x^N mod N^2: the N-th residue of x (crypto note section 1)."""
        return gmpy2.powmod(x, self.n, self._n2)

    def product(self, values: Sequence[Any], modulus: Any | None = None) -> mpz:
        """prod values mod N (or mod ``modulus``)."""
        m = self.n if modulus is None else mpz(modulus)
        acc = mpz(1)
        for v in values:
            acc = acc * v % m
        return acc

    # -- serialization -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/msgpack-friendly form: hex strings, no pickle."""
        return {"format": _FORMAT, "version": _VERSION, "n": format(self.n, "x"), "insecure": self.insecure}

    @classmethod
    def from_dict(cls, data: Any, *, allow_insecure: bool = False) -> GroupParams:
        """Inverse of :meth:`to_dict`, with full validation; refuses version-1 (prime) groups."""
        if isinstance(data, dict) and "p" in data and "n" not in data:
            raise LegacyStateError(
                "this is a protocol-version-1 group (a public prime p), which hides nothing; "
                "fedcast 2 refuses it: generate a new federation (see docs/SECURITY.md)"
            )
        if not isinstance(data, dict) or data.get("format", _FORMAT) != _FORMAT:
            raise InvalidParametersError("not a fedcast group document")
        if data.get("version", _VERSION) != _VERSION:
            raise InvalidParametersError(f"unsupported group version {data.get('version')!r}")
        try:
            n = int(str(data["n"]), 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParametersError("group parameters are malformed") from exc
        return cls.from_modulus(n, allow_insecure=allow_insecure)
