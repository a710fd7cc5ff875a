"""INSECURE: protocol version 1's construction, re-implemented only as a target for the attacks.

Do not use it for anything else. Nothing in ``shared/`` or ``services/`` may import
it (tests/unit/attacks/test_isolation.py checks). It follows ``shared/crypto`` as of
commit eeb081a (elgamal.py, group.py, keys.py) in the points the attacks need:

* a public Schnorr group: primes p, q with q | p - 1, g of order q mod p;
* per-segment aggregator keys alpha_j, beta_j = g^alpha_j, one r1 for all segments::

      E_ij = (1 + m_j p) * lift(beta_j)^r1   mod p^2,   lift(x) = x^p mod p^2
      A_i = g^r2,  B_i = g^r1 * pk_S^r2       mod p

* the challenge R = prod A_i answered with T_i = R^sk_i after the v1 checks (the
  list is S, own A unchanged, elements in the order-q subgroup, R the product), at
  most once per **attempt**; the aggregator checks only that each T_i is in the
  subgroup, so a wrong share fails the round without naming anyone;
* decryption M_j = L(prod_i E_ij * lift(d / T)^-alpha_j mod p^2), L strict.

The group is generated small and deterministically for speed: INSECURE by design.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
from gmpy2 import mpz

from fedcast.shared.errors import (
    ChallengeRejectedError,
    DecryptionError,
    InvalidGroupElementError,
    ProtocolOrderError,
)

__all__ = ["V1Aggregation", "V1AggregatorKey", "V1Attempt", "V1Ciphertext", "V1Client", "V1Group", "v1_group"]


@dataclass(frozen=True)
class V1Group:
    """A Schnorr group (p, q, g): everything about it is public, p included."""

    p: mpz
    q: mpz
    g: mpz

    @property
    def p2(self) -> mpz:
        return self.p * self.p

    def random_exponent(self) -> mpz:
        return mpz(1 + secrets.randbelow(int(self.q) - 1))

    def power(self, exponent: Any) -> mpz:
        return gmpy2.powmod(self.g, exponent, self.p)

    def lift(self, x: Any) -> mpz:
        """The order-q element of Z_{p^2}^* congruent to x (x of order q mod p): x^p mod p^2."""
        return gmpy2.powmod(x, self.p, self.p2)

    def in_subgroup(self, x: Any) -> bool:
        """The only check v1 could make of a received element: 1 < x < p and x^q = 1 mod p."""
        value = mpz(x)
        return bool(1 < value < self.p and gmpy2.powmod(value, self.q, self.p) == 1)


def v1_group(bits: int = 512, q_bits: int = 128, seed: int = 0) -> V1Group:
    """A deterministic group p = k q + 1 with |p| = ``bits`` and |q| = ``q_bits``. INSECURE."""
    rng = random.Random(seed)  # noqa: S311 - an attack target, not key material
    q = gmpy2.next_prime(mpz(rng.getrandbits(q_bits - 1)) | (mpz(1) << (q_bits - 1)))
    k_bits = bits - q_bits
    while True:
        k = (mpz(rng.getrandbits(k_bits - 1)) | (mpz(1) << (k_bits - 1))) & ~mpz(1)
        p = k * q + 1
        if p.bit_length() == bits and gmpy2.is_prime(p, 30):
            break
    h = mpz(2)
    while (g := gmpy2.powmod(h, (p - 1) // q, p)) == 1:
        h += 1
    return V1Group(p, q, g)


@dataclass(frozen=True)
class V1AggregatorKey:
    """alpha_1..alpha_u (the aggregator's) and beta_j = g^alpha_j (public)."""

    alphas: tuple[mpz, ...]
    betas: tuple[mpz, ...]

    @classmethod
    def generate(cls, group: V1Group, n_segments: int) -> V1AggregatorKey:
        alphas = tuple(group.random_exponent() for _ in range(n_segments))
        return cls(alphas, tuple(group.power(a) for a in alphas))


@dataclass(frozen=True)
class V1Ciphertext:
    segments: tuple[mpz, ...]
    first: mpz  # A_i = g^r2
    second: mpz  # B_i = g^r1 * pk_S^r2


@dataclass
class V1Attempt:
    """What a v1 client kept between upload and challenge: one answer per *attempt*."""

    client_id: str
    attempt: int
    members: tuple[str, ...]
    first: mpz
    answered: bool = field(default=False)


class V1Client:
    """A v1 client: encrypts under the per-segment betas, answers one challenge per attempt."""

    def __init__(self, group: V1Group, client_id: str, key: V1AggregatorKey) -> None:
        self.group = group
        self.client_id = client_id
        self._secret = group.random_exponent()
        self.public = group.power(self._secret)
        self._bases = [group.lift(b) for b in key.betas]

    def encrypt(
        self, segments: Sequence[Any], keys: Mapping[str, Any], attempt: int
    ) -> tuple[V1Ciphertext, V1Attempt]:
        group = self.group
        p, p2 = group.p, group.p2
        pk_s = mpz(1)
        for pk in keys.values():
            pk_s = pk_s * mpz(pk) % p
        r1, r2 = group.random_exponent(), group.random_exponent()
        body = tuple(
            (1 + mpz(m) * p) * gmpy2.powmod(b, r1, p2) % p2
            for m, b in zip(segments, self._bases, strict=True)
        )
        first = group.power(r2)
        second = group.power(r1) * gmpy2.powmod(pk_s, r2, p) % p
        return V1Ciphertext(body, first, second), V1Attempt(
            self.client_id, attempt, tuple(sorted(keys)), first
        )

    def respond(self, attempt: V1Attempt, challenge: Any, firsts: Mapping[str, Any]) -> mpz:
        """v1's checks of the challenge (no proofs, no memory of earlier attempts), then T_i = R^sk_i."""
        group = self.group
        if attempt.answered:
            raise ChallengeRejectedError("this attempt's challenge was already answered")
        if set(firsts) != set(attempt.members) or mpz(firsts[attempt.client_id]) != attempt.first:
            raise ChallengeRejectedError("the challenge does not list S with our own A")
        r = mpz(1)
        for m in attempt.members:
            if not group.in_subgroup(firsts[m]):
                raise ChallengeRejectedError(f"A of {m!r} is not in the subgroup")
            r = r * mpz(firsts[m]) % group.p
        if r != mpz(challenge):
            raise ChallengeRejectedError("R is not the product of the first components")
        attempt.answered = True
        return gmpy2.powmod(r, self._secret, group.p)


class V1Aggregation:
    """The v1 aggregator's fold and decryption for one attempt."""

    def __init__(self, group: V1Group, key: V1AggregatorKey, members: Sequence[str]) -> None:
        self.group = group
        self._key = key
        self.members = tuple(sorted(members))
        self._e = [mpz(1)] * len(key.alphas)
        self._d = mpz(1)
        self._t = mpz(1)
        self._firsts: dict[str, mpz] = {}
        self._shares: dict[str, mpz] = {}
        self.culprits: dict[str, str] = {}

    def add_upload(self, client_id: str, ciphertext: V1Ciphertext) -> None:
        p, p2 = self.group.p, self.group.p2
        self._e = [a * e % p2 for a, e in zip(self._e, ciphertext.segments, strict=True)]
        self._d = self._d * ciphertext.second % p
        self._firsts[client_id] = mpz(ciphertext.first)

    def challenge(self) -> tuple[mpz, dict[str, mpz]]:
        if set(self._firsts) != set(self.members):
            raise ProtocolOrderError("uploads missing")
        r = mpz(1)
        for a in self._firsts.values():
            r = r * a % self.group.p
        return r, dict(self._firsts)

    def add_response(self, client_id: str, share: Any) -> None:
        """v1 screened a share for subgroup membership only: any wrong T_i of order q passes."""
        if not self.group.in_subgroup(share):
            self.culprits[client_id] = "T is not in the order-q subgroup"
            raise InvalidGroupElementError(f"T of {client_id!r} is not in the order-q subgroup")
        self._shares[client_id] = mpz(share)
        self._t = self._t * mpz(share) % self.group.p

    def decrypt(self) -> list[mpz]:
        group = self.group
        p, p2 = group.p, group.p2
        if set(self._shares) != set(self.members):
            raise ProtocolOrderError("responses missing")
        x = group.lift(self._d * gmpy2.invert(self._t, p) % p)
        sums = []
        for j, (e, alpha) in enumerate(zip(self._e, self._key.alphas, strict=True)):
            y = e * gmpy2.powmod(x, group.q - alpha, p2) % p2
            if y % p != 1:
                raise DecryptionError(f"segment {j} did not decrypt (wrong key, share or tampering)")
            sums.append((y - 1) // p)
        return sums
