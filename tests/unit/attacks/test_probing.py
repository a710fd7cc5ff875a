"""Re-probing the sampled proof check: why a client binds an attempt to the first list it is shown.

A client checks the proofs of a keyed sample of the other members (``ProofSampler``). Colluders
can keep R fixed while moving the one unprovable first component (A_v^-1 g^t, which cancels the
victim's A) from one colluder's entry to another's. If a member could be shown one such list
after another, the aggregator would re-probe it until its sample missed the bad entry, and get
every honest member to answer an R that leaves out the victim. Bound to the first list
(``ClientMachine`` refuses any other list for the attempt:
tests/unit/protocol/test_rounds.py::test_a_client_is_bound_to_the_first_list_of_first_components_it_is_shown),
each honest member gets one chance to catch it.
"""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import (
    AttemptContext,
    ClientAttempt,
    OnlineSet,
    ProofSampler,
    SignedFirst,
    check_challenge,
    compute_challenge,
    proof_sample_size,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof, prove_dlog
from fedcast.shared.errors import ChallengeRejectedError

MEMBERS, MIN_ONLINE = 300, 20  # the bound allows MIN_ONLINE - 2 = 18 colluders


def test_re_probing_defeats_the_sample_and_one_list_per_member_does_not(small_group: GroupParams) -> None:
    group, n = small_group, small_group.n
    colluders_count = MIN_ONLINE - 2
    ids = [f"m{i:04d}" for i in range(MEMBERS)]
    colluders, honest = ids[:colluders_count], ids[colluders_count:]
    victim = honest[0]
    keys = {m: ClientKeyPair.generate(group) for m in ids}
    online = OnlineSet.from_registry(group, {m: keys[m].public for m in ids})
    context = AttemptContext("plant-7", b"\x11" * 32, 1, 0, online.members)
    r2 = {m: group.random_exponent() for m in honest}
    firsts = {
        m: SignedFirst(
            int(group.power(r2[m])), prove_dlog(group, r2[m], group.power(r2[m]), context.first_context(m))
        )
        for m in honest
    }
    total = sum(group.random_exponent() for _ in range(colluders_count)) + (1 << 300)
    victim_inverse = gmpy2.invert(firsts[victim].value, n)

    def placement(p: int) -> dict[str, SignedFirst]:
        """Colluder p carries A_v^-1 g^t (no valid proof can exist); the product stays the same."""
        ts = [group.random_exponent() for _ in range(colluders_count)]
        ts[p] = total - (sum(ts) - ts[p])
        view = dict(firsts)
        for q, c in enumerate(colluders):
            if q == p:
                view[c] = SignedFirst(
                    int(victim_inverse * group.power(ts[q]) % n), DlogProof(int(group.power(5)), 7)
                )
            else:
                a = group.power(ts[q])
                view[c] = SignedFirst(int(a), prove_dlog(group, ts[q], a, context.first_context(c)))
        return view

    views = [placement(p) for p in range(colluders_count)]
    challenge = compute_challenge(group, [views[0][m].value for m in ids])
    assert all(compute_challenge(group, [v[m].value for m in ids]) == challenge for v in views)
    # R leaves the victim's A out: with every honest share, the victim's upload would decrypt alone
    without_victim = compute_challenge(group, [firsts[m].value for m in honest if m != victim])
    assert challenge == without_victim * group.power(total) % n
    assert proof_sample_size(MEMBERS, MIN_ONLINE) < MEMBERS - 1  # the check is sampled here

    def answers(member: str, view: dict[str, SignedFirst]) -> bool:
        attempt = ClientAttempt(member, online, context, mpz(firsts[member].value), MIN_ONLINE)
        try:
            check_challenge(group, attempt, challenge, view, sampler=ProofSampler.for_client(keys[member]))
        except ChallengeRejectedError:
            return False
        return True

    # Without the binding: re-probe each honest member until one placement slips past its sample
    # (each of 18 placements is caught with probability ~0.32: all 18 with ~1e-9).
    probed = [any(answers(m, view) for view in views) for m in honest]
    assert all(probed), "re-probing should get every honest member to answer"
    # With it: each member sees one list; with 282 independent samples some member catches it.
    bound = [answers(m, views[i % colluders_count]) for i, m in enumerate(honest)]
    assert not all(bound)
