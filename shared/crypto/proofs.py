"""Non-interactive zero-knowledge proofs in QR_N, over the integers, verified on squares.

The group QR_N has an order (p'q') nobody knows, so responses cannot be reduced
mod the order: they are computed over the integers, z = k + c * w, and the
nonce k is drawn :data:`STATISTICAL_BITS` bits wider than c * w so that z hides
w statistically (Girault, Poupard and Stern's GPS identification). Challenges are
Fiat-Shamir hashes of :data:`CHALLENGE_BITS` bits; soundness in QR_N with
safe-prime factors holds because every challenge difference is below the
smallest prime factor of the group order.

Every received value (statement and commitments) passes the element rule of
:meth:`fedcast.shared.crypto.group.GroupParams.check_element`, and each verification
equation is compared **as squares**: a sender can flip the sign of any value it
sends, and only the squares are used downstream (crypto note section 1).

Two statements, each with a bases-fixed base G = g^2:

* :class:`DlogProof` (Schnorr over the integers): knowledge of w with
  X = g^w, i.e. X^2 = G^w. Used for the enrollment key pk_i (proof of
  possession: no rogue keys), the aggregator's beta and delivery key, and every
  first component A_i = g^r2 (a colluder cannot cancel an honest member with
  A_c = A_h^-1 g^t nor copy another member's A, crypto note section 5).
* :class:`EqualityProof` (Chaum-Pedersen over the integers): log_G X^2 =
  log_H Y^2 for a base H = R^2, i.e. a response T_i = (R^2)^sk_i is made with
  the registered key; a wrong share names its sender.

Each proof is bound to a caller-supplied ``context`` (federation, attempt,
member...) through the hash, so it cannot be replayed anywhere else.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
from gmpy2 import mpz

from fedcast.shared.crypto.batch import batch_exponents, multi_exp
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams, frame
from fedcast.shared.errors import InvalidGroupElementError, InvalidProofError

_MPZ = type(mpz(0))

__all__ = [
    "CHALLENGE_BITS",
    "NONCE_BITS",
    "RESPONSE_BITS",
    "STATISTICAL_BITS",
    "DlogProof",
    "DlogStatement",
    "EqualityProof",
    "ScreenedDlog",
    "dlog_batch_holds",
    "dlog_failures",
    "dlog_individual_failures",
    "prove_dlog",
    "prove_equality",
    "screen_dlogs",
    "verify_dlog",
    "verify_equality",
]

#: Fiat-Shamir challenge width: the first 16 bytes of a SHA-256 output. A cheating prover
#: that evaluates the hash q times succeeds with probability at most q * 2^-128, the 128-bit
#: level (the 2048-bit modulus itself gives 112 bits). Every challenge is far below the
#: smallest prime factor of |QR_N| (about 2^1023), as special soundness in QR_N requires.
#: (256-bit challenges would cost a third more in every batch verification: the exponents
#: 2 c e of the batch test grow from 257 to 385 bits.)
CHALLENGE_BITS = 128
#: Statistical hiding of the secret in a response: 2^-128.
STATISTICAL_BITS = 128
#: Nonce width: secret (256) + challenge (128) + 128 bits of statistical slack.
NONCE_BITS = EXPONENT_BITS + CHALLENGE_BITS + STATISTICAL_BITS
#: Every response z = k + c * w is below 2^RESPONSE_BITS; verifiers refuse anything wider.
RESPONSE_BITS = NONCE_BITS + 1

_TAG_DLOG = b"fedcast/v2/proof/dlog"
_TAG_EQUALITY = b"fedcast/v2/proof/dleq"


@dataclass(frozen=True)
class DlogProof:
    """(t, z) with t = G^k and z = k + c * w, c = H(N, X, t, context)."""

    commitment: int
    response: int


@dataclass(frozen=True)
class EqualityProof:
    """(t1, t2, z) with t1 = G^k, t2 = H^k and z = k + c * w, c = H(N, X, H, Y, t1, t2, context)."""

    commitment_g: int
    commitment_h: int
    response: int


@dataclass(frozen=True)
class DlogStatement:
    """One proof to check: X (as received), its proof and its context."""

    public: Any
    proof: DlogProof
    context: bytes


def _challenge(group: GroupParams, tag: bytes, elements: Sequence[Any], context: bytes) -> int:
    width = group.element_bytes
    encoded = [int(e).to_bytes(width, "big") for e in elements]
    n_bytes = int(group.n).to_bytes(width, "big")
    digest = hashlib.sha256(frame(tag, n_bytes, *encoded, context)).digest()
    return int.from_bytes(digest[: CHALLENGE_BITS // 8], "big")


def _nonce() -> mpz:
    return mpz(secrets.randbits(NONCE_BITS))


def _check_secret(secret: Any) -> mpz:
    w = mpz(secret)
    if not 0 <= w < (1 << EXPONENT_BITS):
        raise InvalidProofError("a proof's secret must be a non-negative 256-bit exponent")
    return w


def _check_response(value: Any, what: str) -> mpz:
    if isinstance(value, bool) or not isinstance(value, int | _MPZ):
        raise InvalidProofError(f"{what}: the response is not an integer")
    z = mpz(value)
    if not 0 <= z < (mpz(1) << RESPONSE_BITS):
        raise InvalidProofError(f"{what}: the response is outside [0, 2^{RESPONSE_BITS})")
    return z


def _same_square(group: GroupParams, a: mpz, b: mpz) -> bool:
    n = group.n
    return bool(a * a % n == b * b % n)


# -- knowledge of a discrete log -------------------------------------------------------------------


def prove_dlog(group: GroupParams, secret: Any, public: Any, context: bytes) -> DlogProof:
    """A proof of knowledge of ``secret`` with ``public`` = g^secret mod N."""
    w = _check_secret(secret)
    k = _nonce()
    t = group.power_square(k)
    c = _challenge(group, _TAG_DLOG, (public, t), context)
    return DlogProof(int(t), int(k + c * w))


def _screen_dlog(group: GroupParams, item: DlogStatement, what: str) -> tuple[mpz, mpz, mpz, int]:
    try:
        x, _ = group.received(item.public, f"{what}: statement")
        t = group.check_element(item.proof.commitment, f"{what}: commitment")
    except InvalidGroupElementError as exc:
        raise InvalidProofError(str(exc)) from exc
    z = _check_response(item.proof.response, what)
    return x, t, z, _challenge(group, _TAG_DLOG, (x, t), item.context)


def verify_dlog(
    group: GroupParams, public: Any, proof: DlogProof, context: bytes, what: str = "proof"
) -> None:
    """Raise InvalidProofError unless ``proof`` shows knowledge of log_g ``public`` under ``context``."""
    x, t, z, c = _screen_dlog(group, DlogStatement(public, proof, context), what)
    n = group.n
    lhs = group.power_square(z)
    rhs = t * gmpy2.powmod(x, 2 * c, n) % n
    if not _same_square(group, lhs, rhs):
        raise InvalidProofError(f"{what}: the proof of knowledge does not verify")


#: A statement that passed screening: (index, X, t, z, c), the challenge c already hashed.
ScreenedDlog = tuple[int, mpz, mpz, mpz, int]


def screen_dlogs(
    group: GroupParams, items: Sequence[DlogStatement], *, publics_screened: bool = False
) -> tuple[dict[int, str], list[ScreenedDlog]]:
    """The per-statement part of verification: the element rule on X and t, z's range, the hash.

    ``publics_screened``: the caller has already put every statement X through
    :meth:`GroupParams.screen_elements` and refused the set if any failed (a client checking a
    challenge screens all first components, then the proofs of a sample of them); only the
    commitments are screened here then. Returns (refused indices with why, the statements
    left for the equations).
    """
    n = group.n
    if publics_screened:
        publics = [mpz(item.public) for item in items]
        commitments, failures = group.screen_elements(
            [item.proof.commitment for item in items], lambda k: f"proof {k}: commitment"
        )
    else:
        values, bad = group.screen_elements(
            [v for item in items for v in (item.public, item.proof.commitment)],
            lambda k: f"proof {k // 2}: {'statement' if k % 2 == 0 else 'commitment'}",
        )
        failures = {k // 2: why for k, why in sorted(bad.items(), reverse=True)}
        publics, commitments = values[0::2], values[1::2]
    screened: list[ScreenedDlog] = []
    for i, item in enumerate(items):
        if i in failures:
            continue
        x, t = publics[i], commitments[i]
        if x * x % n == 1:
            failures[i] = f"proof {i}: statement squares to 1"
            continue
        try:
            z = _check_response(item.proof.response, f"proof {i}")
        except InvalidProofError as exc:
            failures[i] = str(exc)
            continue
        screened.append((i, x, t, z, _challenge(group, _TAG_DLOG, (x, t), item.context)))
    return failures, screened


def dlog_batch_holds(
    n: Any, g2: Any, screened: Sequence[ScreenedDlog], *, power: Callable[[int], mpz] | None = None
) -> bool:
    """The small-exponent batch test over screened statements (see :func:`dlog_failures`).

    A batch of one is checked directly. Pure function of ints, so a helper process can run
    it on its share of a set (``services/aggregator/foldpool.py``). ``power``, if given,
    must compute g2^e mod n (the group's fixed-base table: :meth:`GroupParams.power_square`).
    """
    modulus, base = mpz(n), mpz(g2)
    if len(screened) < 2:
        return all(
            (gmpy2.powmod(base, z, modulus) ** 2 - (t * gmpy2.powmod(x, 2 * c, modulus)) ** 2) % modulus == 0
            for _, x, t, z, c in screened
        )
    es = batch_exponents(len(screened))
    exponent = sum(e * int(z) for e, (_, _, _, z, _) in zip(es, screened, strict=True))
    lhs = gmpy2.powmod(base, exponent, modulus) if power is None else power(exponent)
    bases = [t for _, _, t, _, _ in screened] + [x for _, x, _, _, _ in screened]
    exps = es + [2 * c * e for e, (_, _, _, _, c) in zip(es, screened, strict=True)]
    rhs = multi_exp(bases, exps, modulus)
    return bool(lhs * lhs % modulus == rhs * rhs % modulus)


def dlog_individual_failures(group: GroupParams, screened: Sequence[ScreenedDlog]) -> dict[int, str]:
    """Each screened statement checked on its own (to name culprits after a failed batch)."""
    n = group.n
    return {
        i: f"proof {i}: the proof of knowledge does not verify"
        for i, x, t, z, c in screened
        if not _same_square(group, group.power_square(z), t * gmpy2.powmod(x, 2 * c, n) % n)
    }


def dlog_failures(
    group: GroupParams, items: Sequence[DlogStatement], *, publics_screened: bool = False
) -> dict[int, str]:
    """Indices of the proofs in ``items`` that do not verify, with why; empty if all do.

    Every statement X (unless ``publics_screened``, see :func:`screen_dlogs`) and
    commitment t passes the element rule, then one small-exponent
    batch test covers the whole set (:mod:`fedcast.shared.crypto.batch`):
    (G^(sum e_i z_i))^2 = (prod t_i^e_i X_i^(2 c_i e_i))^2. If it fails, each proof is
    checked on its own to name the culprits.
    """
    failures, screened = screen_dlogs(group, items, publics_screened=publics_screened)
    g2 = group.g * group.g % group.n
    if screened and not dlog_batch_holds(group.n, g2, screened, power=group.power_square):
        failures.update(dlog_individual_failures(group, screened))
    return failures


# -- equality of discrete logs ---------------------------------------------------------------------


def prove_equality(
    group: GroupParams, secret: Any, public: Any, base_h: Any, value: Any, context: bytes
) -> EqualityProof:
    """A proof that log_g ``public`` = log_H ``value`` (= ``secret``), for a square H = ``base_h``."""
    w = _check_secret(secret)
    k = _nonce()
    n = group.n
    t1 = group.power_square(k)
    t2 = gmpy2.powmod(base_h, k, n)
    c = _challenge(group, _TAG_EQUALITY, (public, base_h, value, t1, t2), context)
    return EqualityProof(int(t1), int(t2), int(k + c * w))


def verify_equality(
    group: GroupParams,
    public: Any,
    base_h: Any,
    value: Any,
    proof: EqualityProof,
    context: bytes,
    what: str = "proof",
) -> None:
    """Raise InvalidProofError unless (G^z)^2 = (t1 X^(2c))^2 and (H^z)^2 = (t2 Y^c)^2.

    ``public`` X and ``value`` Y are as received (they pass the element rule here);
    ``base_h`` H must be a square the verifier computed itself (R^2).
    """
    try:
        x = group.check_element(public, f"{what}: public key")
        y, _ = group.received(value, f"{what}: share")
        t1 = group.check_element(proof.commitment_g, f"{what}: commitment")
        t2 = group.check_element(proof.commitment_h, f"{what}: commitment")
    except InvalidGroupElementError as exc:
        raise InvalidProofError(str(exc)) from exc
    z = _check_response(proof.response, what)
    h = mpz(base_h)
    c = _challenge(group, _TAG_EQUALITY, (x, h, y, t1, t2), context)
    n = group.n
    if not _same_square(group, group.power_square(z), t1 * gmpy2.powmod(x, 2 * c, n) % n):
        raise InvalidProofError(f"{what}: the share proof does not verify against the public key")
    if not _same_square(group, gmpy2.powmod(h, z, n), t2 * gmpy2.powmod(y, c, n) % n):
        raise InvalidProofError(f"{what}: the share is not the challenge raised to the registered key")
