"""Rounds of Algorithm 1 between the real state machines, with dropouts, refusals and replays."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog
from fedcast.shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    DecryptionError,
    ModelAlreadyAnsweredError,
    NotAMemberError,
    OnlineSetTooSmallError,
    ProtocolOrderError,
    SignatureError,
    StaleMessageError,
)
from fedcast.shared.protocol.aggregator import AggregatorMachine, RoundConfig
from fedcast.shared.protocol.client import ClientMachine
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.protocol.stages import AggregatorStage
from fedcast.shared.transport.base import client_endpoint
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import (
    Challenge,
    FirstComponent,
    MemberEnvelope,
    MessageType,
    Response,
    Signed,
    Upload,
)

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


def test_dropout_before_the_challenge_is_retried_with_the_survivors(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 4)
    fed.lost.add(("line-1", MessageType.UPLOAD))
    survivors = ["line-0", "line-2", "line-3"]
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    assert fed.aggregator.stage == AggregatorStage.COLLECTING_UPLOADS
    assert not fed.completed
    fed.expire()  # attempt 0 fails before any answer; attempt 1 runs with the survivors, encrypting afresh
    assert fed.completed[-1][1] == tuple(survivors)
    assert fed.aggregator.attempt == 0 and fed.aggregator.round == 2
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    # line-1 did not commit its local state for round 1; the others did
    assert fed.clients["line-1"].last_completed_round == 0
    assert all(fed.clients[m].last_completed_round == 1 for m in survivors)


def test_a_silent_member_after_the_challenge_gets_it_again_and_completes_the_attempt(
    small_group: GroupParams,
) -> None:
    fed = Federation.create(small_group, 4)
    fed.lost.add(("line-1", MessageType.RESPONSE))
    members = sorted(fed.clients)
    expected = _expected_model(fed, members)
    fed.run(fed.aggregator.start_round())
    assert fed.aggregator.stage == AggregatorStage.COLLECTING_RESPONSES
    for _ in range(3):  # no retry, no new attempt: the others answered and will not upload again
        fed.expire()
        assert fed.aggregator.stage == AggregatorStage.COLLECTING_RESPONSES and fed.aggregator.attempt == 0
    events = [e.kind for e in fed.aggregator.drain_events()]
    assert events.count("challenge_resent") == 3 and "attempt_failed" not in events
    fed.lost.clear()
    fed.expire()  # line-1 answers the re-sent challenge (the others repeat their stored answer)
    assert fed.completed and fed.completed[-1][1] == tuple(members)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 4))
    assert not [e for who, e in fed.rejected if who == "aggregator" and not isinstance(e, StaleMessageError)]


def test_a_restarted_member_answers_late_from_its_ledger(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3)
    fed.lost.add(("line-2", MessageType.RESPONSE))
    fed.run(fed.aggregator.start_round())
    # line-2 restarts: a new machine with the same keys and ledger, nothing in memory
    old = fed.clients["line-2"]
    fed.clients["line-2"] = ClientMachine(
        client_id="line-2",
        federation=FED,
        params=fed.params,
        keypair=old.keypair,
        aggregator=old._elgamal.aggregator,
        task=old.task,
        sign_first=old._sign_first,
        verify_first=old._verify_first,
        min_online=2,
        tables=fed.tables,
        ledger=fed.ledgers["line-2"],
    )
    fed.lost.clear()
    fed.expire()
    assert fed.completed and fed.completed[-1][1] == ("line-0", "line-1", "line-2")


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
    body = MemberEnvelope(members, aggregate_key, 2, b"\x00" * 40, ())
    return Outgoing(
        client_endpoint(cid), MessageType.ENVELOPE, fed.aggregator.round, fed.aggregator.attempt, body
    )


def test_client_refuses_single_member_and_wrong_pk_s(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3, config=RoundConfig(min_online=2, ready_window_s=5))
    fed.run(fed.aggregator.start_round())  # everyone is ready; the window is still open
    own = fed.registry["line-0"].elgamal_public
    fed.run([_envelope_to(fed, "line-0", ("line-0",), own)])
    assert isinstance(fed.rejected[-1][1], OnlineSetTooSmallError)
    wrong = own * 4 % int(small_group.n)
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
    """An entry the aggregator made itself, proof and all, is refused for its signature."""
    fed = Federation.create(small_group, 3)

    def forge(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.CHALLENGE:
            body = msg.body
            assert isinstance(body, Challenge)
            aggregation = fed.aggregator._aggregation
            assert aggregation is not None
            value = fed.group.power(7)  # a first component whose dlog the forger knows
            proof = prove_dlog(fed.group, 7, value, aggregation.context.first_context("line-2"))
            forged = [
                dataclasses.replace(f, value=int(value), proof=proof) if f.member == "line-2" else f
                for f in body.firsts
            ]
            r = fed.group.product([f.value for f in forged])
            return dataclasses.replace(msg, body=Challenge(int(r), tuple(forged)))
        return msg

    fed.tamper = forge
    fed.run(fed.aggregator.start_round())
    refusals = [(who, type(e)) for who, e in fed.rejected if who != "aggregator"]
    # line-2 finds its own entry changed; the others find a proven entry line-2 did not sign
    assert sorted(refusals, key=lambda r: r[0]) == [
        ("line-0", SignatureError),
        ("line-1", SignatureError),
        ("line-2", ChallengeRejectedError),
    ]


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
    from fedcast.shared.errors import ConfigurationError

    for bad in ({"min_online": 1}, {"max_online": 1}, {"ready_window_s": 0}, {"max_attempts": 0}):
        with pytest.raises(ConfigurationError):
            RoundConfig(**bad)  # type: ignore[arg-type]


def test_illegal_transitions_are_refused(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 2)
    with pytest.raises(ProtocolOrderError):
        fed.aggregator.finish()
    with pytest.raises(ProtocolOrderError):
        fed.aggregator.checkpointed()


def _resign_first(
    fed: Federation, culprit: str, msg: Signed, value: int, context_digest: bytes | None = None
) -> dict[str, object]:
    """A cheating member signs its bad A itself: the signature is valid, only the proof can catch it."""
    h, body = msg.header, msg.body
    assert isinstance(body, Upload)
    digest = body.context_digest if context_digest is None else context_digest
    signed = serde.FirstComponentSigned(value, body.first_proof, digest)
    signature = serde.sign_first(fed.signers[culprit], FED, h.round, h.attempt, culprit, signed, fed.ctx)
    return {"first": value, "first_signature": signature, "context_digest": digest}


def _bad_proof_from(fed: Federation, culprit: str) -> Callable[[str, Signed], Signed]:
    """The culprit's attempt-0 upload carries an A_i its proof does not match (signed by itself)."""
    g = int(fed.group.g)

    def cheat(src: str, msg: Signed) -> Signed:
        body = msg.body
        if src != culprit or not isinstance(body, Upload) or msg.header.attempt != 0:
            return msg
        changes = _resign_first(fed, culprit, msg, body.first * g % int(fed.group.n))
        return dataclasses.replace(msg, body=dataclasses.replace(body, **changes))  # type: ignore[arg-type]

    return cheat


def test_a_bad_proof_is_left_out_before_the_challenge_when_so_configured(small_group: GroupParams) -> None:
    config = RoundConfig(
        min_online=2, expected_clients=4, ready_window_s=5, check_proofs_before_challenge=True
    )
    fed = Federation.create(small_group, 4, config=config)
    culprit = "line-1"
    fed.tamper = _bad_proof_from(fed, culprit)
    survivors = sorted(set(fed.clients) - {culprit})
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    # No timeout: the batch proof check names the culprit when the set is complete, before any
    # member answered, so the retry without it is safe.
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    events = fed.aggregator.drain_events()
    assert [e.data["member"] for e in events if e.kind == "invalid_proof"] == [culprit]
    failed = [e for e in events if e.kind == "attempt_failed"]
    assert len(failed) == 1 and failed[0].data == {"phase": "upload", "dropouts": 1, "survivors": 3}


def test_a_bad_proof_makes_the_members_refuse_and_is_named_at_the_response_timeout(
    small_group: GroupParams,
) -> None:
    fed = Federation.create(small_group, 4)
    culprit = "line-1"
    fed.tamper = _bad_proof_from(fed, culprit)
    survivors = sorted(set(fed.clients) - {culprit})
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    # the aggregator sent the challenge unchecked; every honest member checked the proofs and refused
    refusals = [type(e) for who, e in fed.rejected if who in survivors]
    assert refusals == [ChallengeRejectedError] * 3 and not fed.completed
    fed.expire()  # silence: the aggregator checks the proofs, names line-1, retries without it
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    events = fed.aggregator.drain_events()
    assert [e.data["member"] for e in events if e.kind == "invalid_proof"] == [culprit]
    assert [e.data for e in events if e.kind == "attempt_failed"] == [
        {"phase": "response", "dropouts": 1, "survivors": 3}
    ]


def test_a_member_whose_sample_missed_the_bad_proof_uploads_again_on_the_signed_upload(
    small_group: GroupParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation.create(small_group, 4)
    culprit, lucky = "line-1", "line-0"
    fed.tamper = _bad_proof_from(fed, culprit)
    # line-0's keyed sample happens not to include line-1's proof: it answers attempt 0
    monkeypatch.setattr(fed.clients[lucky]._elgamal.sampler, "choose", lambda *args: [])
    survivors = sorted(set(fed.clients) - {culprit})
    fed.run(fed.aggregator.start_round())
    assert fed.ledgers[lucky].last_answer() is not None
    fed.expire()
    # the retry's envelope carries line-1's own signed upload, whose proof fails for the attempt
    # line-0 answered: line-0 accepts it as proof and uploads again for the same model
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    assert fed.ledgers[lucky].last_answer().attempt == 1  # type: ignore[union-attr]


def test_an_honest_signed_upload_is_no_evidence(
    small_group: GroupParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation.create(small_group, 3)
    fed.hold_finish = True
    fed.run(fed.aggregator.start_round())
    assert fed.aggregator.ready_to_finish
    agg = fed.aggregator
    honest_upload = fed.raw[("line-2", MessageType.UPLOAD, 1, 0)]
    keys = {m: fed.registry[m].elgamal_public for m in ("line-0", "line-1")}
    agg.attempt += 1
    agg._to(AggregatorStage.COLLECTING_UPLOADS)
    fed.run(agg._open_attempt(keys, (honest_upload,)))
    refusals = [type(e) for who, e in fed.rejected if who in keys]
    assert refusals == [ModelAlreadyAnsweredError, ModelAlreadyAnsweredError]


def test_a_wrong_share_names_its_sender_and_the_evidence_lets_the_others_upload_again(
    small_group: GroupParams,
) -> None:
    fed = Federation.create(small_group, 4)
    culprit = "line-3"
    g = int(small_group.g)

    def cheat(src: str, msg: Signed) -> Signed:
        body = msg.body
        if src == culprit and isinstance(body, Response) and msg.header.attempt == 0:
            # a valid group element, but not (R^2)^sk: the decryption cannot succeed
            return dataclasses.replace(
                msg, body=dataclasses.replace(body, share=body.share * g % int(fed.group.n))
            )
        return msg

    fed.tamper = cheat
    survivors = sorted(set(fed.clients) - {culprit})
    expected = _expected_model(fed, survivors)
    fed.run(fed.aggregator.start_round())
    # The decryption of attempt 0 failed; the response proofs named line-3; attempt 1 carried
    # line-3's signed response as evidence, and the members that had answered uploaded again.
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    events = fed.aggregator.drain_events()
    assert [e.data["member"] for e in events if e.kind == "invalid_proof"] == [culprit]
    assert [e.data for e in events if e.kind == "attempt_failed"] == [
        {"phase": "decrypt", "dropouts": 1, "survivors": 3}
    ]
    assert all(fed.ledgers[m].last_answer().attempt == 1 for m in survivors)  # type: ignore[union-attr]


def test_a_share_that_fails_the_element_rule_is_evidence_too(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 4)
    culprit = "line-2"

    def minus_one(src: str, msg: Signed) -> Signed:
        body = msg.body
        if src == culprit and isinstance(body, Response) and msg.header.attempt == 0:
            return dataclasses.replace(msg, body=dataclasses.replace(body, share=int(fed.group.n) - 1))
        return msg

    fed.tamper = minus_one
    survivors = sorted(set(fed.clients) - {culprit})
    fed.run(fed.aggregator.start_round())
    # Refused on arrival, yet signed: the attempt is retried at once without the culprit, and the
    # members that had answered accept the signed refusal-worthy share as proof.
    assert fed.completed and fed.completed[-1][1] == tuple(survivors)
    events = fed.aggregator.drain_events()
    assert [e.data["member"] for e in events if e.kind == "invalid_proof"] == [culprit]


def test_without_evidence_a_member_that_answered_refuses_to_upload_again(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3)
    fed.hold_finish = True
    fed.run(fed.aggregator.start_round())
    assert fed.aggregator.ready_to_finish  # every member answered attempt 0
    # A malicious aggregator pretends line-2 dropped and asks the others to encrypt again for the
    # same model without line-2 (crypto note 0.3): both refuse, so there is nothing to subtract.
    agg = fed.aggregator
    keys = {m: fed.registry[m].elgamal_public for m in ("line-0", "line-1")}
    agg.attempt += 1
    agg._to(AggregatorStage.COLLECTING_UPLOADS)
    envelopes = agg._open_attempt(keys)
    fed.run(envelopes)
    refusals = [type(e) for who, e in fed.rejected if who in keys]
    assert refusals == [ModelAlreadyAnsweredError, ModelAlreadyAnsweredError]
    assert not fed.aggregator._aggregation.uploaded  # type: ignore[union-attr]


def test_a_restarted_aggregator_takes_up_the_attempt_it_challenged(small_group: GroupParams) -> None:
    fed = Federation.create(small_group, 3)
    fed.lost.update({(m, MessageType.RESPONSE) for m in fed.clients})  # answers lost in the crash
    members = sorted(fed.clients)
    expected = _expected_model(fed, members)
    fed.run(fed.aggregator.start_round())
    snapshot = fed.aggregator.attempt_snapshot()
    old = fed.aggregator
    fed.aggregator = AggregatorMachine(
        federation=FED,
        params=fed.params,
        secret=old.secret,
        task=old.task,
        config=old.config,
        verify_first=old._verify_first,
        model=old.model,
        round_id=old.round,
        attempt=old.attempt + 1,
        decryptor=old._decryptor,
        clock=fed.clock,
    )
    fed.lost.clear()
    fed.run(fed.aggregator.resume_attempt(snapshot))  # the same challenge again; same answers
    assert fed.completed and fed.completed[-1][1] == tuple(members)
    np.testing.assert_allclose(fed.completed[-1][2], expected, rtol=0, atol=_tolerance(fed, 3))
    with pytest.raises(ProtocolOrderError):  # a snapshot of another round is not taken up
        AggregatorMachine(
            federation=FED,
            params=fed.params,
            secret=old.secret,
            task=old.task,
            config=old.config,
            verify_first=old._verify_first,
            model=old.model,
            round_id=old.round + 1,
            decryptor=old._decryptor,
        ).resume_attempt(snapshot)


def test_a_malformed_upload_spends_the_model_and_is_reported(small_group: GroupParams) -> None:
    """The open problem of docs/SECURITY.md: an out-of-range upload cannot be attributed."""
    fed = Federation.create(small_group, 3)
    culprit = "line-0"

    def junk(src: str, msg: Signed) -> Signed:
        body = msg.body
        if src == culprit and isinstance(body, Upload):
            segments = (body.segments[0] + 1, *body.segments[1:])  # not of the form (1 + mN) H^s
            return dataclasses.replace(msg, body=dataclasses.replace(body, segments=segments))
        return msg

    fed.tamper = junk
    fed.hold_finish = True
    fed.run(fed.aggregator.start_round())
    with pytest.raises(DecryptionError):
        fed.aggregator.finish()
    fed.run(fed.aggregator.decryption_failed("decryption_failed"))
    events = fed.aggregator.drain_events()
    assert any(e.kind == "round_failed" and e.data.get("attributed") is False for e in events)
    assert [e.data["seconds"] for e in events if e.kind == "backoff"] == [5.0]
    assert fed.aggregator.stage == AggregatorStage.IDLE and not fed.completed
    # After the back-off the round restarts with the same model. The members answered for it, so they
    # accept only the same S again (no difference to compute); the spoiler spoils again, and the next
    # back-off is twice as long: the cost of one malicious member stays bounded.
    fed.hold_finish = True
    fed.expire()
    with pytest.raises(DecryptionError):
        fed.aggregator.finish()
    fed.run(fed.aggregator.decryption_failed("decryption_failed"))
    assert [e.data["seconds"] for e in fed.aggregator.drain_events() if e.kind == "backoff"] == [10.0]
    assert not fed.completed
    assert not [e for who, e in fed.rejected if who != "aggregator"]


def test_a_first_component_signed_for_another_context_cannot_frame_its_member(
    small_group: GroupParams,
) -> None:
    """An equivocating aggregator shows line-2 another S; line-2's proof then fails for everyone
    else's context. Its first-component signature covers the context it was made for, so it is
    no evidence for the others; the same failing component signed for their context is."""
    fed = Federation.create(small_group, 3)
    fed.hold_finish = True
    fed.run(fed.aggregator.start_round())
    original = serde.decode(fed.raw[("line-2", MessageType.UPLOAD, 1, 0)], fed.ctx)
    assert isinstance(original.body, Upload)
    bad_first = original.body.first * int(small_group.g) % int(small_group.n)  # fails for every context
    agg = fed.aggregator
    keys = {m: fed.registry[m].elgamal_public for m in ("line-0", "line-1")}
    for context_digest, proven in ((bytes(32), False), (original.body.context_digest, True)):
        changes = _resign_first(fed, "line-2", original, bad_first, context_digest)
        evidence = FirstComponent("line-2", bad_first, original.body.first_proof, changes["first_signature"])  # type: ignore[arg-type]
        agg.attempt += 1
        agg._to(AggregatorStage.COLLECTING_UPLOADS)
        fed.rejected.clear()
        fed.run(agg._open_attempt(keys, (), (evidence,)))
        refusals = [type(e) for who, e in fed.rejected if who in keys]
        # for another context: refused, line-2 is not proven a cheater; for theirs: accepted
        assert refusals == ([] if proven else [ModelAlreadyAnsweredError] * 2)
        if proven:
            break


def test_a_client_is_bound_to_the_first_list_of_first_components_it_is_shown(
    small_group: GroupParams,
) -> None:
    """With sampled proof checks, colluders could move an unprovable A around until a member's
    sample missed it. A member is bound, durably, to the first list it is shown for an attempt:
    refused or not, another list for that attempt is refused; the same list is checked again."""
    fed = Federation.create(small_group, 3)
    challenges: list[Signed] = []

    def hold(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.CHALLENGE:
            challenges.append(msg)
        return msg

    fed.tamper = hold
    fed.unheard.add(("line-0", MessageType.CHALLENGE))  # line-0 does not see the honest challenge yet
    fed.run(fed.aggregator.start_round())
    honest = next(c for c in challenges)
    assert isinstance(honest.body, Challenge)
    h = honest.header
    # a colluder (line-1) re-signs a fresh A whose proof it cannot make: the moved list
    fresh = int(small_group.power(11))
    entry = next(f for f in honest.body.firsts if f.member == "line-1")
    context = fed.clients["line-0"]._attempts[(h.round, h.attempt)].state.context
    signed = serde.FirstComponentSigned(fresh, entry.proof, context.digest)
    signature = serde.sign_first(fed.signers["line-1"], FED, h.round, h.attempt, "line-1", signed, fed.ctx)
    other = tuple(
        dataclasses.replace(f, value=fresh, signature=signature) if f.member == "line-1" else f
        for f in honest.body.firsts
    )
    product = 1
    for f in other:
        product = product * f.value % int(small_group.n)
    moved = dataclasses.replace(honest.body, firsts=other, challenge=product)
    client = fed.clients["line-0"]
    with pytest.raises(ChallengeRejectedError, match="proofs"):
        client.on_challenge(h.round, h.attempt, moved)  # its (full) check catches the bad proof
    with pytest.raises(ChallengeRejectedError, match="another list"):
        client.on_challenge(h.round, h.attempt, honest.body)  # bound to the moved list
    with pytest.raises(ChallengeRejectedError, match="proofs"):
        client.on_challenge(h.round, h.attempt, moved)  # the same list: checked again, same verdict
    assert fed.ledgers["line-0"].pending().firsts_digest is not None  # type: ignore[union-attr]


def test_the_registry_a_client_asks_for_covers_every_member_evidence_names(small_group: GroupParams) -> None:
    """The edge service fetches keys for S plus these ids: a dropped member named by first-component
    evidence is not in the new S, and without its keys the evidence could not be checked."""
    fed = Federation.create(small_group, 3)
    client = fed.clients["line-0"]
    first = FirstComponent("line-2", 5, DlogProof(5, 1), b"\x00" * 64)
    envelope = MemberEnvelope(("line-0", "line-1"), 4, 2, b"", (), (first,))
    assert client.evidence_senders(envelope) == {"line-2"}


def test_a_client_checks_the_signatures_of_its_keyed_sample_only(small_group: GroupParams) -> None:
    """Signatures are checked for the same keyed sample as the proofs (docs/SECURITY.md section 6).

    Each member's sample is pinned to its successor; line-3's signature is broken in the
    challenge: only line-2, whose sample holds line-3, notices.
    """
    fed = Federation.create(small_group, 4)
    checked: dict[str, list[str]] = {}

    class Pinned:
        def __init__(self, member: str) -> None:
            self.member = member

        def choose(self, attempt: object, challenge: int, min_online: int) -> list[str]:
            return [self.member]

    for i, (cid, client) in enumerate(fed.clients.items()):
        client._elgamal.sampler = Pinned(f"line-{(i + 1) % 4}")  # type: ignore[assignment]
        inner = client._verify_first

        def recording(m: str, *rest: object, cid: str = cid, inner: object = inner) -> None:
            checked.setdefault(cid, []).append(m)
            inner(m, *rest)  # type: ignore[operator]

        client._verify_first = recording  # type: ignore[assignment]

    def break_line_3(src: str, msg: Signed) -> Signed:
        if msg.header.type == MessageType.CHALLENGE:
            body = msg.body
            assert isinstance(body, Challenge)
            firsts = tuple(
                dataclasses.replace(f, signature=bytes(64)) if f.member == "line-3" else f
                for f in body.firsts
            )
            return dataclasses.replace(msg, body=dataclasses.replace(body, firsts=firsts))
        return msg

    fed.tamper = break_line_3
    fed.run(fed.aggregator.start_round())
    assert checked == {"line-0": ["line-1"], "line-1": ["line-2"], "line-2": ["line-3"], "line-3": ["line-0"]}
    assert [(who, type(e)) for who, e in fed.rejected if who != "aggregator"] == [("line-2", SignatureError)]


def test_a_result_sent_again_commits_once_and_does_not_end_the_next_round(small_group: GroupParams) -> None:
    """A restarted aggregator re-sends its last checkpointed round's RESULT (it may never
    have gone out). Members that saw it commit nothing twice; members that did not commit
    now; and a copy arriving while the next round runs leaves that round alone."""
    fed = Federation.create(small_group, 3)
    fed.unheard.add(("line-2", MessageType.RESULT))  # line-2 misses round 1's result
    fed.run(fed.aggregator.start_round())
    round_1 = fed.completed[-1]
    assert fed.clients["line-2"].last_completed_round == 0
    commits = {cid: fed.clients[cid].task.export_state() for cid in fed.clients}
    fed.unheard.clear()
    fed.lost.add(("line-0", MessageType.UPLOAD))
    fed.run(fed.next_round)  # round 2 in progress: waiting for line-0's upload
    assert fed.aggregator.round == 2 and fed.aggregator.stage == AggregatorStage.COLLECTING_UPLOADS
    stages = {cid: c.stage for cid, c in fed.clients.items()}
    copy = fed.aggregator.completed_result(1, 0, round_1[1])
    assert [o.type for o in copy] == [MessageType.RESULT]
    before = len(fed.rejected)
    fed.run(copy)
    assert len(fed.rejected) == before
    assert all(c.last_completed_round >= 1 for c in fed.clients.values())
    assert {cid: c.stage for cid, c in fed.clients.items()} == stages  # round 2 goes on
    for cid in ("line-0", "line-1"):  # committed round 1 once, as before the copy
        np.testing.assert_array_equal(fed.clients[cid].task.export_state(), commits[cid])
    late = fed.clients["line-2"].task.export_state()
    assert late is not None and not np.array_equal(late, commits["line-2"])  # committed now
    with pytest.raises(ProtocolOrderError):
        fed.aggregator.completed_result(fed.aggregator.round, 0, round_1[1])
