"""The active attacks against the real v2 edge client (ClientMachine with a MemoryLedger).

The retry-differencing sequence of crypto note 0.3 is driven through the production state
machine: after answering for a model it refuses a second envelope (or challenge) for that
model, so the aggregator never holds two aggregates to subtract. The same sequence against
a client that forgot its answers shows that the attack code itself works.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcast.attacks.challenge import _cancel_once, _copy_once
from fedcast.attacks.context import AttackContext
from fedcast.attacks.machines import AttemptRun, MachineFederation
from fedcast.attacks.parties import ShortExponentGroup, WeakBaseGroup
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.errors import ModelAlreadyAnsweredError
from fedcast.shared.protocol.ledger import MemoryLedger
from fedcast.shared.wire.messages import Announce, Response, RoundResult, RoundStatus


def _aggregate(fed: MachineFederation, run: AttemptRun) -> np.ndarray:
    assert run.sums is not None
    return fed.decode(run.sums, len(run.members))


def _first_attempt(group: GroupParams) -> tuple[MachineFederation, AttemptRun]:
    fed = MachineFederation(group, 4)
    fed.announce(1, 0, fed.members)
    first = fed.run(1, 0, fed.members)
    assert first.refused == {} and first.complete
    truth = np.sum([fed.update_of(m) for m in fed.members], axis=0)
    assert np.max(np.abs(_aggregate(fed, first) - truth)) < 1e-3  # the aggregator does hold attempt 0
    return fed, first


def test_real_client_machine_refuses_the_fake_retry(small_group: GroupParams) -> None:
    fed, _ = _first_attempt(small_group)
    rest = fed.members[1:]
    fed.retry(1, 0, rest)  # the malicious aggregator pretends c0 dropped out
    for m in rest:
        with pytest.raises(ModelAlreadyAnsweredError):
            fed.machines[m].on_envelope(1, 1, fed.envelope(1, m, rest), fed.registry)
        pending = fed.machines[m].ledger.pending()
        assert pending is not None and (pending.round, pending.attempt) == (1, 0)  # nothing new uploaded
    # A new round that hands out the same model is the same attack, refused the same way.
    announce = Announce(fed.spec.name, fed.spec.upload_size, 5.0)
    for m in rest:
        fed.machines[m].on_announce(2, 0, announce)
        with pytest.raises(ModelAlreadyAnsweredError):
            fed.machines[m].on_envelope(2, 0, fed.envelope(2, m, rest), fed.registry)


def test_a_client_that_forgets_its_answers_falls_to_the_same_sequence(small_group: GroupParams) -> None:
    fed, first = _first_attempt(small_group)
    victim, rest = fed.members[0], fed.members[1:]
    for m in rest:
        fed.machines[m].ledger = MemoryLedger()  # v1's behaviour: no memory of answered models
    fed.retry(1, 0, rest)
    second = fed.run(1, 1, rest)
    assert second.refused == {} and second.complete
    difference = _aggregate(fed, first) - _aggregate(fed, second)
    assert np.max(np.abs(difference - fed.update_of(victim))) < 1e-3
    assert np.max(np.abs(difference - fed.update_of(rest[0]))) > 1e-2


def test_known_gap_an_epsilon_shifted_model_still_differences_a_victim(small_group: GroupParams) -> None:
    """Crypto note 1 and 4: NOT covered yet (verifiable model lineage is planned).

    A model that differs by 1e-12 has another digest, so the one-answer-per-model rule does
    not apply: a fake restart and a new round without the victim recover its update. This
    test documents the gap; when lineage checks land it must fail and be turned around.
    """
    fed, first = _first_attempt(small_group)
    victim, rest = fed.members[0], fed.members[1:]
    for m in fed.members:  # a restart: nothing is committed, the next updates are the same
        fed.machines[m].on_result(1, 0, RoundResult(RoundStatus.FAILED, fed.members, "restart"))
    fed.model = fed.model + 1e-12
    fed.announce(2, 0, rest)
    second = fed.run(2, 0, rest)
    assert second.refused == {} and second.complete
    difference = _aggregate(fed, first) - _aggregate(fed, second)
    assert np.max(np.abs(difference - fed.update_of(victim))) < 1e-3


def test_uploading_for_two_attempts_first_gets_only_one_challenge_answered(small_group: GroupParams) -> None:
    fed = MachineFederation(small_group, 4)
    rest = fed.members[1:]
    fed.announce(1, 0, fed.members)
    runs = []
    for attempt, members in ((0, fed.members), (1, rest)):
        runs.append(fed.open(1, attempt, members))
        fed.upload(runs[-1])
        assert runs[-1].refused == {}
    for run in runs:
        fed.challenge(run)
    fed.answer(runs[0])
    assert runs[0].refused == {}
    for m in rest:
        assert runs[1].challenge is not None
        with pytest.raises(ModelAlreadyAnsweredError):
            fed.machines[m].on_challenge(1, 1, runs[1].challenge)


def test_a_wrong_share_is_named_and_its_signed_response_is_evidence(small_group: GroupParams) -> None:
    fed = MachineFederation(small_group, 4)
    g2 = small_group.g * small_group.g % small_group.n

    def wrong_share(member: str, response: Response) -> Response:
        if member != "c2":
            return response
        return Response(int(response.share * g2 % small_group.n), response.proof, response.challenge_digest)

    fed.announce(1, 0, fed.members)
    first = fed.run(1, 0, fed.members, tamper=wrong_share)
    assert not first.complete and set(first.culprits) == {"c2"}
    fed.retry(1, 0, ("c0", "c1", "c3"), "wrong shares")
    honest = fed.machines["c0"]
    # No evidence, or an honest member's valid response as "evidence": refused.
    for dropped, evidence in (("c2", ()), ("c1", (first.raw_responses["c1"],))):
        members = [m for m in fed.members if m != dropped]
        with pytest.raises(ModelAlreadyAnsweredError):
            honest.on_envelope(1, 1, fed.envelope(1, "c0", members, evidence), fed.registry)
    job = honest.on_envelope(
        1, 1, fed.envelope(1, "c0", ["c0", "c1", "c3"], (first.raw_responses["c2"],)), fed.registry
    )
    assert job.after_answer and job.online.members == ("c0", "c1", "c3")


def test_the_challenge_check_names_the_cancelling_colluder(attack_context: AttackContext) -> None:
    opened, refusals = _cancel_once(attack_context, defended=True)
    assert opened == 0 and len(refusals) == 2
    assert all(why.startswith("challenge_rejected") and "['c']" in why for why in refusals)
    assert _cancel_once(attack_context, defended=False) == (attack_context.n_segments, [])


def test_a_copy_is_refused_by_every_check(attack_context: AttackContext) -> None:
    opened, refusals = _copy_once(attack_context, defended=True)
    assert opened == 0
    assert [why.split(":")[0] for why in refusals] == [
        "invalid_proof",
        "protocol_order",
        "challenge_rejected",
    ]
    assert _copy_once(attack_context, defended=False) == (attack_context.n_segments, [])


def test_the_weakened_groups_differ_from_v2_in_one_thing_only(small_group: GroupParams) -> None:
    weak = WeakBaseGroup(small_group.n, small_group.insecure)
    short = ShortExponentGroup(small_group.n, small_group.insecure, short_bits=32)
    assert weak.g == short.g == small_group.g
    assert weak.segment_bases("f", 2) != small_group.segment_bases("f", 2)
    assert short.segment_bases("f", 2) == small_group.segment_bases("f", 2)
    assert all(0 < short.random_exponent() < 2**32 for _ in range(20))
    assert any(small_group.random_exponent() >= 2**32 for _ in range(20))
