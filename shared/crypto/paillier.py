"""Paillier baseline (python-paillier), one ciphertext per value as in the FedMF paper.

Used only by benchmarks and parity experiments to compare schemes on identical
work. Values are the same fixed-point encodings the ElGamal scheme packs
(non-negative ints), so both schemes sum exactly the same integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gmpy2
from gmpy2 import mpz
from phe import paillier

from fedcast.shared.errors import CiphertextShapeError, ConfigurationError

__all__ = ["DEFAULT_PAILLIER_BITS", "PaillierKeys"]

#: 2048-bit modulus: the same factoring-based security level as the 2048-bit group.
DEFAULT_PAILLIER_BITS = 2048


class PaillierKeys:
    """A Paillier key pair with integer-vector encrypt, homomorphic add and decrypt."""

    def __init__(self, n_bits: int = DEFAULT_PAILLIER_BITS) -> None:
        if n_bits < 512:
            raise ConfigurationError("Paillier modulus below 512 bits")
        self.public, self._private = paillier.generate_paillier_keypair(n_length=n_bits)
        self.n_bits = n_bits
        self.nsquare = mpz(self.public.nsquare)

    def __repr__(self) -> str:
        return f"PaillierKeys(n_bits={self.n_bits}, private=<redacted>)"

    @property
    def ciphertext_bytes(self) -> int:
        return int(self.nsquare.bit_length() + 7) // 8

    def encrypt(self, values: Sequence[Any]) -> list[mpz]:
        """One ciphertext per non-negative integer value (phe uses gmpy2 internally)."""
        n = self.public.n
        out = []
        for v in values:
            iv = int(v)
            if not 0 <= iv < n:
                raise CiphertextShapeError("Paillier plaintext outside [0, n)")
            out.append(mpz(self.public.raw_encrypt(iv)))
        return out

    def add_into(self, accumulator: list[mpz], ciphertexts: Sequence[Any]) -> None:
        """accumulator[i] *= c_i mod n^2 (homomorphic addition), in place."""
        if len(accumulator) != len(ciphertexts):
            raise CiphertextShapeError("ciphertext vector length differs from the accumulator")
        ns = self.nsquare
        for i, c in enumerate(ciphertexts):
            accumulator[i] = gmpy2.f_mod(accumulator[i] * c, ns)

    def decrypt(self, ciphertexts: Sequence[Any]) -> list[int]:
        return [int(self._private.raw_decrypt(int(c))) for c in ciphertexts]
