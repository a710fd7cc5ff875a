"""v2 parties as built in :mod:`fedcast.shared.crypto`, and the weakened variants the attacks need.

:class:`V2Parties` is one federation's aggregator key, client keys and tables, with
the real :class:`~fedcast.shared.crypto.elgamal.ElGamalClient` doing every encryption. The
"v2 without the defense" constructions change exactly one thing each:

* :class:`WeakBaseGroup`: h_j = g^H(j) instead of the full-domain hash, so the
  exponent relation between any two h_j is public (crypto note 1, "shorter hashes,
  or h_j = g^H(j), ... bring 0.2 back");
* :class:`ShortExponentGroup`: exponents drawn with a few dozen bits instead of 256;
* :func:`unchecked_public_key`: an aggregator key built without
  :meth:`~fedcast.shared.crypto.keys.AggregatorPublicKey.verified` (no element rule);
* :func:`check_challenge_without_proofs`: the client's challenge check with the
  proofs of knowledge (and optionally the repeated-A check) left out.

Everything else (keys, tables, encryption, responses, decryption) is the real code.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import (
    Aggregation,
    AttemptContext,
    ClientAttempt,
    ClientCiphertext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    SignedFirst,
    compute_challenge,
)
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.proofs import DlogProof
from fedcast.shared.errors import ChallengeRejectedError, InvalidGroupElementError

__all__ = [
    "AGGREGATOR_VERIFY_KEY",
    "FEDERATION",
    "MODEL_DIGEST",
    "ShortExponentGroup",
    "V2Parties",
    "WeakBaseGroup",
    "check_challenge_without_proofs",
    "random_segments",
    "unchecked_public_key",
    "weak_base_exponent",
]

FEDERATION = "attack-demo"
#: The Ed25519 verify key the aggregator's key proofs are bound to (any 32 bytes will do here).
AGGREGATOR_VERIFY_KEY = bytes(32)
#: The model every attempt of these scenarios is about (what the proofs are bound to).
MODEL_DIGEST = hashlib.sha256(b"fedcast attack demo model").digest()


def weak_base_exponent(j: int) -> mpz:
    """e_j = SHA-256("weak h" || j): the public exponent of the weak base h_j = g^(e_j)."""
    return mpz(int.from_bytes(hashlib.sha256(b"weak h" + j.to_bytes(4, "big")).digest(), "big"))


@dataclass(frozen=True, repr=False)
class WeakBaseGroup(GroupParams):
    """v2 without the FDH bases: h_j = g^(e_j) with public e_j (crypto note 1). INSECURE."""

    def segment_bases(self, federation: str, count: int) -> tuple[mpz, ...]:
        return tuple(self.power(weak_base_exponent(j)) for j in range(1, count + 1))


@dataclass(frozen=True, repr=False)
class ShortExponentGroup(GroupParams):
    """v2 whose random exponents (sk, alpha, r1, r2, s) have ``short_bits`` bits. INSECURE."""

    short_bits: int = 32

    def random_exponent(self, bits: int = EXPONENT_BITS) -> mpz:
        return mpz(1 + secrets.randbelow((1 << min(bits, self.short_bits)) - 1))


def unchecked_public_key(group: GroupParams, beta: Any, secret: AggregatorSecretKey) -> AggregatorPublicKey:
    """An aggregator key with any ``beta``, built directly: no proof check, no element rule."""
    honest = secret.public(federation=FEDERATION, verify_key=AGGREGATOR_VERIFY_KEY)
    return AggregatorPublicKey(group, mpz(beta), honest.delivery, DlogProof(0, 0), honest.delivery_proof)


def check_challenge_without_proofs(
    group: GroupParams,
    attempt: ClientAttempt,
    challenge: Any,
    firsts: Mapping[str, SignedFirst],
    *,
    repeated_check: bool = True,
) -> mpz:
    """:func:`fedcast.shared.crypto.elgamal.check_challenge` minus the proofs of knowledge of r2.

    Still checks: the list is S, our own A unchanged, the element rule, (optionally) no
    two A of equal square, and R = prod A. Returns R^2, like the real check.
    """
    members = attempt.online.members
    if set(firsts) != set(members) or mpz(firsts[attempt.client_id].value) != attempt.first:
        raise ChallengeRejectedError("the challenge does not list S with our own A")
    squares: set[mpz] = set()
    values = []
    for m in members:
        try:
            square = group.received_square(firsts[m].value, f"A of {m!r}")
        except InvalidGroupElementError as exc:
            raise ChallengeRejectedError(str(exc)) from exc
        if repeated_check and square in squares:
            raise ChallengeRejectedError(f"A of {m!r} repeats another member's")
        squares.add(square)
        values.append(mpz(firsts[m].value))
    r = compute_challenge(group, values)
    if r != mpz(challenge):
        raise ChallengeRejectedError("R is not the product of the members' first components")
    return r * r % group.n


def random_segments(plaintext_bits: int, count: int, rng: random.Random) -> list[mpz]:
    """``count`` packed-segment stand-ins of ``plaintext_bits`` bits (room left for a sum)."""
    return [mpz(rng.getrandbits(plaintext_bits - 8)) for _ in range(count)]


@dataclass
class V2Parties:
    """An aggregator key, client keys and client tables of one v2 federation (real code)."""

    group: GroupParams
    secret: AggregatorSecretKey
    public: AggregatorPublicKey
    tables: ClientTables
    keys: dict[str, ClientKeyPair]
    max_members: int = 64
    _clients: dict[str, ElGamalClient] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        group: GroupParams,
        members: Sequence[str],
        n_segments: int,
        *,
        public: AggregatorPublicKey | None = None,
        secret: AggregatorSecretKey | None = None,
    ) -> V2Parties:
        """Fresh keys (OS CSPRNG); ``public`` replaces the honest aggregator key if given."""
        secret = secret or AggregatorSecretKey.generate(group)
        public = public or secret.public(federation=FEDERATION, verify_key=AGGREGATOR_VERIFY_KEY)
        # No comb tables: a handful of encryptions is cheaper with plain powmod.
        tables = ClientTables(public, federation=FEDERATION, n_segments=n_segments, table_memory_bytes=0)
        return cls(group, secret, public, tables, {m: ClientKeyPair.generate(group) for m in members})

    @cached_property
    def decryptor(self) -> Decryptor:
        return Decryptor(
            self.secret,
            federation=FEDERATION,
            n_segments=self.tables.n_segments,
            max_members=self.max_members,
            table_memory_bytes=0,
        )

    def client(self, member: str) -> ElGamalClient:
        if member not in self._clients:
            self._clients[member] = ElGamalClient(self.keys[member], self.public, self.tables)
        return self._clients[member]

    def online(self, members: Sequence[str] | None = None) -> OnlineSet:
        chosen = self.keys if members is None else members
        return OnlineSet.from_registry(self.group, {m: self.keys[m].public for m in chosen})

    def context(self, online: OnlineSet, attempt: int = 0) -> AttemptContext:
        return AttemptContext(FEDERATION, MODEL_DIGEST, 1, attempt, online.members)

    def aggregation(self, online: OnlineSet, context: AttemptContext) -> Aggregation:
        """An honest aggregator's state for one attempt (it screens every upload)."""
        return Aggregation(online, context, self.tables.n_segments)

    def encrypt(
        self, member: str, segments: Sequence[Any], online: OnlineSet, context: AttemptContext
    ) -> tuple[ClientCiphertext, ClientAttempt]:
        """The member's real v2 upload for S (checks and fresh randomness included)."""
        return self.client(member).encrypt(
            segments, online, context, client_id=member, claimed_aggregate_key=online.aggregate_key
        )
