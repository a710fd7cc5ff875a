"""A model plugin (``--task package.module:Name``) trains through the real services and broker."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from fedcast.services.aggregator.checkpoint import CheckpointStore
from fedcast.services.aggregator.service import AggregatorService
from fedcast.shared.learning.plugin import plugin_initial_model
from fedcast.shared.learning.tasks import TaskSpec

from .conftest import MakeFederation
from .helpers import FAST_ROUNDS, bounded

pytestmark = pytest.mark.broker

PLUGIN = TaskSpec(name="examples.sklearn_defects:Client", seed=7)


class _NoReplay:
    """The helpers' plaintext replay models FedMF only; this test checks the model itself."""

    def step(self, round_id: int, members: Sequence[str]) -> None:
        del round_id, members


async def test_a_sklearn_plugin_trains_over_the_broker(federation: MakeFederation) -> None:
    """Key service + aggregator + 3 edges running ``examples.sklearn_defects:Client``.

    Proves: the plugin's name crosses the wire (ANNOUNCE carries its wire name), every edge
    trains it and joins every round, and the aggregator's checkpoint holds finite weights that
    moved away from the plugin's seeded initial weights.
    """
    rounds = dataclasses.replace(FAST_ROUNDS, expected_clients=3)
    fed = federation(3, rounds=rounds)
    fed.spec = PLUGIN
    fed.replay = _NoReplay()  # type: ignore[assignment]
    await fed.start_keyserver()
    aggregator = fed.aggregator(AggregatorService, max_rounds=2)
    await aggregator.start()
    await fed.start_edges(fed.ids)
    runner = fed.run_aggregator(aggregator, asyncio.Event())
    for round_id in (1, 2):
        await fed.wait_round(round_id)
        assert fed.log.members(round_id) == tuple(fed.ids)
    await bounded(runner, "the aggregator to stop after max_rounds")
    # FedAvg clients keep no state to commit: every edge saw both rounds complete with it.
    await fed.pulse.wait_until(
        lambda: all(
            e.machine is not None and e.machine.last_completed_round == 2 for e in fed.edges.values()
        ),
        "every edge to see round 2 complete",
    )
    loaded = CheckpointStore(fed.aggregator_dir / "checkpoint").load()
    assert loaded is not None and loaded.checkpoint.round == 2
    model = loaded.checkpoint.model
    start = plugin_initial_model(PLUGIN)
    assert model.shape == start.shape and np.all(np.isfinite(model))
    assert not np.allclose(model, start)
