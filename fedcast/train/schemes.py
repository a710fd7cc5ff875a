"""The secure scheme of ``fedcast train --scheme secure``.

Every round runs the real protocol with every client in this process (see
:mod:`fedcast.simulate`): the same group, encoding, packing, encryption, proofs, checks and
challenge-response decryption as the services. Only the transport is missing.

**Clip bound.** The fixed-point encoding clips every uploaded value to ``+-clip``. With
``--clip`` unset, the bound is chosen once, from the first round's uploads: the smallest
power of two at least twice their largest magnitude. It is a public parameter (a deployment
configures it); reading the first uploads to choose it is possible only because a simulation
holds all the data, and values clipped later are counted and reported every round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedcast.shared.crypto.modulus import generate_group
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.params import SystemParams
from fedcast.shared.secure_sum import RoundStats, SecureSum
from fedcast.simulate import ProtocolSum
from fedcast.train.config import TrainConfig

__all__ = ["AutoClipSum", "auto_clip", "make_scheme"]


def auto_clip(vectors: Sequence[FloatArray]) -> float:
    """The smallest power of two >= twice the largest magnitude in ``vectors`` (at least 1)."""
    largest = max(float(np.max(np.abs(v))) for v in vectors)
    if not math.isfinite(largest):
        raise ConfigurationError("the first round's uploads hold NaN or infinity")
    return float(2.0 ** math.ceil(math.log2(max(1.0, 2.0 * largest))))


class AutoClipSum:
    """A :class:`SecureSum` built on its first round, with ``clip`` or :func:`auto_clip`."""

    def __init__(self, build: Callable[[float], SecureSum], clip: float | None) -> None:
        self._build = build
        self.clip = clip
        self._inner: SecureSum | None = None

    @property
    def name(self) -> str:
        return "secure"

    @property
    def last_round(self) -> RoundStats:
        return RoundStats() if self._inner is None else self._inner.last_round

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        if self._inner is None:
            if self.clip is None:
                self.clip = auto_clip(vectors)
            self._inner = self._build(self.clip)
        return self._inner.sum(vectors)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def make_scheme(config: TrainConfig, n_clients: int) -> AutoClipSum:
    """The protocol for ``n_clients`` members (a fresh ``--modulus-bits`` group, generated here)."""
    group = generate_group(config.modulus_bits)

    def build(clip: float) -> SecureSum:
        params = SystemParams(
            group, FixedPointEncoding(config.frac_bits, clip), max_clients=max(2, n_clients)
        )
        return ProtocolSum(params, n_clients=n_clients, workers=config.workers, seed=config.seed)

    return AutoClipSum(build, config.clip)
