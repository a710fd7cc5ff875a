"""ProtocolSum runs the real protocol (machines, wire, signatures, ledgers) and sums like the others."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum
from fedcast.shared.secure_sum import PlaintextSum, SecureSum
from fedcast.simulate import Misbehavior, ProtocolSum

N_CLIENTS = 4
LENGTH = 24
QUANTUM = 2.0**-16


@pytest.fixture(scope="module")
def params(small_group: GroupParams) -> SystemParams:
    return SystemParams(small_group, max_clients=8)


@pytest.fixture(scope="module")
def protocol(params: SystemParams) -> Iterator[ProtocolSum]:
    with ProtocolSum(params, n_clients=N_CLIENTS, workers=2, seed=0) as secure:
        yield secure


def _grid(rng: np.random.Generator, count: int, length: int = LENGTH) -> list[np.ndarray]:
    """Vectors on the encoding's grid inside the clip bound: every scheme sums them exactly."""
    return [rng.integers(-(2**17), 2**17, length) * QUANTUM for _ in range(count)]


def test_it_is_a_secure_sum(protocol: ProtocolSum) -> None:
    assert isinstance(protocol, SecureSum)
    assert protocol.name == "protocol" and protocol.workers == 2


@settings(max_examples=12)
@given(data=st.data())
def test_the_protocol_sums_within_the_fixed_point_error(protocol: ProtocolSum, data: st.DataObject) -> None:
    count = data.draw(st.integers(3, N_CLIENTS))  # the first `count` clients take part
    vectors = [
        data.draw(hnp.arrays(np.float64, LENGTH, elements=st.floats(-6, 6, allow_nan=False)))
        for _ in range(count)
    ]
    clip = protocol.params.encoding.clip
    total = protocol.sum(vectors)
    expected = np.sum([np.clip(v, -clip, clip) for v in vectors], axis=0)
    # stochastic rounding moves each value by less than one quantum
    assert np.max(np.abs(total - expected)) <= count * QUANTUM
    stats = protocol.last_round
    assert stats.n_clients == count and protocol.last_members == tuple(range(count))
    assert stats.clipped_values == sum(int(np.count_nonzero(np.abs(v) > clip)) for v in vectors)
    assert len(stats.client_seconds) == len(stats.respond_seconds) == len(stats.upload_bytes) == count
    assert protocol.last_timing.attempts == 1 and not protocol.last_timing.refusals
    assert protocol.refusals == []


def test_it_equals_elgamal_and_plaintext_on_the_same_vectors(
    protocol: ProtocolSum, params: SystemParams
) -> None:
    vectors = _grid(np.random.default_rng(3), N_CLIENTS)
    secure = protocol.sum(vectors)
    assert np.array_equal(secure, ElGamalSum(params, seed=0).sum(vectors))
    assert np.array_equal(secure, PlaintextSum().sum(vectors))
    assert protocol.last_round.clipped_values == 0


def test_every_round_delivers_a_new_model(protocol: ProtocolSum) -> None:
    zeros = [np.zeros(LENGTH) for _ in range(N_CLIENTS)]
    # an all-zero aggregate would repeat the sealed model, which every client answered for once
    for _ in range(2):
        assert np.array_equal(protocol.sum(zeros), np.zeros(LENGTH))
        assert protocol.last_timing.attempts == 1


def test_vectors_of_another_length_or_too_many_are_refused(protocol: ProtocolSum) -> None:
    with pytest.raises(ConfigurationError):
        protocol.sum(_grid(np.random.default_rng(0), N_CLIENTS, LENGTH + 1))
    with pytest.raises(ConfigurationError):
        protocol.sum(_grid(np.random.default_rng(0), N_CLIENTS + 1))
    with pytest.raises(ConfigurationError):
        protocol.sum(_grid(np.random.default_rng(0), 2))  # below the minimum online set of 3


def test_a_wrong_share_is_named_and_the_round_completes_without_it(params: SystemParams) -> None:
    vectors = _grid(np.random.default_rng(5), N_CLIENTS)
    with ProtocolSum(params, n_clients=N_CLIENTS, workers=1, misbehave={1: Misbehavior.BAD_SHARE}) as secure:
        total = secure.sum(vectors)
        # the decryption failed, the response proof named c00001, the others accepted its signed
        # response as evidence and uploaded again without it
        assert secure.last_timing.attempts == 2
        assert secure.last_members == (0, 2, 3)
        assert np.array_equal(total, vectors[0] + vectors[2] + vectors[3])


def test_a_bad_proof_makes_the_members_refuse_and_is_left_out(params: SystemParams) -> None:
    vectors = _grid(np.random.default_rng(6), N_CLIENTS)
    with ProtocolSum(params, n_clients=N_CLIENTS, workers=1, misbehave={2: "bad-proof"}) as secure:
        total = secure.sum(vectors)
        refused = secure.last_timing.refusals
        # every honest member checked c00002's proof (|S| < 90: all of them) and refused
        assert {f"c0000{i}: challenge" for i in (0, 1, 3)} <= set(refused)
        assert all(why.startswith("challenge_rejected") for why in refused.values())
        assert secure.last_members == (0, 1, 3)
        assert np.array_equal(total, vectors[0] + vectors[1] + vectors[3])


def test_close_stops_the_workers_and_is_safe_twice(params: SystemParams) -> None:
    secure = ProtocolSum(params, n_clients=3, workers=2)
    processes = [handle.process for handle in secure._workers]
    assert all(p.is_alive() for p in processes)
    secure.close()
    secure.close()
    assert all(not p.is_alive() for p in processes)
    with pytest.raises(ConfigurationError):
        secure.sum(_grid(np.random.default_rng(0), 3))
    with ProtocolSum(params, n_clients=3, workers=1) as other:
        process = other._workers[0].process
    assert not process.is_alive()


def test_the_bench_reports_every_round() -> None:
    from fedcast.bench.simulate import SimulateBenchConfig, run_simulate_bench, simulate_notes

    config = SimulateBenchConfig(
        clients=3, params=40, rounds=2, workers=1, baseline=True, insecure_test_group=True
    )
    rows = run_simulate_bench(config)
    assert [(r["scheme"], r["round"]) for r in rows] == [
        ("protocol", 1),
        ("protocol", 2),
        ("elgamal", 1),
        ("elgamal", 2),
    ]
    protocol = rows[0]
    assert protocol["max_abs_error"] <= 3 * QUANTUM and protocol["attempts"] == 1
    assert len(protocol["worker_cpu_s"]) == 1 and protocol["main_cpu_s"] > 0
    assert len(simulate_notes(config, rows)) >= 5
