"""Attacks across attempts by a malicious aggregator: retry-differencing and bad-share.

The v1 side runs the re-implemented protocol-v1 parties (:mod:`fedcast.attacks.legacy_v1`);
the v2 side runs the real edge clients, :class:`fedcast.shared.protocol.client.ClientMachine` with a
:class:`~fedcast.shared.protocol.ledger.MemoryLedger`, through :mod:`fedcast.attacks.machines`. Success
is decided against the truth: the victim's true segments or update, or the true culprit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gmpy2 import mpz

from fedcast.attacks.context import AttackContext
from fedcast.attacks.legacy_v1 import V1Aggregation, V1AggregatorKey, V1Client
from fedcast.attacks.machines import AttemptRun, MachineFederation
from fedcast.attacks.report import Finding
from fedcast.shared.errors import DecryptionError
from fedcast.shared.wire.messages import Response

__all__ = ["bad_share", "retry_differencing"]

_V1_MEMBERS = ("c0", "c1", "c2", "c3")
_TOLERANCE = 1e-3  # decoded floats: stochastic rounding differs by a few 2^-16 per member


def _v1_round(
    ctx: AttackContext,
    key: V1AggregatorKey,
    clients: Mapping[str, V1Client],
    inputs: Mapping[str, list[mpz]],
    members: Sequence[str],
    attempt: int,
    wrong_share: str | None = None,
) -> V1Aggregation:
    """One v1 attempt over ``members``; ``wrong_share`` multiplies that member's T_i by g."""
    group = ctx.v1
    keys = {m: clients[m].public for m in members}
    aggregation = V1Aggregation(group, key, members)
    states = {}
    for m in members:
        ct, states[m] = clients[m].encrypt(inputs[m], keys, attempt)
        aggregation.add_upload(m, ct)
    r, firsts = aggregation.challenge()
    for m in members:
        share = clients[m].respond(states[m], r, firsts)
        aggregation.add_response(m, share * group.g % group.p if m == wrong_share else share)
    return aggregation


def _v1_setup(
    ctx: AttackContext, label: str
) -> tuple[V1AggregatorKey, dict[str, V1Client], dict[str, list[mpz]]]:
    key = V1AggregatorKey.generate(ctx.v1, ctx.n_segments)
    clients = {m: V1Client(ctx.v1, m, key) for m in _V1_MEMBERS}
    return key, clients, {m: ctx.v1_segments(f"{label}/{m}") for m in _V1_MEMBERS}


def _difference(fed: MachineFederation, first: AttemptRun, second: AttemptRun, victim: str) -> float | None:
    """max |aggregate(first) - aggregate(second) - victim's update|, if both attempts decrypted."""
    if first.sums is None or second.sums is None:
        return None
    diff = fed.decode(first.sums, len(first.members)) - fed.decode(second.sums, len(second.members))
    return float(abs(diff - fed.update_of(victim)).max())


def _answered_already(run: AttemptRun) -> int:
    """How many members refused this attempt because they had answered for the model already."""
    return sum(1 for why in run.refused.values() if why.startswith("model_already_answered"))


def retry_differencing(ctx: AttackContext) -> list[Finding]:
    """Crypto note 0.3: decrypt attempt 0, fake a retry without the victim, decrypt again, subtract."""
    key, clients, inputs = _v1_setup(ctx, "retry")
    victim, survivors = _V1_MEMBERS[0], _V1_MEMBERS[1:]
    sums0 = _v1_round(ctx, key, clients, inputs, _V1_MEMBERS, 0).decrypt()
    sums1 = _v1_round(ctx, key, clients, inputs, survivors, 1).decrypt()
    error = max(abs(int(a - b - m)) for a, b, m in zip(sums0, sums1, inputs[victim], strict=True))
    v1 = Finding(
        "retry-differencing",
        "v1",
        error == 0,
        f"attempt 0 (4 members) minus a fake retry without the "
        f"victim (3 members, who answered again): the victim's {ctx.n_segments} segments, max error {error}",
    )

    # v2: the real ClientMachine, same sequence; then a new round with the same model; then both
    # attempts uploaded before either challenge.
    fed = MachineFederation(ctx.group, 4, seed=ctx.seed)
    target, rest = fed.members[0], fed.members[1:]
    fed.announce(1, 0, fed.members)
    first = fed.run(1, 0, fed.members)
    fed.retry(1, 0, rest)
    retry = fed.run(1, 1, rest)
    fed.announce(2, 0, rest)
    again = fed.run(2, 0, rest)
    errors = [_difference(fed, first, retry, target), _difference(fed, first, again, target)]
    other = MachineFederation(ctx.group, 4, seed=ctx.seed)
    other.announce(1, 0, other.members)
    both = []
    for attempt, members in ((0, other.members), (1, rest)):
        both.append(other.open(1, attempt, members))
        other.upload(both[-1])
    for run in both:
        other.challenge(run)
        other.answer(run)
        other.decrypt(run)
    errors.append(_difference(other, both[0], both[1], target))
    found = [e for e in errors if e is not None and e < _TOLERANCE]
    n = len(rest)
    retry_no, again_no, second_no = (_answered_already(r) for r in (retry, again, both[1]))
    v2 = Finding(
        "retry-differencing",
        "v2",
        bool(found),
        f"attempt 0 {'decrypted' if first.complete else 'did not decrypt'}; {retry_no} of {n} "
        f"ClientMachines refused the fake retry (model_already_answered), {again_no} of {n} a new "
        f"round with the same model, {second_no} of {n} a second challenge after uploading for "
        f"both attempts: {3 - errors.count(None)} of 3 differences computable",
    )
    return [v1, v2]


def bad_share(ctx: AttackContext) -> list[Finding]:
    """A member sends a wrong T_i that is a valid group element: is the culprit named?"""
    key, clients, inputs = _v1_setup(ctx, "bad-share")
    culprit = "c2"
    aggregation = _v1_round(ctx, key, clients, inputs, _V1_MEMBERS, 0, wrong_share=culprit)
    try:
        aggregation.decrypt()
        failed = False
    except DecryptionError:
        failed = True
    named = sorted(aggregation.culprits)
    v1 = Finding(
        "bad-share",
        "v1",
        failed and named != [culprit],
        f"the round {'failed' if failed else 'decrypted'}; "
        f"all {len(_V1_MEMBERS)} shares passed v1's only check (subgroup membership); culprit named: "
        f"{', '.join(named) or 'none'}",
    )

    fed = MachineFederation(ctx.group, 4, seed=ctx.seed)
    group = ctx.group

    def tamper(member: str, response: Response) -> Response:
        if member != culprit:
            return response
        wrong = response.share * group.g * group.g % group.n  # still a square: passes the element rule
        return Response(int(wrong), response.proof, response.challenge_digest)

    fed.announce(1, 0, fed.members)
    first = fed.run(1, 0, fed.members, tamper=tamper)
    named2 = sorted(first.culprits)
    survivors = [m for m in fed.members if m not in first.culprits]
    accepted, decrypted = 0, False
    if first.sums is None and culprit in first.raw_responses:
        fed.retry(1, 0, survivors, "decrypt wrong shares")
        second = fed.run(1, 1, survivors, evidence=(first.raw_responses[culprit],))
        accepted = len(second.jobs)
        if second.sums is not None:
            truth = sum(fed.update_of(m) for m in survivors)
            decrypted = float(abs(fed.decode(second.sums, len(survivors)) - truth).max()) < _TOLERANCE
    v2 = Finding(
        "bad-share",
        "v2",
        first.sums is None and named2 != [culprit],
        f"decryption "
        f"{'failed' if first.sums is None else 'succeeded'}, share_culprits() culprit named: "
        f"{', '.join(named2) or 'none'}; {accepted} of {len(survivors)} honest ClientMachines accepted "
        f"{culprit}'s signed response as evidence; retry {'decrypted' if decrypted else 'did not decrypt'}",
    )
    return [v1, v2]
