"""Every scheme behind SecureSum computes the same sum of the same quantized inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import RESPONSE_BITS
from fedcast.shared.errors import ConfigurationError, LegacyStateError
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum, PaillierSum
from fedcast.shared.secure_sum import PlaintextSum, SecureSum


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
    # v2 upload: the key segment K_i and u data segments mod N^2; A_i, B_i and the proof's t mod N;
    # the proof's response z in a fixed 65-byte bin (513 bits).
    ciphertexts, elements, response = (u + 1) * 128, 3 * 64, 65
    assert (small_group.ciphertext_bytes, small_group.element_bytes) == (128, 64)
    assert (RESPONSE_BITS + 7) // 8 == response
    assert stats.upload_bytes == [ciphertexts + elements + response] * 3
    assert len(stats.client_seconds) == len(stats.respond_seconds) == 3
    assert stats.aggregate_seconds > 0 and stats.decrypt_seconds > 0
    assert stats.n_clients == 3 and stats.n_params == 100 and stats.clipped_values == 0
    assert isinstance(elgamal, SecureSum)


def test_elgamal_rounds_are_independent(elgamal: ElGamalSum) -> None:
    """Each call is a new model (fresh digest): the same clients answer every round."""
    vectors = [np.full(7, 0.5), np.full(7, -0.25), np.full(7, 1.0)]
    first = elgamal.sum(vectors)
    second = elgamal.sum(vectors)
    assert np.allclose(first, 1.25, atol=3 / elgamal.params.encoding.scale)
    assert np.allclose(second, first, atol=3 / elgamal.params.encoding.scale)


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
    with pytest.raises(LegacyStateError):  # written by protocol version 1: refused, never converted
        SystemParams.from_dict({**params.to_dict(), "version": 1}, allow_insecure=True)
    assert params.layout.max_clients * params.layout.max_value < 2**params.layout.slot_bits
