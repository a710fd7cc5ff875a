"""Fixed-point encoding of float vectors into non-negative integers (numpy, no crypto).

A value x is clipped to [-C, C] (every clipped value is counted and reported,
never silent), scaled by 2^f, rounded stochastically (floor(x*2^f + U), U
uniform in [0, 1): unbiased, so quantization noise averages out over clients
and rounds instead of drifting), and offset by Q = ceil(C * 2^f) so every
encoded value lies in [0, 2Q]. A sum of n encoded vectors is decoded by
removing n*Q and dividing by 2^f; the aggregator knows n = |S|.

Kept apart from packing and encryption (the layout python-paillier uses for
its ``EncodedNumber``): encoding owns the numbers, packing owns the bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedcast.shared.errors import ConfigurationError, EncodingError

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_FRAC_BITS",
    "EncodedVector",
    "FixedPointEncoding",
]

#: Fraction bits: resolution 2^-16 ~ 1.5e-5, far below SGD noise for the models we train.
DEFAULT_FRAC_BITS = 16
#: Clip bound C: per-coordinate gradients/updates beyond +-4 are clipped (and counted).
DEFAULT_CLIP = 4.0
# Encoded values must leave headroom in uint64/int64 for sums over many clients.
_MAX_Q_BITS = 40


@dataclass(frozen=True)
class EncodedVector:
    """Encoded integers in [0, 2Q] plus how many inputs were clipped."""

    values: NDArray[np.uint64]
    clipped: int


@dataclass(frozen=True)
class FixedPointEncoding:
    """Clip to +-``clip``, scale by 2^``frac_bits``, round stochastically, offset to >= 0."""

    frac_bits: int = DEFAULT_FRAC_BITS
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 32:
            raise ConfigurationError(f"frac_bits must be an int in [0, 32], got {self.frac_bits!r}")
        if not (isinstance(self.clip, int | float) and math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be a finite number > 0, got {self.clip!r}")
        if self.offset.bit_length() > _MAX_Q_BITS:
            raise ConfigurationError("clip * 2^frac_bits is too large to encode")

    @property
    def scale(self) -> float:
        """2^frac_bits."""
        return float(1 << self.frac_bits)

    @property
    def offset(self) -> int:
        """Q = ceil(C * 2^f): added to every value so encodings are non-negative."""
        return math.ceil(self.clip * (1 << self.frac_bits))

    @property
    def max_encoded(self) -> int:
        """Largest encoded value of one client: 2Q."""
        return 2 * self.offset

    def encode(self, values: ArrayLike, rng: np.random.Generator | None = None) -> EncodedVector:
        """Encode a float vector; ``rng`` drives the stochastic rounding (fresh entropy if None)."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise EncodingError(f"expected a 1-D vector, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise EncodingError("vector contains NaN or infinity")
        rng = rng if rng is not None else np.random.default_rng()
        clipped = int(np.count_nonzero(np.abs(x) > self.clip))
        scaled = np.clip(x, -self.clip, self.clip) * self.scale
        floor = np.floor(scaled)
        rounded = floor + (rng.random(x.shape) < (scaled - floor))
        q = self.offset
        # Rounding up from just below C*2^f can reach ceil(C*2^f) = Q, never beyond.
        encoded = np.clip(rounded + q, 0, 2 * q).astype(np.uint64)
        return EncodedVector(encoded, clipped)

    def decode_sum(self, sums: ArrayLike, n_clients: int) -> NDArray[np.float64]:
        """Decode the slot-wise sum of ``n_clients`` encoded vectors back to floats."""
        if n_clients < 1:
            raise EncodingError("a sum needs at least one client")
        s = np.asarray(sums, dtype=np.uint64)
        if s.size and int(s.max()) > n_clients * self.max_encoded:
            raise EncodingError("a slot sum exceeds n_clients * 2Q: not a sum of encodings")
        signed = s.astype(np.int64) - np.int64(n_clients * self.offset)
        return signed.astype(np.float64) / self.scale

    def decode(self, encoded: ArrayLike) -> NDArray[np.float64]:
        """Decode one client's encoding (the quantized value the scheme actually carries)."""
        return self.decode_sum(encoded, 1)
