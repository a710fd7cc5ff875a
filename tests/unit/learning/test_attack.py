"""Gradient leakage attack (FedMF section 4) and the secure-view precondition."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.attack import (
    AggregatorView,
    attack_feasible,
    gradient_leakage_attack,
    isolated_uploads,
    precond_leakage_attack,
    recovery_rmse,
)
from fedcast.shared.learning.data import RatingData, SyntheticConfig, make_synthetic, partition_users
from fedcast.shared.learning.fedmf import FedMF, RoundRecord
from fedcast.shared.learning.mf import MFConfig, gradient_step, init_model
from fedcast.shared.secure_sum import ExactSum

CFG = MFConfig(latent_dim=4, seed=3, optimizer="gd")


@pytest.fixture(scope="module")
def run() -> tuple[RatingData, FedMF, list[RoundRecord]]:
    data = make_synthetic(SyntheticConfig(n_users=10, n_items=25, ratings_per_user=9, seed=4))
    fed = FedMF(data, partition_users(data, seed=4), CFG, ExactSum())
    return data, fed, [fed.run_round() for _ in range(12)]


def _victim(data: RatingData, fed: FedMF, client: int) -> RatingData:
    return data.for_users(fed.clients[client].users)


@pytest.mark.parametrize("t", [0, 5, 10])
@pytest.mark.parametrize("client", [0, 7])
def test_attack_recovers_items_and_ratings(
    run: tuple[RatingData, FedMF, list[RoundRecord]], t: int, client: int
) -> None:
    data, fed, records = run
    first, second = records[t], records[t + 1]
    result = gradient_leakage_attack(
        first.uploads[client].gradient,
        second.uploads[client].gradient,
        first.item_factors,
        second.item_factors,
        CFG,
    )
    victim = _victim(data, fed, client)
    assert np.array_equal(result.rated_items, victim.items)
    assert recovery_rmse(result, victim.items, victim.ratings) < 1e-8
    assert result.consistency < 1e-10 and result.rank_one_ratio < 1e-10
    np.testing.assert_allclose(result.user_vector, _user_vector_at(data, fed, client, t), atol=1e-9)


def _user_vector_at(data: RatingData, fed: FedMF, client: int, t: int) -> np.ndarray:
    """u^t of the client's user: FedMF with exact sums is batch GD (see test_mf), so replay that."""
    model = init_model(data.n_users, data.n_items, CFG)
    for _ in range(t):
        model = gradient_step(model, data, CFG)
    vector: np.ndarray = model.user_factors[fed.clients[client].users[0]]
    return vector


def test_attack_works_on_float32_wire_values(
    run: tuple[RatingData, FedMF, list[RoundRecord]],
) -> None:
    data, fed, records = run
    wire = [r.uploads[2].gradient.astype(np.float32).astype(np.float64) for r in records[3:5]]
    result = gradient_leakage_attack(wire[0], wire[1], records[3].item_factors, records[4].item_factors, CFG)
    victim = _victim(data, fed, 2)
    assert recovery_rmse(result, victim.items, victim.ratings) < 1e-4


def test_attack_fails_on_a_sum_of_two_users(
    run: tuple[RatingData, FedMF, list[RoundRecord]],
) -> None:
    data, fed, records = run
    for t in (2, 8):
        first, second = records[t], records[t + 1]
        summed = [r.uploads[0].gradient + r.uploads[1].gradient for r in (first, second)]
        result = gradient_leakage_attack(summed[0], summed[1], first.item_factors, second.item_factors, CFG)
        for client in (0, 1):
            victim = _victim(data, fed, client)
            assert recovery_rmse(result, victim.items, victim.ratings) > 0.1
        # The server can even tell: the sum is not rank one and the rounds disagree.
        assert result.consistency > 1e-3
        assert result.rank_one_ratio > 1e-3


def test_secure_views_hold_no_isolated_upload(
    run: tuple[RatingData, FedMF, list[RoundRecord]],
) -> None:
    _, fed, records = run
    plain = [AggregatorView.plaintext(r) for r in records]
    secure = [AggregatorView.secure(r) for r in records]
    for client in range(len(fed.clients)):
        assert attack_feasible(plain, client)
        assert not attack_feasible(secure, client)
        assert isolated_uploads(secure, client) == []
    # The precondition matters: an online set of one is a plaintext upload in disguise.
    alone = [dataclasses.replace(v, online=(3,)) for v in secure[:2]]
    assert isolated_uploads(alone, 3) == [0, 1] and attack_feasible(alone, 3)
    # One isolated upload is not enough: the attack needs two consecutive ones.
    mixed = [alone[0], secure[1], alone[1]]
    assert not attack_feasible(mixed, 3)


def test_attack_preconditions() -> None:
    v = np.ones((5, 1))
    with pytest.raises(ConfigurationError):
        gradient_leakage_attack(np.ones(5), np.ones(5), v, v, dataclasses.replace(CFG, latent_dim=1))
    v2 = np.ones((5, 2))
    with pytest.raises(ConfigurationError):
        gradient_leakage_attack(np.ones(10), np.ones(10), v2, v2, dataclasses.replace(CFG, local_steps=2))
    with pytest.raises(ConfigurationError):
        gradient_leakage_attack(np.zeros(10), np.ones(10), v2, v2, CFG)
    with pytest.raises(ConfigurationError):  # it inverts eq. 9, the gd user step
        precond = dataclasses.replace(CFG, optimizer="precond")
        gradient_leakage_attack(np.ones(10), np.ones(10), v2, v2, precond)


def test_precond_uploads_leak_ratings_from_a_single_round() -> None:
    """In plaintext the default optimizer's curvature makes one upload enough (hence: sum securely)."""
    data = make_synthetic(SyntheticConfig(n_users=10, n_items=25, ratings_per_user=9, seed=4))
    cfg = MFConfig(latent_dim=4, seed=3)
    fed = FedMF(data, partition_users(data, seed=4), cfg, ExactSum())
    for _ in range(3):
        record = fed.run_round()
        upload = record.uploads[2]
        assert upload.curvature is not None
        victim = data.for_users(fed.clients[2].users)
        result = precond_leakage_attack(upload.gradient, upload.curvature, record.item_factors, cfg)
        assert np.array_equal(result.rated_items, np.sort(victim.items))
        assert recovery_rmse(result, victim.items, victim.ratings) < 1e-8
        assert result.consistency < 1e-12
    summed = record.uploads[0].curvature + record.uploads[1].curvature  # type: ignore[operator]
    both = record.uploads[0].gradient + record.uploads[1].gradient
    assert precond_leakage_attack(both, summed, record.item_factors, cfg).consistency > 0.01
