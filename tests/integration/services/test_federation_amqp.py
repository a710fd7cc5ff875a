"""The three services as a federation over the real RabbitMQ: rounds, dropouts, attacks, faults.

Every test runs a federation of its own (unique id; the ``federation`` fixture deletes its
queues and exchanges afterwards) with short round timeouts. Models are compared with a
plaintext replay of FedMF over the online sets the secure run reports, within the
quantization tolerance of the fixed-point encoding. The same scenarios against the bare
state machines are in tests/unit/protocol/test_rounds.py; here they go through the service
shells, the message gate, the key service and the broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from fedcast.services.aggregator.checkpoint import CheckpointStore
from fedcast.services.aggregator.service import AggregatorService
from fedcast.services.edge_client.service import EdgeClientService
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import TransportError
from fedcast.shared.keystore import read_secret_json
from fedcast.shared.learning.tasks import FedMFServerTask
from fedcast.shared.protocol.aggregator import AggregatorMachine, RoundConfig
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.protocol.stages import AggregatorStage
from fedcast.shared.transport.amqp import AmqpTransport
from fedcast.shared.transport.base import AGGREGATOR, client_endpoint
from fedcast.shared.wire.messages import (
    Challenge,
    Header,
    MemberEnvelope,
    MessageType,
    Response,
    Signed,
    Upload,
)
from fedcast.shared.wire.serde import FirstComponentSigned, WireContext, decode, encode, verify_first

from .conftest import MakeFederation
from .helpers import (
    FAST_ROUNDS,
    ForgedAggregator,
    ProbeAggregator,
    ProbeEdge,
    bounded,
    close_connection,
    connection_pid,
    rejected,
    rejections,
    sample,
)

pytestmark = pytest.mark.broker


def _rounds(n_clients: int, *, upload_timeout_s: float = 2.5, response_timeout_s: float = 2.5) -> RoundConfig:
    """FAST_ROUNDS, closing the ready window as soon as ``n_clients`` are ready."""
    return dataclasses.replace(
        FAST_ROUNDS,
        expected_clients=n_clients,
        upload_timeout_s=upload_timeout_s,
        response_timeout_s=response_timeout_s,
    )


def _in_round(round_id: int, body_type: type) -> Callable[[Signed], bool]:
    """A ProbeEdge predicate: messages of round ``round_id`` with a body of ``body_type``."""

    def match(msg: Signed) -> bool:
        return msg.header.round == round_id and isinstance(msg.body, body_type)

    return match


# -- 1. end to end ----------------------------------------------------------------------------


async def test_three_rounds_end_to_end_on_the_real_group(federation: MakeFederation) -> None:
    """Key service + aggregator + 5 edges, one connection each, on a real 2048-bit group.

    Proves: three rounds complete with every client in S, each round's model equals the
    plaintext FedMF step over S (so the secure sum decrypted to the true sum), every client
    committed all three rounds, and the aggregator checkpointed the last one.
    """
    rounds = RoundConfig(
        min_online=2, expected_clients=5, ready_window_s=2.0, upload_timeout_s=4.0, response_timeout_s=4.0
    )
    fed = federation(5, rounds=rounds, real_group=True)
    await fed.start_keyserver()
    group = fed.ks.params.group
    assert group.modulus_bits == 2048 and not group.insecure
    clipped = sample("fedcast_clipped_values_total", service="edge")
    aggregator = fed.aggregator(AggregatorService, max_rounds=3)
    await aggregator.start()  # registers its keys: the edges need them to start
    edges = await fed.start_edges(fed.ids)
    runner = fed.run_aggregator(aggregator, asyncio.Event())

    for round_id in (1, 2, 3):
        await fed.wait_commits(round_id)
        assert fed.log.members(round_id) == tuple(fed.ids)
        fed.assert_matches_replay(round_id)
    await bounded(runner, "the aggregator to stop after max_rounds")  # finished: run() returned
    assert aggregator.completed_rounds == 3
    assert all(fed.log.commits[cid] == [1, 2, 3] for cid in fed.ids)
    assert all(e.machine is not None and e.machine.last_completed_round == 3 for e in edges)
    loaded = CheckpointStore(fed.aggregator_dir / "checkpoint").load()
    assert loaded is not None and loaded.checkpoint.round == 3 and loaded.damaged == ()
    assert loaded.checkpoint.members == tuple(fed.ids)
    np.testing.assert_array_equal(loaded.checkpoint.model, fed.log.outcomes[3].model)
    # the replay cannot model clipping: it must not have happened
    assert sample("fedcast_clipped_values_total", service="edge") == clipped


# -- 2. dropouts ----------------------------------------------------------------------------------


async def test_a_client_that_never_said_ready_joins_once_it_runs(federation: MakeFederation) -> None:
    """Round 1 runs without a client that is not started (the ready window closes with 4 of 5).

    Proves: the window closes on time with the clients that answered, the model is the
    plaintext step over those four, and the late client is in S of the first round
    announced after it started listening (and commits it).
    """
    fed = federation(5, rounds=_rounds(5))
    late = fed.ids[-1]
    await fed.start_keyserver()
    aggregator = fed.aggregator()
    await aggregator.start()
    await fed.start_edges(fed.ids[:-1])
    fed.run_aggregator(aggregator, asyncio.Event())

    first = await fed.wait_round(1)
    assert first.members == tuple(fed.ids[:-1])
    fed.assert_matches_replay(1)

    await fed.start_edges([late])
    assert aggregator.machine is not None
    joined = aggregator.machine.round + 1  # announced only after the late client listens
    await fed.wait_commits(joined)
    assert late in fed.log.members(joined)
    assert fed.log.members(joined) == tuple(fed.ids)
    for round_id in range(1, joined + 1):
        fed.assert_matches_replay(round_id)
    assert 1 not in fed.log.commits[late] and joined in fed.log.commits[late]


async def test_a_member_that_stops_before_uploading_is_dropped_at_the_timeout(
    federation: MakeFederation,
) -> None:
    """A member of S dies on round 1's envelope (never uploads).

    Proves: that attempt fails at the upload timeout (one dropout counted), the round
    completes in a new attempt with the three survivors only (nobody had answered, so the
    retry is safe), its model is the plaintext step over the survivors, the dropped member
    does not commit round 1, and it is back in S in round 2.
    """
    fed = federation(4, rounds=_rounds(4))
    victim = fed.ids[1]
    survivors = tuple(c for c in fed.ids if c != victim)
    await fed.start_keyserver()
    aggregator = fed.aggregator()
    await aggregator.start()
    await fed.start_edges(survivors, ProbeEdge)
    (dying,) = await fed.start_edges([victim], ProbeEdge, drop=_in_round(1, MemberEnvelope))
    assert isinstance(dying, ProbeEdge)
    dropouts = sample("fedcast_dropouts_total", service="aggregator", phase="upload")
    retries = sample("fedcast_round_retries_total", service="aggregator")
    fed.run_aggregator(aggregator, asyncio.Event())

    first = await fed.wait_round(1)
    assert first.members == survivors
    fed.assert_matches_replay(1)
    assert sample("fedcast_dropouts_total", service="aggregator", phase="upload") == dropouts + 1
    assert sample("fedcast_round_retries_total", service="aggregator") == retries + 1
    assert [(h.round, h.attempt) for h in dying.dropped] == [(1, 0)]
    assert {o.type for o in dying.replies if o.round == 1} == {MessageType.READY}

    await fed.wait_commits(2)
    assert fed.log.members(2) == tuple(fed.ids)
    fed.assert_matches_replay(2)
    assert fed.log.commits[victim][0] == 2  # it did not commit round 1
    assert all(fed.log.commits[c][:2] == [1, 2] for c in survivors)


async def test_a_member_that_dies_after_the_challenge_answers_late_once_restarted(
    federation: MakeFederation,
) -> None:
    """A member of S uploads in round 1, then dies on the challenge (never answers).

    Proves the policy of docs/PROTOCOL.md 5.4: the others answered, so there is no retry
    without the silent member (that retry is the differencing attack of crypto note 0.3);
    the aggregator sends the challenge again at every response timeout (counted in
    fedcast_challenge_resends_total); a new process of the member on the same state directory
    answers it from its ledger; round 1 completes with all four members and the plaintext
    model, and nobody uploaded twice for round 1.
    """
    fed = federation(4, rounds=_rounds(4, response_timeout_s=1.0))
    victim = fed.ids[2]
    others = tuple(c for c in fed.ids if c != victim)
    await fed.start_keyserver()
    aggregator = fed.aggregator()
    await aggregator.start()
    edges = await fed.start_edges(others, ProbeEdge)
    (dying,) = await fed.start_edges([victim], ProbeEdge, drop=_in_round(1, Challenge))
    assert isinstance(dying, ProbeEdge)
    resends = sample("fedcast_challenge_resends_total", service="aggregator")
    retries = sample("fedcast_round_retries_total", service="aggregator")
    fed.run_aggregator(aggregator, asyncio.Event())

    await fed.pulse.wait_until(lambda: len(dying.dropped) >= 2, "the challenge sent twice to the dead member")
    await dying.close()  # the process dies for good; its ledger stays on disk
    assert 1 not in fed.log.outcomes
    assert sample("fedcast_challenge_resends_total", service="aggregator") >= resends + 1
    (reborn,) = await fed.start_edges([victim], ProbeEdge)
    assert isinstance(reborn, ProbeEdge)

    first = await fed.wait_round(1)
    assert first.members == tuple(fed.ids)
    fed.assert_matches_replay(1)
    assert sample("fedcast_round_retries_total", service="aggregator") == retries
    assert reborn.replied(MessageType.UPLOAD) == []  # it answered the attempt its former self uploaded for
    assert [(o.round, o.attempt) for o in reborn.replied(MessageType.RESPONSE)][:1] == [(1, 0)]
    for edge in [*edges, dying]:
        assert isinstance(edge, ProbeEdge)
        uploads = Counter((o.round, o.attempt) for o in edge.replied(MessageType.UPLOAD))
        assert uploads[(1, 0)] == 1 and sum(n for (r, _), n in uploads.items() if r == 1) == 1


class CheatingEdge(ProbeEdge):
    """A real edge whose round-1 upload carries a proof of knowledge of r2 that does not verify
    (its response z off by one). The first-component signature stays valid: only the proof
    check can catch it."""

    async def _dispatch(self, msg: Signed) -> list[Outgoing]:
        outgoing = await super()._dispatch(msg)
        cheated = []
        for out in outgoing:
            if isinstance(out.body, Upload) and out.round == 1:
                proof = dataclasses.replace(out.body.first_proof, response=out.body.first_proof.response + 1)
                # The signature covers the proof: sign the bad proof, as a cheater would.
                signed = FirstComponentSigned(out.body.first, proof, out.body.context_digest)
                signature = self.machine._sign_first(out.round, out.attempt, signed)
                body = dataclasses.replace(out.body, first_proof=proof, first_signature=signature)
                out = dataclasses.replace(out, body=body)
            cheated.append(out)
        return cheated


async def test_a_member_with_an_invalid_proof_is_counted_and_left_out(federation: MakeFederation) -> None:
    """A member uploads (validly signed) a first component whose proof fails, in round 1.

    Proves: the aggregator's batch proof check catches it as soon as every member uploaded
    (no timeout), counts one invalid_proof rejection for it, and retries the attempt at once
    with the three honest members (nobody answered yet); round 1's model is the plaintext
    step over them.
    """
    fed = federation(4, rounds=_rounds(4, upload_timeout_s=60.0))
    cheater = fed.ids[2]
    honest = tuple(c for c in fed.ids if c != cheater)
    await fed.start_keyserver()
    aggregator = fed.aggregator()
    await aggregator.start()
    await fed.start_edges(honest, ProbeEdge)
    await fed.start_edges([cheater], CheatingEdge)
    before = rejected("aggregator", "invalid_proof")
    retries = sample("fedcast_round_retries_total", service="aggregator")
    fed.run_aggregator(aggregator, asyncio.Event())

    first = await fed.wait_round(1)  # well inside the 60 s upload timeout
    assert first.members == honest
    fed.assert_matches_replay(1)
    assert rejected("aggregator", "invalid_proof") == before + 1
    assert sample("fedcast_round_retries_total", service="aggregator") == retries + 1


# -- 3. a malicious aggregator ----------------------------------------------------------------------


async def test_clients_refuse_what_a_malicious_aggregator_sends(federation: MakeFederation) -> None:
    """The test speaks as the aggregator (its Ed25519 key from its state dir) to line-0's queue.

    Proves, for each of: an envelope whose S is line-0 alone; an envelope whose pk_S is not
    the product of the listed members' registered keys; and, after a real upload, a challenge
    whose R is one member's first component (the attack that would unmask that member's
    input), that the client refuses it, counts it under the matching reason, and sends
    nothing in reply: what reaches the aggregator endpoint from line-0 is exactly READY,
    UPLOAD (for the honest envelope), RESPONSE (for the honest challenge).
    """
    fed = federation(3)
    victim, other, third = fed.ids
    await fed.start_keyserver()
    real = fed.aggregator(AggregatorService)
    await real.start()  # registers its keys and writes its key files, then leaves the endpoint
    await real.close()
    forger = await ForgedAggregator.from_state_dir(fed)
    edges = await fed.start_edges(fed.ids, ProbeEdge)
    probe = edges[0]
    assert isinstance(probe, ProbeEdge)
    group, spec = fed.ks.params.group, fed.spec
    registry = {e.client_id: e for e in fed.ks.store.entries(fed.ids)}
    ctx = WireContext.from_group(group)
    # The forger runs the honest state machine with the aggregator's own keys, and deviates.
    machine = AggregatorMachine(
        federation=fed.id,
        params=fed.ks.params,
        secret=forger.secret,
        task=FedMFServerTask(spec),
        config=RoundConfig(min_online=2, expected_clients=3, ready_window_s=60.0),
        verify_first=lambda m, r, a, first, sig: verify_first(
            registry[m].verify_key, sig, fed.id, r, a, m, first, ctx
        ),
    )
    await forger.send(machine.start_round())
    await fed.pulse.wait_until(
        lambda: all(forger.from_client(c, MessageType.READY) for c in fed.ids), "every READY"
    )
    reasons = ("online_set_too_small", "aggregate_key_mismatch", "challenge_rejected", "stale")

    async def refused(out: Outgoing, reason: str) -> None:
        before, handled = rejections("edge", reasons), len(probe.handled)
        await forger.send([out])
        await fed.pulse.wait_until(lambda: len(probe.handled) > handled, f"{victim} to handle {out.type}")
        after = rejections("edge", reasons)
        assert {r: after[r] - before[r] for r in reasons} == {r: float(r == reason) for r in reasons}

    pk = {cid: entry.elgamal_public for cid, entry in registry.items()}
    to_victim = client_endpoint(victim)
    # |S| = 1: the aggregate would be this client's own input.
    alone = MemberEnvelope((victim,), pk[victim] ** 2 % int(group.n), 2, b"\x00" * 40)
    await refused(Outgoing(to_victim, MessageType.ENVELOPE, 1, 0, alone), "online_set_too_small")
    # pkbar_S includes a third key: the product of line-0's and line-1's squared keys it is not.
    rogue_key = (pk[victim] * pk[other] * pk[third]) ** 2 % int(group.n)
    mismatch = MemberEnvelope((victim, other), rogue_key, 2, b"\x00" * 40)
    await refused(Outgoing(to_victim, MessageType.ENVELOPE, 1, 0, mismatch), "aggregate_key_mismatch")
    assert probe.replied(MessageType.UPLOAD) == []

    # Now the honest envelopes of (1, 0): every client uploads.
    envelopes = [out for cid in fed.ids for out in machine.on_ready(cid, 1, 0, registry[cid])]
    assert [o.type for o in envelopes] == [MessageType.ENVELOPE] * 3
    await forger.send(envelopes)
    await fed.pulse.wait_until(
        lambda: all(forger.from_client(c, MessageType.UPLOAD) for c in fed.ids), "every UPLOAD"
    )
    challenges: list[Outgoing] = []
    for msg in (forger.from_client(c, MessageType.UPLOAD)[0] for c in fed.ids):
        assert isinstance(msg.body, Upload)
        challenges += machine.on_upload(msg.header.sender, 1, 0, msg.body)
    honest = next(o for o in challenges if o.endpoint == to_victim)
    assert isinstance(honest.body, Challenge)
    # R = A_other: the shares would decrypt line-1's upload alone. Signatures all valid.
    a_other = next(f.value for f in honest.body.firsts if f.member == other)
    isolating = dataclasses.replace(honest, body=dataclasses.replace(honest.body, challenge=a_other))
    await refused(isolating, "challenge_rejected")
    assert probe.replied(MessageType.RESPONSE) == []

    # The refusal did not use up the attempt: the honest challenge is answered, once, and
    # the aggregate of the three shares decrypts to the plaintext step.
    await forger.send(challenges)
    await fed.pulse.wait_until(
        lambda: all(forger.from_client(c, MessageType.RESPONSE) for c in fed.ids), "every RESPONSE"
    )
    for msg in (forger.from_client(c, MessageType.RESPONSE)[0] for c in fed.ids):
        assert isinstance(msg.body, Response)
        machine.on_response(msg.header.sender, 1, 0, msg.body)
    assert machine.ready_to_finish
    outcome = machine.finish()
    fed.replay.step(1, outcome.members)
    fed.log.outcomes[1] = outcome
    fed.assert_matches_replay(1)
    # Nothing else from line-0 reached the aggregator endpoint: no reply to any forgery.
    assert [(m.header.type, m.header.round, m.header.attempt) for m in forger.from_client(victim)] == [
        (MessageType.READY, 1, 0),
        (MessageType.UPLOAD, 1, 0),
        (MessageType.RESPONSE, 1, 0),
    ]


# -- 4. bad input at the aggregator -------------------------------------------------------------------


async def test_the_aggregator_rejects_bad_input_while_a_round_runs(federation: MakeFederation) -> None:
    """During round 2 (held open: line-2 pauses on its envelope), the aggregator receives an
    impersonation (an upload under line-0's id, line-1's signature), a replay of line-0's round-1 upload,
    garbage bytes and a message over its (small) size limit.

    Proves: each is dropped and counted under bad_signature, stale, malformed and oversize
    (exactly one each), none reaches the state machine or fails the attempt, and round 2
    completes with all three members and the plaintext model.
    """
    limit = 16 * 1024
    fed = federation(3, rounds=_rounds(3, upload_timeout_s=8.0))
    a, b, c = fed.ids
    await fed.start_keyserver()
    aggregator = fed.aggregator(ProbeAggregator, max_message_bytes=limit)
    assert isinstance(aggregator, ProbeAggregator)
    await aggregator.start()
    edges = await fed.start_edges([a, b], ProbeEdge)
    (holder,) = await fed.start_edges([c], ProbeEdge, hold=_in_round(2, MemberEnvelope))
    edges.append(holder)
    assert isinstance(holder, ProbeEdge)
    retries = sample("fedcast_round_retries_total", service="aggregator")
    fed.run_aggregator(aggregator, asyncio.Event())

    await fed.wait_round(1)
    await fed.pulse.wait_for_event(holder.held, "round 2's envelope at line-2")
    machine = aggregator.machine
    assert machine is not None
    assert (machine.round, machine.stage) == (2, AggregatorStage.COLLECTING_UPLOADS)
    old_upload = next(
        s.body for s in aggregator.seen if s.header.type == MessageType.UPLOAD and s.header.sender == a
    )
    assert max(len(s.body) for s in aggregator.seen) < limit  # real messages pass the limit
    b_signer = SigningKeyPair.from_secret_dict(read_secret_json(fed.root / b / "signing-key.json"))
    ctx = WireContext.from_group(fed.ks.params.group)
    # What the current stage takes (an UPLOAD of round 2 attempt 0), so that only the
    # signature can refuse it (anything else is refused as stale from the header).
    copied = decode(old_upload, ctx, max_bytes=limit).body
    impersonation = encode(Header(MessageType.UPLOAD, fed.id, 2, 0, a), copied, b_signer, ctx)
    reasons = ("bad_signature", "stale", "malformed", "oversize")
    before = rejections("aggregator", reasons)

    intruder = fed.transport("intruder")
    await intruder.connect()
    for data in (impersonation, old_upload, b"\xc1 this is not msgpack", b"\x98" + b"\x00" * limit):
        await intruder.send(AGGREGATOR, data)
    await fed.pulse.wait_until(
        lambda: all(rejected("aggregator", r) >= before[r] + 1 for r in reasons), "the four rejections"
    )
    after = rejections("aggregator", reasons)
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 1.0)
    assert (machine.round, machine.attempt, machine.stage) == (2, 0, AggregatorStage.COLLECTING_UPLOADS)

    holder.release.set()
    await fed.wait_commits(2)
    assert fed.log.members(2) == tuple(fed.ids)
    fed.assert_matches_replay(2)
    assert sample("fedcast_round_retries_total", service="aggregator") == retries
    # What reached the state machine in rounds 1-2 is exactly what the three clients sent.
    sent = Counter(
        (o.type, o.round, o.attempt, e.config.client_id)
        for e in edges
        if isinstance(e, ProbeEdge)
        for o in e.replies
        if o.round <= 2
    )
    accepted = Counter((h.type, h.round, h.attempt, h.sender) for h in aggregator.accepted if h.round <= 2)
    assert accepted == sent and sum(sent.values()) == 18  # READY, UPLOAD, RESPONSE x 3 clients x 2 rounds


# -- 5. broker-side connection loss -------------------------------------------------------------------


async def test_services_reconnect_after_the_broker_closes_their_connections(
    federation: MakeFederation,
) -> None:
    """While round 2 is in progress (S fixed, line-2 holding its envelope), the broker closes
    the aggregator's and line-2's connections (rabbitmqctl close_connection).

    Proves: both robust connections come back (restoring consumers and the RPC reply
    queue), and the federation finishes rounds 2 and 3, round 3 with every client again,
    each model equal to the plaintext step over its S.
    """
    fed = federation(3, rounds=_rounds(3, upload_timeout_s=10.0, response_timeout_s=10.0))
    victim = fed.ids[2]
    await fed.start_keyserver()
    aggregator = fed.aggregator(ProbeAggregator, max_rounds=3)
    await aggregator.start()
    await fed.start_edges(fed.ids[:2])
    (edge,) = await fed.start_edges([victim], ProbeEdge, hold=_in_round(2, MemberEnvelope))
    assert isinstance(edge, ProbeEdge)
    # Look the pids up before the round (rabbitmqctl skips the test here if it cannot run).
    pids = [
        await connection_pid(fed.connection_name("aggregator")),
        await connection_pid(fed.connection_name(victim)),
    ]
    runner = fed.run_aggregator(aggregator, asyncio.Event())

    await fed.wait_round(1)
    await fed.pulse.wait_for_event(edge.held, "round 2's envelope at the victim")
    assert aggregator.machine is not None and aggregator.machine.round == 2
    await asyncio.gather(*(close_connection(pid) for pid in pids))
    edge.release.set()  # its upload goes out while (or after) its connection comes back

    await fed.wait_commits(3)
    await bounded(runner, "the aggregator to finish its rounds")
    assert isinstance(aggregator.transport, AmqpTransport) and isinstance(edge.transport, AmqpTransport)
    assert aggregator.transport.reconnects >= 1 and edge.transport.reconnects >= 1
    assert fed.log.members(3) == tuple(fed.ids)
    for round_id in (1, 2, 3):
        fed.assert_matches_replay(round_id)


# -- 6. aggregator restart ------------------------------------------------------------------------------


async def test_a_restarted_aggregator_resumes_from_its_checkpoint(federation: MakeFederation) -> None:
    """The aggregator is stopped (its stop event) right after round 2; a new AggregatorService
    on the same state dir takes over.

    Proves: the new one resumes at round 3 with exactly the checkpointed round-2 model (and
    the same registered keys: the edges still accept it), and the federation completes
    round 3 with the plaintext result; every client committed rounds 1-3.
    """
    fed = federation(3, rounds=_rounds(3))
    await fed.start_keyserver()
    stop_first = asyncio.Event()
    first = fed.aggregator(
        name="aggregator-1", on_round=lambda outcome: stop_first.set() if outcome.round == 2 else None
    )
    await first.start()
    edges = await fed.start_edges(fed.ids)
    first_runner = fed.run_aggregator(first, stop_first)
    await fed.wait_commits(2)
    await bounded(first_runner, "the first aggregator to stop")
    assert first.completed_rounds == 2
    round_2 = fed.log.outcomes[2].model
    loaded = CheckpointStore(fed.aggregator_dir / "checkpoint").load()
    assert loaded is not None and loaded.checkpoint.round == 2
    np.testing.assert_array_equal(loaded.checkpoint.model, round_2)

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    assert second.machine is not None and second.machine.round == 3
    np.testing.assert_array_equal(second.machine.model, round_2)
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(3)
    await bounded(second_runner, "the second aggregator to finish round 3")
    assert fed.log.members(3) == tuple(fed.ids)
    fed.assert_matches_replay(3)
    assert all(fed.log.commits[cid] == [1, 2, 3] for cid in fed.ids)
    assert all(e.machine is not None and e.machine.last_completed_round == 3 for e in edges)


# -- 7. shutdown --------------------------------------------------------------------------------------


async def test_services_shut_down_cleanly_on_their_stop_event(federation: MakeFederation) -> None:
    """After a round, the stop events end the aggregator and the edges.

    Proves: every run() returns without error, the aggregator's machine is stopped, every
    transport is closed (sending raises), close() a second time is harmless, and once the
    key service is stopped too no asyncio task of the services is left behind.
    """
    fed = federation(2, rounds=_rounds(2))
    await fed.start_keyserver()
    aggregator = fed.aggregator(AggregatorService)
    await aggregator.start()
    edges: list[EdgeClientService] = await fed.start_edges(fed.ids)
    stop = asyncio.Event()
    runner = fed.run_aggregator(aggregator, stop)
    await fed.wait_commits(1)

    stop.set()
    await fed.stop_all()
    assert all(t.done() and not t.cancelled() and t.exception() is None for t in fed.runners.values())
    assert runner.done()
    assert aggregator.machine is not None and aggregator.machine.stage == AggregatorStage.STOPPED
    services: list[AggregatorService | EdgeClientService] = [aggregator, *edges]
    for service in services:
        with pytest.raises(TransportError, match="closed"):
            await service.transport.send(AGGREGATOR, b"after close")
        await service.close()  # a second close is harmless
    await fed.ks.stop()
    await fed.ks.stop()
    for transport in fed.transports:
        await transport.close()
    current = asyncio.current_task()
    leftover = {t for t in asyncio.all_tasks() if t is not current}
    if leftover:  # closing connections may need a few loop turns to finish their tasks
        await asyncio.wait(leftover, timeout=5)
    assert [t for t in leftover if not t.done()] == []


async def test_an_aggregator_that_dies_mid_round_is_replaced_and_the_round_completes(
    federation: MakeFederation,
) -> None:
    """The aggregator stops while round 2 collects uploads (line-2 holds its envelope, the
    others have uploaded); a new one starts on the same state dir.

    Proves: the new aggregator resumes at round 2 from the round-1 checkpoint, the stale
    messages of the dead attempt do not disturb it, round 2 completes with every client and
    the plaintext result, and no client ever encrypted twice for one (round, attempt).
    """
    fed = federation(3, rounds=_rounds(3))
    await fed.start_keyserver()
    stop_first = asyncio.Event()
    first = fed.aggregator(name="aggregator-1")
    await first.start()
    edges = await fed.start_edges(fed.ids[:2], ProbeEdge)
    (holder,) = await fed.start_edges(fed.ids[2:], ProbeEdge, hold=_in_round(2, MemberEnvelope))
    assert isinstance(holder, ProbeEdge)
    edges.append(holder)
    first_runner = fed.run_aggregator(first, stop_first)
    await fed.wait_commits(1)
    await fed.pulse.wait_for_event(holder.held, "round 2's envelope at line-2")
    stop_first.set()
    await bounded(first_runner, "the first aggregator to stop")
    holder.release.set()  # its upload for the dead attempt goes to a queue nobody serves yet

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    assert second.machine is not None and second.machine.round == 2
    # It opens round 2 above every attempt number the dead aggregator used, so the clients
    # (who never encrypt twice for one (round, attempt)) join at once, not after a timeout.
    assert second.machine.attempt >= 1
    retries = sample("fedcast_round_retries_total", service="aggregator")
    np.testing.assert_array_equal(second.machine.model, fed.log.outcomes[1].model)
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(2)
    await bounded(second_runner, "the second aggregator to finish round 2")
    assert fed.log.members(2) == tuple(fed.ids)
    assert sample("fedcast_round_retries_total", service="aggregator") == retries  # no timeout hit
    fed.assert_matches_replay(2)
    for edge in edges:
        assert isinstance(edge, ProbeEdge)
        uploads = Counter((o.round, o.attempt) for o in edge.replied(MessageType.UPLOAD))
        assert max(uploads.values()) == 1, uploads


async def test_an_aggregator_that_dies_after_its_challenge_finishes_that_attempt_when_replaced(
    federation: MakeFederation,
) -> None:
    """The aggregator stops after sending round 2's challenge (line-2 holds it, the others
    have answered); a new one starts on the same state directory.

    Proves: the members that answered will not upload again for this model (crypto note
    0.3), so the new aggregator must not open a new attempt: it takes up the persisted one
    (attempt-state.json), sends the same challenge again, the members repeat their stored
    answers, and round 2 completes with every client, the plaintext result, and one upload
    per client for round 2.
    """
    fed = federation(3, rounds=_rounds(3))
    await fed.start_keyserver()
    stop_first = asyncio.Event()
    first = fed.aggregator(name="aggregator-1")
    await first.start()
    edges = await fed.start_edges(fed.ids[:2], ProbeEdge)
    (holder,) = await fed.start_edges(fed.ids[2:], ProbeEdge, hold=_in_round(2, Challenge))
    assert isinstance(holder, ProbeEdge)
    edges.append(holder)
    first_runner = fed.run_aggregator(first, stop_first)
    await fed.wait_commits(1)
    await fed.pulse.wait_for_event(holder.held, "round 2's challenge at line-2")
    assert (fed.aggregator_dir / "attempt-state.json").exists()
    stop_first.set()
    await bounded(first_runner, "the first aggregator to stop")
    holder.release.set()  # its answer goes to a queue nobody serves yet

    second = fed.aggregator(name="aggregator-2", max_rounds=1)
    await second.start()
    second_runner = fed.run_aggregator(second, asyncio.Event())
    await fed.wait_commits(2)
    await bounded(second_runner, "the second aggregator to finish round 2")
    assert fed.log.members(2) == tuple(fed.ids)
    fed.assert_matches_replay(2)
    assert not (fed.aggregator_dir / "attempt-state.json").exists()  # dropped once the round completed
    for edge in edges:
        assert isinstance(edge, ProbeEdge)
        uploads = [(o.round, o.attempt) for o in edge.replied(MessageType.UPLOAD) if o.round == 2]
        assert len(uploads) == 1, uploads
