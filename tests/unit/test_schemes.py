"""Every scheme behind SecureSum computes the same sum of the same quantized inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.crypto.group import GroupParams
from shared.errors import ConfigurationError
from shared.params import SystemParams
from shared.schemes import ElGamalSum, PaillierSum
from shared.secure_sum import PlaintextSum, SecureSum


@pytest.fixture(scope="module")
def elgamal(small_group: GroupParams) -> ElGamalSum:
    return ElGamalSum(SystemParams(small_group, max_clients=8), seed=0)


@pytest.fixture(scope="module")
def paillier() -> PaillierSum:
    return PaillierSum(n_bits=512, seed=0)


@given(data=st.data())
def test_elgamal_and_paillier_sum_identically(
    elgamal: ElGamalSum, paillier: PaillierSum, data: st.DataObject
) -> None:
    n_clients = data.draw(st.integers(2, 5))
    n = data.draw(st.integers(1, 60))
    vectors = [
        data.draw(hnp.arrays(np.float64, n, elements=st.floats(-6, 6, allow_nan=False)))
        for _ in range(n_clients)
    ]
    seed = data.draw(st.integers(0, 1000))
    elgamal._rng = np.random.default_rng(seed)
    paillier._rng = np.random.default_rng(seed)
    a, b = elgamal.sum(vectors), paillier.sum(vectors)
    assert np.array_equal(a, b)  # same rounding stream -> the very same integers summed
    clip = elgamal.params.encoding.clip
    exact = np.sum([np.clip(v, -clip, clip) for v in vectors], axis=0)
    assert np.all(np.abs(a - exact) <= n_clients / elgamal.params.encoding.scale)
    assert elgamal.last_round.clipped_values == sum(int(np.count_nonzero(np.abs(v) > clip)) for v in vectors)


def test_plaintext_sum_and_stats() -> None:
    scheme = PlaintextSum()
    vectors = [np.arange(4.0), np.ones(4)]
    assert np.array_equal(scheme.sum(vectors), np.arange(4.0) + 1)
    assert scheme.last_round.upload_bytes == [16, 16]
    assert isinstance(scheme, SecureSum)


def test_elgamal_stats_and_wire_size(elgamal: ElGamalSum, small_group: GroupParams) -> None:
    vectors = [np.zeros(100), np.zeros(100), np.zeros(100)]
    elgamal.sum(vectors)
    stats = elgamal.last_round
    u = elgamal.params.n_segments(100)
    assert stats.upload_bytes == [u * small_group.ciphertext_bytes + 2 * small_group.element_bytes] * 3
    assert len(stats.client_seconds) == 3 and stats.aggregate_seconds > 0 and stats.decrypt_seconds > 0
    assert isinstance(elgamal, SecureSum)


def test_elgamal_refuses_single_client_and_mismatched_vectors(elgamal: ElGamalSum) -> None:
    with pytest.raises(ConfigurationError):
        elgamal.sum([np.ones(3)])
    with pytest.raises(ConfigurationError):
        elgamal.sum([np.ones(3), np.ones(4)])
    with pytest.raises(ConfigurationError):
        elgamal.sum([np.ones(3)] * 9)  # above max_clients


def test_system_params_round_trip(small_group: GroupParams) -> None:
    params = SystemParams(small_group, max_clients=50)
    assert SystemParams.from_dict(params.to_dict(), allow_insecure=True) == params
    assert params.layout.max_clients * params.layout.max_value < 2**params.layout.slot_bits
