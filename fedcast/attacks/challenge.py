"""Attacks on the challenge by colluding members: cancellation and copy.

The honest members are the real :class:`fedcast.shared.crypto.elgamal.ElGamalClient` (its
``respond`` runs the real :func:`~fedcast.shared.crypto.elgamal.check_challenge`); "v2 without the
defense" answers after :func:`fedcast.attacks.parties.check_challenge_without_proofs`
instead. The aggregator's steps are written out here; success is decided by comparing the
opened segments with the victim's true ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import gmpy2
from gmpy2 import mpz

from fedcast.attacks.context import AttackContext
from fedcast.attacks.parties import V2Parties, check_challenge_without_proofs
from fedcast.attacks.primitives import l_function
from fedcast.attacks.report import Finding
from fedcast.shared.crypto.elgamal import (
    ClientAttempt,
    ClientCiphertext,
    SignedFirst,
    compute_challenge,
    respond_to,
)
from fedcast.shared.crypto.proofs import prove_dlog, verify_dlog
from fedcast.shared.errors import ChallengeRejectedError, FedcastError, InvalidProofError

__all__ = ["cancellation", "copied_upload"]


def _answer(
    parties: V2Parties,
    member: str,
    attempt: ClientAttempt,
    r: mpz,
    firsts: Mapping[str, SignedFirst],
    defended: bool,
    repeated_check: bool = True,
) -> mpz | str:
    """An honest member's share for R (real v2 check, or the check without proofs), or why it refused."""
    try:
        if defended:
            return parties.client(member).respond(attempt, r, firsts)[0]
        r_square = check_challenge_without_proofs(
            parties.group, attempt, r, firsts, repeated_check=repeated_check
        )
        return respond_to(parties.keys[member], attempt, r_square)[0]
    except ChallengeRejectedError as exc:
        return f"{exc.reason}: {exc}"


def _open_victim(parties: V2Parties, ct: ClientCiphertext, x: mpz) -> list[mpz | None]:
    """With g^r1 of the victim (x), its key segment gives s, and s every data segment."""
    group, decryptor = parties.group, parties.decryptor
    s = l_function(ct.key_segment * decryptor.key_unmask(x * x % group.n), group.n)
    if s is None:
        return [None] * len(ct.segments)
    return [l_function(e * u, group.n) for e, u in zip(ct.segments, decryptor.data_unmasks(s), strict=True)]


def _cancel_once(ctx: AttackContext, defended: bool) -> tuple[int, list[str]]:
    group = ctx.group
    parties = V2Parties.create(group, ("v", "h", "c"), ctx.n_segments)
    online = parties.online()
    context = parties.context(online)
    truth = ctx.v2_segments("cancellation")
    ct_v, att_v = parties.encrypt("v", truth, online, context)
    ct_h, att_h = parties.encrypt("h", ctx.v2_segments("cancellation/h"), online, context)
    t = group.random_exponent()
    a_c = gmpy2.invert(ct_h.first, group.n) * group.power(t) % group.n  # A_h^-1 g^t: R = A_v g^t
    firsts = {
        "v": SignedFirst(int(ct_v.first), ct_v.proof),
        "h": SignedFirst(int(ct_h.first), ct_h.proof),
        "c": SignedFirst(int(a_c), prove_dlog(group, t, a_c, context.first_context("c"))),  # its best try
    }
    r = compute_challenge(group, [f.value for f in firsts.values()])
    answers = {m: _answer(parties, m, att, r, firsts, defended) for m, att in (("v", att_v), ("h", att_h))}
    refusals = [a for a in answers.values() if isinstance(a, str)]
    if refusals:
        return 0, refusals
    shares = [a for a in answers.values() if not isinstance(a, str)]
    t_all = shares[0] * shares[1] * gmpy2.powmod(r * r % group.n, parties.keys["c"].secret, group.n) % group.n
    # T = (A_v^2)^sk_S * pkbar_S^t, and pkbar_S^r2_v = (A_v^2)^sk_S: B_v / that = g^r1_v.
    mask = t_all * gmpy2.invert(gmpy2.powmod(online.aggregate_key, t, group.n), group.n) % group.n
    x = ct_v.second * gmpy2.invert(mask, group.n) % group.n
    found = _open_victim(parties, ct_v, x)
    return sum(1 for f, m in zip(found, truth, strict=True) if f == m), []


def cancellation(ctx: AttackContext) -> list[Finding]:
    """A colluder's A_c = A_h^-1 g^t makes R = A_v g^t: the shares then decrypt the victim alone."""
    u = ctx.n_segments
    opened, _ = _cancel_once(ctx, defended=False)
    opened2, refusals = _cancel_once(ctx, defended=True)
    return [
        Finding(
            "cancellation",
            "v2-without-proofs",
            opened > 0,
            f"A_c = A_h^-1 g^t made R = A_v g^t; with the "
            f"honest shares the aggregator decrypted the victim's key segment alone and opened {opened} of "
            f"{u} of its data segments",
        ),
        Finding(
            "cancellation",
            "v2",
            opened2 > 0,
            f"{len(refusals)} of 2 honest members refused the challenge "
            f"(the colluder cannot prove knowledge of log A_c); opened {opened2} of {u} segments",
        ),
    ]


def _copy_once(ctx: AttackContext, defended: bool) -> tuple[int, list[str]]:
    """S = {victim v, copier k, colluder c}: k resubmits v's upload; c's input is known."""
    group = ctx.group
    n, n2 = group.n, group.n2
    parties = V2Parties.create(group, ("v", "k", "c"), ctx.n_segments)
    online = parties.online()
    context = parties.context(online)
    truth, known = ctx.v2_segments("copy"), ctx.v2_segments("copy/c")
    ct_v, att_v = parties.encrypt("v", truth, online, context)
    ct_c, _ = parties.encrypt("c", known, online, context)
    uploads = {"v": ct_v, "k": ct_v, "c": ct_c}
    refusals = []
    if defended:  # the checks the other v2 parties make of a copy
        try:
            verify_dlog(group, ct_v.first, ct_v.proof, context.first_context("k"), "copied proof")
        except InvalidProofError as exc:
            refusals.append(f"{exc.reason}: {exc}")
        aggregation = parties.aggregation(online, context)
        try:
            for m, ct in uploads.items():
                aggregation.add_upload(m, ct)
        except FedcastError as exc:
            refusals.append(f"{exc.reason}: {exc}")
    firsts = {m: SignedFirst(int(ct.first), ct.proof) for m, ct in uploads.items()}
    r = compute_challenge(group, [f.value for f in firsts.values()])
    answer = _answer(parties, "v", att_v, r, firsts, defended, repeated_check=False)
    if isinstance(answer, str):
        return 0, [*refusals, answer]
    r_square = r * r % n
    t_all = answer
    for m in ("k", "c"):  # the colluders answer with their own keys
        t_all = t_all * gmpy2.powmod(r_square, parties.keys[m].secret, n) % n
    k_sum, d = mpz(1), mpz(1)
    e_sum = [mpz(1)] * ctx.n_segments
    for ct in uploads.values():
        k_sum, d = k_sum * ct.key_segment % n2, d * ct.second % n
        e_sum = [a * e % n2 for a, e in zip(e_sum, ct.segments, strict=True)]
    x = d * gmpy2.invert(t_all, n) % n
    s_sum = l_function(k_sum * parties.decryptor.key_unmask(x * x % n), n)
    if s_sum is None:
        return 0, refusals
    sums = [l_function(e * m, n) for e, m in zip(e_sum, parties.decryptor.data_unmasks(s_sum), strict=True)]
    found = [None if s is None else (s - c) // 2 for s, c in zip(sums, known, strict=True)]
    return sum(1 for f, m in zip(found, truth, strict=True) if f == m), refusals


def copied_upload(ctx: AttackContext) -> list[Finding]:
    """A victim's upload resubmitted under a colluder's id: the aggregate weights the victim twice."""
    u = ctx.n_segments
    opened, _ = _copy_once(ctx, defended=False)
    opened2, refusals = _copy_once(ctx, defended=True)
    return [
        Finding(
            "copy",
            "v2-without-copy-checks",
            opened > 0,
            f"S = {{victim, copy, colluder}}: the aggregate is "
            f"2 x victim + the colluder's known input; {opened} of {u} victim segments recovered exactly",
        ),
        Finding(
            "copy",
            "v2",
            opened2 > 0,
            f"the copy was refused {len(refusals)} of 3 ways (copied proof under "
            f"another id, Aggregation.add_upload, the victim's challenge check); opened {opened2} of {u}",
        ),
    ]
