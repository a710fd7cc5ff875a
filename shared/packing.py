"""Super-increasing packing of encoded vectors into big segment integers (numpy).

With the super-increasing sequence a_t = 2^(b*t) (t = 0..k-1) packing k slot
values v_t into one integer sum_t a_t * v_t is a bit concatenation, and
Algorithm 2 of the paper (repeated mod / divide by a_t) is the inverse
reshape. Both are done on whole arrays with numpy; the only Python loop is
over segments (u = ceil(n/k) of them, ~1,400 for 100,000 parameters), to turn
each segment's bytes into one integer.

The slot width b is chosen so that the sum over the largest allowed online
set cannot carry into the next slot: ``max_clients * max_value < 2^b``. That
inequality is checked when the layout is built, checked again on every
pack (each value <= max_value), and after decryption every slot sum is checked
against ``n_clients * max_value`` and the bits above the last slot against zero,
which also catches most tampering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gmpy2 import mpz
from numpy.typing import ArrayLike, NDArray

from fedcast.shared.errors import ConfigurationError, PackingError, SlotOverflowError

__all__ = ["PackingLayout"]

# Bound the temporary bit matrix when packing large models (Pi-class memory).
_CHUNK_SEGMENTS = 512


@dataclass(frozen=True)
class PackingLayout:
    """k slots of b bits per segment, for sums of at most ``max_clients`` values <= ``max_value``."""

    slot_bits: int
    slots_per_segment: int
    max_value: int
    max_clients: int

    def __post_init__(self) -> None:
        if not 1 <= self.slot_bits <= 63:
            raise ConfigurationError(f"slot_bits must be in [1, 63], got {self.slot_bits}")
        if self.slots_per_segment < 1:
            raise ConfigurationError("a segment needs at least one slot")
        if self.max_value < 1 or self.max_clients < 1:
            raise ConfigurationError("max_value and max_clients must be >= 1")
        # The no-carry bound, checked rather than assumed.
        if self.max_clients * self.max_value >= 1 << self.slot_bits:
            raise SlotOverflowError(
                f"{self.max_clients} clients x {self.max_value} needs more than "
                f"{self.slot_bits} bits per slot"
            )

    @classmethod
    def for_sum(cls, *, max_value: int, max_clients: int, plaintext_bits: int) -> PackingLayout:
        """The narrowest slots that hold ``max_clients * max_value``, as many as fit the plaintext."""
        if max_value < 1 or max_clients < 1:
            raise ConfigurationError("max_value and max_clients must be >= 1")
        slot_bits = (max_clients * max_value).bit_length()
        slots = plaintext_bits // slot_bits
        if slots < 1:
            raise SlotOverflowError(f"a {slot_bits}-bit slot does not fit a {plaintext_bits}-bit plaintext")
        return cls(slot_bits, slots, max_value, max_clients)

    @property
    def segment_bits(self) -> int:
        """Bits one packed segment can occupy: k * b."""
        return self.slot_bits * self.slots_per_segment

    @property
    def segment_bytes(self) -> int:
        return (self.segment_bits + 7) // 8

    def n_segments(self, n_values: int) -> int:
        """u = ceil(n / k)."""
        if n_values < 1:
            raise PackingError("cannot pack an empty vector")
        return -(-n_values // self.slots_per_segment)

    # -- pack --------------------------------------------------------------------------

    def pack(self, values: ArrayLike) -> list[mpz]:
        """Pack encoded values (each in [0, max_value]) into u segment integers."""
        v = np.asarray(values)
        if v.ndim != 1 or v.size == 0:
            raise PackingError(f"expected a non-empty 1-D vector, got shape {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            raise PackingError(f"expected integers, got {v.dtype}")
        if int(v.min()) < 0 or int(v.max()) > self.max_value:
            raise SlotOverflowError(f"values must lie in [0, {self.max_value}]")
        u = self.n_segments(v.size)
        k = self.slots_per_segment
        padded = np.zeros(u * k, dtype=np.uint64)
        padded[: v.size] = v
        grid = padded.reshape(u, k)
        out: list[mpz] = []
        for start in range(0, u, _CHUNK_SEGMENTS):
            rows = self._rows_to_bytes(grid[start : start + _CHUNK_SEGMENTS])
            out.extend(mpz.from_bytes(row.tobytes(), "little") for row in rows)
        return out

    def _rows_to_bytes(self, grid: NDArray[np.uint64]) -> NDArray[np.uint8]:
        b = self.slot_bits
        if b % 8 == 0:
            # Byte-aligned slots: the little-endian bytes of each value, truncated to b/8.
            le = grid.astype("<u8").view(np.uint8).reshape(grid.shape[0], grid.shape[1], 8)
            return np.ascontiguousarray(le[:, :, : b // 8]).reshape(grid.shape[0], -1)
        shifts = np.arange(b, dtype=np.uint64)
        bits = ((grid[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        return np.packbits(bits.reshape(grid.shape[0], -1), axis=1, bitorder="little")

    # -- unpack ------------------------------------------------------------------------

    def unpack(self, segments: Sequence[Any], n_values: int, *, n_clients: int) -> NDArray[np.uint64]:
        """Slot sums of ``n_clients`` packed vectors (Algorithm 2), with the no-carry checks."""
        u = self.n_segments(n_values)
        if len(segments) != u:
            raise PackingError(f"expected {u} segments for {n_values} values, got {len(segments)}")
        if not 1 <= n_clients <= self.max_clients:
            raise SlotOverflowError(f"n_clients must be in [1, {self.max_clients}]")
        raw = bytearray()
        for j, segment in enumerate(segments):
            s = mpz(segment)
            if s < 0 or s.bit_length() > self.segment_bits:
                raise SlotOverflowError(f"segment {j} has bits above its last slot")
            raw += s.to_bytes(self.segment_bytes, "little")
        rows = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(u, self.segment_bytes)
        sums = self._bytes_to_values(rows).reshape(-1)
        limit = n_clients * self.max_value
        if int(sums.max()) > limit:
            raise SlotOverflowError(f"a slot sum exceeds {n_clients} x {self.max_value}")
        if np.any(sums[n_values:]):
            raise SlotOverflowError("padding slots are not zero")
        return sums[:n_values].copy()

    def _bytes_to_values(self, rows: NDArray[np.uint8]) -> NDArray[np.uint64]:
        b, k = self.slot_bits, self.slots_per_segment
        u = rows.shape[0]
        if b % 8 == 0:
            padded = np.zeros((u, k, 8), dtype=np.uint8)
            padded[:, :, : b // 8] = rows.reshape(u, k, b // 8)
            return padded.view("<u8").reshape(u, k).astype(np.uint64)
        bits = np.unpackbits(rows, axis=1, bitorder="little")[:, : k * b].reshape(u * k, b)
        wide = np.zeros((u * k, 64), dtype=np.uint8)
        wide[:, :b] = bits
        return np.packbits(wide, axis=1, bitorder="little").view("<u8").reshape(u, k)
