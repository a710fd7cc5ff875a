"""Attacks on what one upload reveals: prime-modulus, segment-relations, bad-beta, short-exponent.

Each function runs one attack computation (:mod:`fedcast.attacks.primitives`) against
a construction that falls to it and, unchanged, against v2, and counts how many of
the true plaintexts it reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
from gmpy2 import mpz

from fedcast.attacks.context import AttackContext
from fedcast.attacks.legacy_v1 import V1AggregatorKey, V1Client
from fedcast.attacks.parties import (
    AGGREGATOR_VERIFY_KEY,
    FEDERATION,
    ShortExponentGroup,
    V2Parties,
    WeakBaseGroup,
    unchecked_public_key,
    weak_base_exponent,
)
from fedcast.attacks.primitives import bsgs, euclid_relation, l_function, strip_mask
from fedcast.attacks.report import Finding
from fedcast.shared.crypto.elgamal import ClientCiphertext
from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, aggregator_key_context
from fedcast.shared.crypto.proofs import prove_dlog
from fedcast.shared.errors import InvalidGroupElementError, InvalidKeyError

__all__ = ["bad_beta", "prime_modulus", "segment_relations", "short_exponent"]

_MEMBERS = ("c0", "c1", "c2")


def _v1_upload(ctx: AttackContext, segments: Sequence[mpz]) -> tuple[V1AggregatorKey, tuple[mpz, ...]]:
    group = ctx.v1
    key = V1AggregatorKey.generate(group, len(segments))
    clients = {m: V1Client(group, m, key) for m in _MEMBERS}
    keys = {m: c.public for m, c in clients.items()}
    ciphertext, _ = clients["c0"].encrypt(segments, keys, attempt=0)
    return key, ciphertext.segments


def _v2_upload(
    group: GroupParams, segments: Sequence[mpz], parties: V2Parties | None = None
) -> ClientCiphertext:
    parties = parties or V2Parties.create(group, _MEMBERS, len(segments))
    online = parties.online()
    ciphertext, _ = parties.encrypt("c0", segments, online, parties.context(online))
    return ciphertext


def _unmask(group: GroupParams, segments: Sequence[mpz], s: mpz) -> list[mpz | None]:
    """m_j = L(E_j * H_j^-s) with the public H_j = lift(h_j): what s opens."""
    bases = group.segment_bases(FEDERATION, len(segments))
    return [
        l_function(e * gmpy2.invert(gmpy2.powmod(group.lift(h), s, group.n2), group.n2), group.n)
        for e, h in zip(segments, bases, strict=True)
    ]


def _matches(found: Sequence[mpz | None], truth: Sequence[mpz]) -> int:
    return sum(1 for f, t in zip(found, truth, strict=True) if f is not None and f == t)


def prime_modulus(ctx: AttackContext) -> list[Finding]:
    """Crypto note 0.1: an eavesdropper strips every mask with m = L(E (E^n)^-1 mod n^2)."""
    u = ctx.n_segments
    truth = ctx.v1_segments("prime-modulus")
    _, v1_cts = _v1_upload(ctx, truth)
    opened = _matches([strip_mask(e, ctx.v1.p) for e in v1_cts], truth)
    truth2 = ctx.v2_segments("prime-modulus")
    v2_ct = _v2_upload(ctx.group, truth2)
    opened2 = _matches([strip_mask(e, ctx.group.n) for e in v2_ct.segments], truth2)
    return [
        Finding(
            "prime-modulus",
            "v1",
            opened > 0,
            f"an eavesdropper opened {opened} of {u} segments of one "
            "upload with no key: m = L(E (E^p)^-1 mod p^2)",
        ),
        Finding(
            "prime-modulus",
            "v2",
            opened2 > 0,
            f"the same computation with N opened {opened2} of {u} "
            "segments (E^N still carries the mask H^(sN): garbage)",
        ),
    ]


def _relations(cts: Sequence[mpz], truth: Sequence[mpz], exps: Sequence[mpz], n: mpz) -> int:
    """How many of the u - 1 relations (segment 1, segment j) the Euclid trick got right."""
    right = 0
    for j in range(1, len(cts)):
        c = euclid_relation(cts[0], cts[j], exps[0], exps[j], n)
        if c is not None and c == (exps[j] * truth[0] - exps[0] * truth[j]) % n:
            right += 1
    return right


def segment_relations(ctx: AttackContext) -> list[Finding]:
    """Crypto note 0.2: masks X^(e_j) with known e_j leak e_j m_1 - e_1 m_j (mod n)."""
    u = ctx.n_segments
    truth = ctx.v1_segments("segment-relations")
    key, v1_cts = _v1_upload(ctx, truth)
    found = _relations(v1_cts, truth, key.alphas, ctx.v1.p)  # the aggregator knows its alpha_j
    exps = [weak_base_exponent(j) for j in range(1, u + 1)]  # h_j = g^(e_j), e_j public
    weak = WeakBaseGroup(ctx.group.n, ctx.group.insecure)
    truth2 = ctx.v2_segments("segment-relations")
    found_weak = _relations(_v2_upload(weak, truth2).segments, truth2, exps, ctx.group.n)
    found_v2 = _relations(_v2_upload(ctx.group, truth2).segments, truth2, exps, ctx.group.n)
    what = f"of {u - 1} relations"
    return [
        Finding(
            "segment-relations",
            "v1",
            found > 0,
            f"the aggregator recovered {found} {what} alpha_j m_1 - alpha_1 m_j mod p (one r1 for all "
            "segments) matching the true m's",
        ),
        Finding(
            "segment-relations",
            "v2-without-fdh-bases",
            found_weak > 0,
            f"with h_j = g^H(j) anyone recovered {found_weak} {what} H(j) m_1 - H(1) m_j mod N matching the "
            "true m's",
        ),
        Finding(
            "segment-relations",
            "v2",
            found_v2 > 0,
            f"with FDH bases the same computation recovered {found_v2} {what}: no exponent relation between "
            "the h_j is known",
        ),
    ]


def _open_with_key_segment(group: GroupParams, ct: ClientCiphertext) -> list[mpz | None]:
    """If K = 1 + s N (the mask B^r1 is 1), s is readable and opens every data segment."""
    s = l_function(ct.key_segment, group.n)
    return [None] * len(ct.segments) if s is None else _unmask(group, ct.segments, s)


def bad_beta(ctx: AttackContext) -> list[Finding]:
    """beta = N - 1: beta^2 = 1, so B = 1, K_i = 1 + sN exposes s and then every data segment."""
    group, u = ctx.group, ctx.n_segments
    n_minus_1 = group.n - 1
    truth = ctx.v2_segments("bad-beta")
    secret = AggregatorSecretKey.generate(group)
    weak_key = unchecked_public_key(group, n_minus_1, secret)
    weak = _v2_upload(group, truth, V2Parties.create(group, _MEMBERS, u, public=weak_key, secret=secret))
    opened = _matches(_open_with_key_segment(group, weak), truth)
    # v2: the aggregator publishes the same beta with the strongest proof it has (w = 0 fits
    # beta^2 = 1 = G^0); clients accept a key only through AggregatorPublicKey.verified.
    context = aggregator_key_context(FEDERATION, AGGREGATOR_VERIFY_KEY)
    honest = secret.public(federation=FEDERATION, verify_key=AGGREGATOR_VERIFY_KEY)
    refusals = []
    try:
        group.received_square(n_minus_1, "beta")
    except InvalidGroupElementError as exc:
        refusals.append(f"received_square: {exc}")
    opened2 = 0
    try:
        key = AggregatorPublicKey.verified(
            group,
            n_minus_1,
            honest.delivery,
            prove_dlog(group, 0, n_minus_1, frame(b"beta", context)),
            honest.delivery_proof,
            federation=FEDERATION,
            verify_key=AGGREGATOR_VERIFY_KEY,
        )
    except InvalidKeyError as exc:
        refusals.append(f"verified: {exc}")
    else:
        ct = _v2_upload(group, truth, V2Parties.create(group, _MEMBERS, u, public=key, secret=secret))
        opened2 = _matches(_open_with_key_segment(group, ct), truth)
    return [
        Finding(
            "bad-beta",
            "v2-without-element-rule",
            opened > 0,
            f"beta = N-1 squares to 1, so K_i = 1 + sN: "
            f"an eavesdropper read s and opened {opened} of {u} data segments",
        ),
        Finding(
            "bad-beta",
            "v2",
            opened2 > 0,
            f"beta = N-1 refused ({len(refusals)} of 2 checks: "
            f"{'; '.join(refusals) or 'none'}); opened {opened2} of {u} segments",
        ),
    ]


def _bsgs_attack(group: GroupParams, ct: ClientCiphertext, bits: int) -> tuple[list[mpz | None], int, int]:
    """E^N = (H^N)^s (mod N^2): baby-step giant-step for s < 2^bits on segment 1, then unmask."""
    n2 = group.n2
    h1 = group.lift(group.segment_bases(FEDERATION, 1)[0])
    result = bsgs(gmpy2.powmod(h1, group.n, n2), gmpy2.powmod(ct.segments[0], group.n, n2), n2, bits)
    if result.exponent is None:
        return [None] * len(ct.segments), result.baby, result.giant
    return _unmask(group, ct.segments, result.exponent), result.baby, result.giant


def short_exponent(ctx: AttackContext) -> list[Finding]:
    """Crypto note 1: anyone computes E^N = (H^N)^s, so a short s falls to baby-step giant-step."""
    bits, u = ctx.short_bits, ctx.n_segments
    truth = ctx.v2_segments("short-exponent")
    weak = ShortExponentGroup(ctx.group.n, ctx.group.insecure, short_bits=bits)
    found, baby, giant = _bsgs_attack(weak, _v2_upload(weak, truth), bits)
    opened = _matches(found, truth)
    found2, baby2, giant2 = _bsgs_attack(ctx.group, _v2_upload(ctx.group, truth), bits)
    opened2 = _matches(found2, truth)
    half = -(-bits // 2)
    return [
        Finding(
            "short-exponent",
            "v2-without-256-bit-exponents",
            opened > 0,
            f"{bits}-bit s found by BSGS after "
            f"{baby} baby and {giant} giant steps; {opened} of {u} segments opened",
        ),
        Finding(
            "short-exponent",
            "v2",
            opened2 > 0,
            f"no s below 2^{bits} found with the same budget "
            f"(2^{half} baby + {giant2} giant steps, {baby2 + giant2} operations mod N^2); "
            f"v2's s has 256 bits (~2^128 steps); {opened2} of {u} segments opened",
        ),
    ]
