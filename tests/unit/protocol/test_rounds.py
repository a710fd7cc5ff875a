"""Rounds of Algorithm 1 between the real state machines, with dropouts, refusals and replays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shared.crypto.group import GroupParams
from shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    NotAMemberError,
    OnlineSetTooSmallError,
    ProtocolOrderError,
    SignatureError,
    StaleMessageError,
)
from shared.protocol.aggregator import RoundConfig
from shared.protocol.outgoing import Outgoing
from shared.protocol.stages import AggregatorStage
from shared.transport.base import client_endpoint
from shared.wire import serde
from shared.wire.messages import Challenge, MemberEnvelope, MessageType, Signed

from .harness import FED, Federation

QUANTUM = 2.0**-16


def _expected_model(fed: Federation, members: list[str]) -> np.ndarray:
    vectors = fed.expected_vectors(members)
    aggregate = np.sum(list(vectors.values()), axis=0)
    return fed.aggregator.task.apply(fed.aggregator.model, aggregate, len(members))


def _tolerance(fed: Federation, n_members: int) -> float:
    # each member's value is off by < 1 quantum; the update scales the sum by the learning rate
    return fed.spec.learning_rate * n_members * QUANTUM * 1.01


def test_three_rounds_equal_the_plaintext_step_over_s(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 4)
    outgoing = fed.aggregator.start_round()
    for round_id in (1, 2, 3):
        members = sorted(fed.clients)
        expected = _expected_model(fed, members)
        fed.run(outgoing)
        assert fed.rejected == []
        assert fed.completed[-1][0] == round_id and list(fed.completed[-1][1]) == members
        np.testing.assert_allclose(fed.aggregator.model, expected, rtol=0, atol=_tolerance(fed, 4))
        outgoing = fed.next_round
    assert fed.aggregator.round == 4
    assert all(c.last_completed_round == 3 for c in fed.clients.values())


def test_dropout_before_ready_and_rejoin(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 4, config=RoundConfig(min_online=2, ready_window_s=5))
    fed.offline.add("line-2")
    fed.run(fed.aggregator.start_round())
    fed.expire()  # the ready window closes with three clients
    assert fed.completed[-1][1] == ("line-0", "line-1", "line-3")
    fed.offline.clear()
    fed.run(fed.next_round)
    fed.expire()
    assert fed.completed[-1][1] == ("line-0", "line-1", "line-2", "line-3")
    assert fed.rejected == []


@pytest.mark.parametrize("lost", [MessageType.UPLOAD, MessageType.RESPONSE])
def test_dropout_during_the_round_is_retried_with_the_survivors(
    small_group: GroupParams, lost: MessageType
) -> None:
    fed = Federation.create(small_group, 4)
    fed.lost.add(("line-1", lost))
    survivors = ["line-0", "line-2", "line-3"]
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    assert fed.aggregator.stage in (AggregatorStage.COLLECTING_UPLOADS, AggregatorStage.COLLECTING_RESPONSES)
    assert not fed.completed
    fed.expire()  # attempt 0 fails; attempt 1 runs with the survivors, each encrypting afresh
    assert fed.completed[-1][1] == tuple(survivors)
    assert fed.aggregator.attempt == 0 and fed.aggregator.round == 2
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    # line-1 did not commit its local state for round 1; the others did
    assert fed.clients["line-1"].last_completed_round == 0
    assert all(fed.clients[m].last_completed_round == 1 for m in survivors)


def test_too_few_survivors_restart_the_round(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, config=RoundConfig(min_online=3, expected_clients=3))
    fed.lost.add(("line-0", MessageType.UPLOAD))
    fed.run(fed.aggregator.start_round())
    events: list[str] = []
    fed.expire()  # 2 survivors < min_online 3: no retry, the round restarts from the announcement
    events += [e.kind for e in fed.aggregator.drain_events()]
    assert "round_announced" in events and "attempt_failed" in events
    # every client said ready again at attempt 1; line-0's upload is lost again
    assert fed.aggregator.round == 1 and fed.aggregator.attempt == 1
    assert fed.aggregator.stage == AggregatorStage.COLLECTING_UPLOADS
    assert not fed.completed
    fed.lost.clear()
    fed.expire()  # restarted once more (attempt 2), now everyone uploads
    assert fed.completed and fed.completed[-1][0] == 1 and len(fed.completed[-1][1]) == 3


def _envelope_to(fed: Federation, cid: str, members: tuple[str, ...], aggregate_key: int) -> Outgoing:
    # The client refuses these before it ever opens the (junk) sealed model.
    body = MemberEnvelope(members, aggregate_key, 2, b"\x00" * 40)
    return Outgoing(
        client_endpoint(cid), MessageType.ENVELOPE, fed.aggregator.round, fed.aggregator.attempt, body
    )


def test_client_refuses_single_member_and_wrong_pk_s(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, config=RoundConfig(min_online=2, ready_window_s=5))
    fed.run(fed.aggregator.start_round())  # everyone is ready; the window is still open
    own = fed.registry["line-0"].elgamal_public
    fed.run([_envelope_to(fed, "line-0", ("line-0",), own)])
    assert isinstance(fed.rejected[-1][1], OnlineSetTooSmallError)
    wrong = own * 4 % int(small_group.p)
    fed.run([_envelope_to(fed, "line-0", ("line-0", "line-1"), wrong)])
    assert isinstance(fed.rejected[-1][1], AggregateKeyMismatchError)
    fed.run([_envelope_to(fed, "line-0", ("line-1", "line-2"), own)])
    assert isinstance(fed.rejected[-1][1], NotAMemberError)


def test_client_refuses_a_challenge_that_is_not_the_product(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3)

    def isolate_line_1(src: str, msg: Signed) -> Signed:
        # The aggregator tries R = A_1 (crypto note 5): the members' check must refuse it.
        if msg.header.type == MessageType.CHALLENGE:
            body = msg.body
            assert isinstance(body, Challenge)
            victim = next(f for f in body.firsts if f.member == "line-1")
            return dataclasses.replace(msg, body=dataclasses.replace(body, challenge=victim.value))
        return msg

    fed.tamper = isolate_line_1
    fed.run(fed.aggregator.start_round())
    refusals = [exc for who, exc in fed.rejected if who != "aggregator"]
    assert len(refusals) == 3 and all(isinstance(e, ChallengeRejectedError) for e in refusals)
    assert fed.aggregator.stage == AggregatorStage.COLLECTING_RESPONSES  # nothing to decrypt


def test_forged_first_component_is_refused(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3)

    def forge(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.CHALLENGE:
            body = msg.body
            assert isinstance(body, Challenge)
            forged = [
                dataclasses.replace(f, value=int(fed.group.power(7))) if f.member == "line-2" else f
                for f in body.firsts
            ]
            return dataclasses.replace(msg, body=dataclasses.replace(body, firsts=tuple(forged)))
        return msg

    fed.tamper = forge
    fed.run(fed.aggregator.start_round())
    assert [type(e) for who, e in fed.rejected if who != "aggregator"] == [SignatureError] * 3


def test_replayed_and_stale_messages_are_refused_without_changing_the_result(
    small_group: GroupParams,
) -> None:
    fed = Federation.create(small_group, 3)
    members = sorted(fed.clients)
    expected = _expected_model(fed, members)
    uploads: list[Signed] = []

    def record(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.UPLOAD:
            uploads.append(msg)
        return msg

    fed.tamper = record
    fed.run(fed.aggregator.start_round())
    np.testing.assert_allclose(fed.aggregator.model, expected, rtol=0, atol=_tolerance(fed, 3))
    model_after = fed.aggregator.model.copy()
    fed.tamper = None
    fed.run(fed.next_round)  # round 2 in progress with fresh uploads
    old = uploads[0]
    agg = fed.aggregator
    with pytest.raises(StaleMessageError):
        agg.on_upload(old.header.sender, old.header.round, old.header.attempt, old.body)  # type: ignore[arg-type]
    assert fed.completed[-1][0] == 2
    assert not np.array_equal(fed.completed[-1][2], model_after)  # round 2 applied its own step


def test_upload_from_a_non_member_and_duplicates(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, config=RoundConfig(min_online=2, ready_window_s=5))
    fed.offline.add("line-2")
    captured: list[Signed] = []

    def keep(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.UPLOAD:
            captured.append(msg)
        return msg

    fed.tamper = keep
    fed.lost.add(("line-1", MessageType.UPLOAD))
    fed.run(fed.aggregator.start_round())
    fed.expire()  # S = {line-0, line-1}; line-0 uploaded, line-1's upload is lost
    agg = fed.aggregator
    first = captured[0]
    with pytest.raises(NotAMemberError):
        agg.on_upload("line-2", first.header.round, first.header.attempt, first.body)  # type: ignore[arg-type]
    with pytest.raises(ProtocolOrderError):
        agg.on_upload(first.header.sender, first.header.round, first.header.attempt, first.body)  # type: ignore[arg-type]


def test_round_config_validation() -> None:
    from shared.errors import ConfigurationError

    for bad in ({"min_online": 1}, {"max_online": 1}, {"ready_window_s": 0}, {"max_attempts": 0}):
        with pytest.raises(ConfigurationError):
            RoundConfig(**bad)  # type: ignore[arg-type]


def test_illegal_transitions_are_refused(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 2)
    with pytest.raises(ProtocolOrderError):
        fed.aggregator.finish()
    with pytest.raises(ProtocolOrderError):
        fed.aggregator.checkpointed()


def _q_prime_part(group: GroupParams) -> int:
    """An element of order q' = (p-1)/2q: passes the Legendre screen, fails the batch test."""
    return int(pow(3, 2 * int(group.q), int(group.p)))


@pytest.mark.parametrize(
    ("culprit", "what", "phase"),
    [("line-1", "first", "upload"), ("line-2", "second", "upload"), ("line-3", "share", "response")],
)
def test_a_member_caught_by_the_batch_check_is_left_out_of_the_retry(
    small_group: GroupParams, culprit: str, what: str, phase: str
) -> None:
    fed = Federation.create(small_group, 4)
    z = _q_prime_part(small_group)
    p = int(small_group.p)

    def cheat(src: str, msg: Signed) -> Signed:
        body = msg.body
        if src != culprit or not hasattr(body, what):
            return msg
        value = getattr(body, what) * z % p
        changes: dict[str, object] = {what: value}
        if what == "first":  # a cheating member signs its bad A itself: the signature is valid
            h = msg.header
            signer = fed.signers[culprit]
            changes["first_signature"] = serde.sign_first(
                signer, FED, h.round, h.attempt, culprit, value, fed.ctx
            )
        return dataclasses.replace(msg, body=dataclasses.replace(body, **changes))  # type: ignore[type-var]

    fed.tamper = cheat
    survivors = sorted(set(fed.clients) - {culprit})
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    # No timeout needed: the batch check names the culprit as soon as the set is complete.
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    events = fed.aggregator.drain_events()
    caught = [e for e in events if e.kind == "invalid_element"]
    assert [e.data["member"] for e in caught] == [culprit]
    failed = [e for e in events if e.kind == "attempt_failed"]
    assert len(failed) == 1 and failed[0].data == {"phase": phase, "dropouts": 1, "survivors": 3}
    assert fed.rejected == []  # nothing was refused on arrival: the screen cannot see a q' component
