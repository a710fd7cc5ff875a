"""The learning core through the real multi-key ElGamal scheme (small test group for speed)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcast.shared.crypto.elgamal import Aggregation, AttemptContext, OnlineSet
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import OnlineSetTooSmallError
from fedcast.shared.learning.data import SyntheticConfig, make_synthetic, partition_users, train_test_split
from fedcast.shared.learning.experiments import run_attack_demo
from fedcast.shared.learning.features import make_defect_features, partition_iid
from fedcast.shared.learning.features import train_test_split as split_features
from fedcast.shared.learning.fedavg import FedAvgConfig, run_fedavg
from fedcast.shared.learning.fedmf import train_federated
from fedcast.shared.learning.mf import MFConfig, evaluate
from fedcast.shared.learning.models import MLP
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum
from fedcast.shared.secure_sum import PlaintextSum


def _elgamal(group: GroupParams, clip: float = 8.0) -> ElGamalSum:
    return ElGamalSum(SystemParams(group, FixedPointEncoding(16, clip), max_clients=64), seed=0)


def test_secure_fedmf_matches_plaintext_within_half_a_percent(small_group: GroupParams) -> None:
    data = make_synthetic(SyntheticConfig(n_users=24, n_items=30, seed=1))
    train, test = train_test_split(data, test_fraction=0.2, seed=1)
    partition = partition_users(train, users_per_client=2, seed=1)  # several users per edge node
    config = MFConfig(latent_dim=4, epochs=80, seed=1)
    plain = evaluate(train_federated(train, partition, config, PlaintextSum()), test)
    secure = _elgamal(small_group, 16.0)  # two users per client: item gradients reach ~9
    sec = evaluate(train_federated(train, partition, config, secure), test)
    assert secure.clipped_total == 0
    assert abs(sec.rmse - plain.rmse) / plain.rmse < 0.005
    assert abs(sec.mae - plain.mae) / plain.mae < 0.005


def test_secure_fedavg_matches_plaintext(small_group: GroupParams) -> None:
    data = make_defect_features(900, seed=2)
    train_idx, test_idx = split_features(data.y, seed=2)
    pool = data.subset(train_idx)
    clients = [pool.subset(p) for p in partition_iid(pool.n_samples, 6, seed=2)]
    config = FedAvgConfig(rounds=8, clients_per_round=4, local_epochs=1, batch_size=32, learning_rate=0.1)
    plain = run_fedavg(MLP(16, 8, seed=0), clients, data.subset(test_idx), PlaintextSum(), config)
    secure = run_fedavg(
        MLP(16, 8, seed=0), clients, data.subset(test_idx), _elgamal(small_group, 4.0), config
    )
    # Only quantization (2^-16) separates the two runs.
    np.testing.assert_allclose(secure.params, plain.params, atol=1e-3)
    assert abs(secure.history[-1].test_accuracy - plain.history[-1].test_accuracy) <= 0.02


def test_attack_has_no_input_under_elgamal(small_group: GroupParams) -> None:
    result = run_attack_demo(0, secure=_elgamal(small_group))
    assert result["recovery_rmse"] < 1e-5  # plaintext FedMF: ratings recovered
    assert result["plaintext_attack_feasible"] and not result["secure_attack_feasible"]
    assert result["secure_online_set_size"] >= 2
    assert result["secure_aggregate_recovery_rmse"] > 0.3  # the decrypted sums do not reveal them


def test_the_aggregator_cannot_form_a_one_client_aggregate(small_group: GroupParams) -> None:
    kp = ClientKeyPair.generate(small_group)
    alone = OnlineSet.from_registry(small_group, {"only": kp.public})
    context = AttemptContext("simulation", bytes(32), 1, 0, alone.members)
    with pytest.raises(OnlineSetTooSmallError):
        Aggregation(alone, context, 1)
    with pytest.raises(OnlineSetTooSmallError):
        Aggregation(alone, context, 1, min_online=1)  # never below two members
