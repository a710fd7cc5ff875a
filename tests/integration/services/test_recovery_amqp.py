"""Aggregator recovery over the real RabbitMQ: damaged or lost checkpoints, a lost result.

Each test stops an aggregator at a chosen point, damages what a crash or a disk could
damage, and starts a new aggregator on the same state directory while the edges keep
running: the federation must go on without restarting any edge (issue 12).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil

import numpy as np
import pytest

from fedcast.services.aggregator.checkpoint import CheckpointStore
from fedcast.services.edge_client.service import EdgeClientService
from fedcast.shared.protocol.aggregator import RoundConfig
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.wire.messages import MessageType

from .conftest import MakeFederation
from .helpers import FAST_ROUNDS, Federation, ProbeAggregator, bounded, sample

pytestmark = pytest.mark.broker


def _rounds(n_clients: int) -> RoundConfig:
    return dataclasses.replace(FAST_ROUNDS, expected_clients=n_clients)


async def _two_rounds_then_stop(fed: Federation) -> list[EdgeClientService]:
    """Key service, aggregator and edges; the aggregator stops right after round 2 (edges keep running)."""
    await fed.start_keyserver()
    stop_first = asyncio.Event()
    first = fed.aggregator(
        name="aggregator-1", on_round=lambda outcome: stop_first.set() if outcome.round == 2 else None
    )
    await first.start()
    edges = await fed.start_edges(fed.ids)
    runner = fed.run_aggregator(first, stop_first)
    await fed.wait_commits(2)
    await bounded(runner, "the first aggregator to stop")
    return edges


async def test_a_damaged_newest_checkpoint_falls_back_without_reusing_a_round_id(
    federation: MakeFederation,
) -> None:
    """Round 2's checkpoint file is damaged (one byte flipped) after the aggregator stopped.

    Proves: the new aggregator starts (no crash loop), counts the damaged file, takes round
    1's model, and runs round 3, not round 2 again: the running edges, which completed
    round 2, accept it and commit it without being restarted.
    """
    fed = federation(3, rounds=_rounds(3))
    edges = await _two_rounds_then_stop(fed)
    store = CheckpointStore(fed.aggregator_dir / "checkpoint")
    newest = store.path_of(2)
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    newest.write_bytes(bytes(raw))
    damaged = sample("fedcast_checkpoints_damaged_total", service="aggregator")

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    assert sample("fedcast_checkpoints_damaged_total", service="aggregator") == damaged + 1
    assert second.machine is not None and second.machine.round == 3
    np.testing.assert_array_equal(second.machine.model, fed.log.outcomes[1].model)
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(3)
    await bounded(second_runner, "the second aggregator to finish round 3")
    assert fed.log.members(3) == tuple(fed.ids)
    assert all(fed.log.commits[cid] == [1, 2, 3] for cid in fed.ids)
    assert all(e.machine is not None and e.machine.last_completed_round == 3 for e in edges)


async def test_a_deleted_checkpoint_directory_restarts_the_model_not_the_round_numbers(
    federation: MakeFederation,
) -> None:
    """The operator deletes the checkpoint directory after round 2 (the manual fix the audit saw).

    Proves: the new aggregator does not go back to round 1 (which every running edge would
    refuse as old); it starts the model afresh at round 3, and the running edges commit it.
    """
    fed = federation(3, rounds=_rounds(3))
    await _two_rounds_then_stop(fed)
    shutil.rmtree(fed.aggregator_dir / "checkpoint")

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    assert second.machine is not None and second.machine.round == 3
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(3)
    await bounded(second_runner, "the second aggregator to finish round 3")
    assert all(fed.log.commits[cid] == [1, 2, 3] for cid in fed.ids)


class ResultLosingAggregator(ProbeAggregator):
    """Dies right after round 2's checkpoint, before its RESULT leaves (as a kill -9 would)."""

    stop: asyncio.Event

    async def _send(self, outgoing: list[Outgoing]) -> None:
        if any(o.type == MessageType.RESULT and o.round == 2 for o in outgoing):
            self.stop.set()
            return
        await super()._send(outgoing)


async def test_a_result_lost_in_a_crash_is_sent_again_by_the_next_aggregator(
    federation: MakeFederation,
) -> None:
    """Round 2 is checkpointed but its RESULT never goes out; a new aggregator starts.

    Proves: the new aggregator sends round 2's result again, so the members commit round 2
    (their local state moves on) before round 3; round 3 then matches the plaintext replay,
    which needs round 2's commits, and every edge committed 1, 2, 3 exactly once.
    """
    fed = federation(3, rounds=_rounds(3))
    await fed.start_keyserver()
    stop_first = asyncio.Event()
    first = fed.aggregator(ResultLosingAggregator, name="aggregator-1")
    assert isinstance(first, ResultLosingAggregator)
    first.stop = stop_first
    await first.start()
    await fed.start_edges(fed.ids)
    runner = fed.run_aggregator(first, stop_first)
    await fed.wait_commits(1)
    await bounded(runner, "the first aggregator to stop after round 2's checkpoint")
    assert first.completed_rounds == 2
    assert all(fed.log.commits[cid] == [1] for cid in fed.ids)  # round 2's result never went out

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(3)
    await bounded(second_runner, "the second aggregator to finish round 3")
    assert all(fed.log.commits[cid] == [1, 2, 3] for cid in fed.ids)
    fed.assert_matches_replay(3)
