"""What every scenario runs on: the v2 modulus, the v1 target group, sizes and seeded plaintexts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from gmpy2 import mpz

from fedcast.attacks.legacy_v1 import V1Group, v1_group
from fedcast.attacks.parties import random_segments
from fedcast.shared.crypto.group import MIN_MODULUS_BITS, GroupParams
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group

__all__ = ["DEFAULT_SHORT_BITS", "AttackContext"]

#: Width of the short exponents of the short-exponent scenario (crypto note 1: 36 bits fell in 0.45 s).
DEFAULT_SHORT_BITS = 32


@dataclass
class AttackContext:
    """The v2 group under attack, the v1 group of the same size, and the scenario sizes.

    Plaintexts are drawn from seeded generators (:meth:`rng`) so that runs are
    repeatable; keys and encryption randomness come from the OS CSPRNG as in production.
    """

    group: GroupParams
    seed: int = 0
    n_segments: int = 4
    short_bits: int = DEFAULT_SHORT_BITS

    @classmethod
    def create(cls, bits: int, seed: int = 0) -> AttackContext:
        """A fresh 2048/3072-bit N (factors discarded), or below 2048 a deterministic INSECURE test N."""
        group = generate_group(bits) if bits >= MIN_MODULUS_BITS else insecure_test_group(bits, seed)
        return cls(group, seed)

    @cached_property
    def v1(self) -> V1Group:
        """Protocol v1's group with |p| = |N| (|q| = 256 as v1 used, 128 below 1024 bits). INSECURE."""
        bits = self.group.modulus_bits
        return v1_group(bits, 256 if bits >= 1024 else 128, self.seed)

    def rng(self, label: str) -> random.Random:
        return random.Random(f"{self.seed}/{label}")  # noqa: S311 - plaintext stand-ins, not keys

    def v1_segments(self, label: str, count: int | None = None) -> list[mpz]:
        return random_segments(int(self.v1.p.bit_length()) - 1, count or self.n_segments, self.rng(label))

    def v2_segments(self, label: str, count: int | None = None) -> list[mpz]:
        return random_segments(self.group.plaintext_bits, count or self.n_segments, self.rng(label))

    def describe(self) -> str:
        """The header of the text report: sizes, and what v2's security rests on (crypto note 6)."""
        bits = self.group.modulus_bits
        kind = "INSECURE deterministic test modulus" if self.group.insecure else "fresh, factors discarded"
        return (
            f"v2: {bits}-bit RSA modulus N ({kind}); v1: {int(self.v1.p.bit_length())}-bit public prime p "
            f"(INSECURE by design); {self.n_segments} data segments per upload.\n"
            "v2 rests on DCR, DDH in QR_N with 256-bit exponents, and an honest setup of N (nobody kept "
            "P, Q).\nA run that recovers nothing shows these attacks fail, not that v2 is secure."
        )
