"""One aggregation round of a scheme, with every party simulated in this process.

:class:`SecureSum` is the seam between the learning code (``fedcast.shared.learning``)
and the crypto core: a federated algorithm hands it one float vector per
client and gets back their sum, computed exactly the way the scheme computes
it (fixed-point encoding, clipping, packing, encryption, aggregation,
challenge-response, decryption). Swapping the scheme therefore changes only
numerical noise (quantization) and cost, never the learning code.

The services do not use this module: they run the same primitives split across
processes. This module exists for the library-level experiments (parity,
benchmarks) where a broker would only add noise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedcast.shared.errors import ConfigurationError

__all__ = ["ExactSum", "FloatArray", "PlaintextSum", "RoundStats", "SecureSum", "check_vectors"]

FloatArray = NDArray[np.float64]


@dataclass
class RoundStats:
    """What one call of :meth:`SecureSum.sum` cost, for benchmarks and reports."""

    n_clients: int = 0
    n_params: int = 0
    client_seconds: list[float] = field(default_factory=list)  # encode + pack + encrypt, per client
    respond_seconds: list[float] = field(default_factory=list)  # check R + compute T_i (ElGamal only)
    upload_bytes: list[int] = field(default_factory=list)
    aggregate_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    clipped_values: int = 0


@runtime_checkable
class SecureSum(Protocol):
    """Sum one float vector per client through an aggregation scheme."""

    @property
    def name(self) -> str:
        """Short scheme name used in reports: ``plaintext``, ``paillier``, ``elgamal``."""
        ...

    @property
    def last_round(self) -> RoundStats:
        """Costs of the most recent :meth:`sum` call."""
        ...

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        """Return the element-wise sum of ``vectors`` (all of one length, at least one)."""
        ...


def check_vectors(vectors: Sequence[FloatArray], *, min_clients: int = 1) -> int:
    """Validate a round's inputs and return their common length."""
    if len(vectors) < min_clients:
        raise ConfigurationError(f"a round needs at least {min_clients} client vectors, got {len(vectors)}")
    lengths = {np.shape(v) for v in vectors}
    if len(lengths) != 1:
        raise ConfigurationError(f"client vectors differ in shape: {sorted(lengths)}")
    (shape,) = lengths
    if len(shape) != 1 or shape[0] == 0:
        raise ConfigurationError(f"client vectors must be non-empty 1-D arrays, got shape {shape}")
    return int(shape[0])


class PlaintextSum:
    """No protection at all: clients upload float32 vectors, the server adds them.

    The float32 wire type is what an unprotected FedAvg deployment sends, so the
    byte counts are the honest baseline; the sum itself is taken in float64 from
    the float32 values, as a server would.
    """

    def __init__(self) -> None:
        self._last = RoundStats()

    @property
    def name(self) -> str:
        return "plaintext"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        n = check_vectors(vectors)
        stats = RoundStats(n_clients=len(vectors), n_params=n)
        uploads: list[bytes] = []
        for vector in vectors:
            start = time.perf_counter()
            uploads.append(np.asarray(vector, dtype="<f4").tobytes())
            stats.client_seconds.append(time.perf_counter() - start)
            stats.upload_bytes.append(len(uploads[-1]))
        start = time.perf_counter()
        total = np.zeros(n, dtype=np.float64)
        for blob in uploads:
            total += np.frombuffer(blob, dtype="<f4")
        stats.aggregate_seconds = time.perf_counter() - start
        self._last = stats
        return total


class ExactSum:
    """A :class:`SecureSum` that adds float64 vectors exactly as given (no wire format).

    Not a deployment scheme: it is the reference that makes FedMF bit-comparable
    with centralized MF, since :class:`PlaintextSum` rounds uploads to float32.
    """

    def __init__(self) -> None:
        self._last = RoundStats()

    @property
    def name(self) -> str:
        return "exact"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        n = check_vectors(vectors)
        self._last = RoundStats(n_clients=len(vectors), n_params=n)
        total: FloatArray = np.sum([np.asarray(v, dtype=np.float64) for v in vectors], axis=0)
        return total
