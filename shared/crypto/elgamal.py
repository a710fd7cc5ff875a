"""The v2 secure-aggregation scheme (crypto note section 1): multi-key ElGamal on an RSA modulus.

Client i in the online set S, with packed segments m_1..m_u (each < N / |S|max)
and fresh s, r1, r2 of 256 bits per attempt::

    K_i  = (1 + s N) * B^r1                  mod N^2   key segment, B = lift(beta^2)
    E_ij = (1 + m_j N) * H_j^s               mod N^2   data segments, H_j = lift(h_j)
    A_i  = g^r2,  B_i = g^r1 * pkbar_S^r2    mod N     pkbar_S = prod pk_k^2
    pi_i = proof of knowledge of r2 (A_i^2 = (g^2)^r2), bound to the attempt

The aggregator sends every member (A_j, pi_j) for all j in S. A member answers
only a challenge that lists exactly S, carries its own A_i unchanged, whose
every proof verifies, with no two A's of equal square, and R = prod A_j; it
answers ``T_i = (R^2)^sk_i`` with a proof that log_{g^2} pk_i^2 = log_{R^2} T_i.
Then::

    K = prod K_i, E_j = prod E_ij (mod N^2);  d = prod B_i, T = prod T_i (mod N)
    xbar  = (d / T)^2 = g^(2 sum r1)
    s_sum = L(K * lift(xbar)^-alpha)          (strict L: the value must be 1 mod N)
    M_j   = L(E_j * H_j^-s_sum) = sum_i m_ij  (refused unless s_sum < |S| 2^256)

Why each piece: the key segment is the paper's scheme with one segment and one
alpha (no Euclid relation between segments, crypto note 0.2), and its plaintext
s is random, so the aggregator learns only sum s. The data masks H_j^s =
lift(h_j^s) are the DDH key-homomorphic PRF F(s, j) = h_j^s, lifted; their
product over S is H_j^(sum s), removable only after decrypting sum s. alpha keeps
the aggregate from eavesdroppers, who can compute xbar too. Nothing can be
stripped without the factors of N (crypto note 0.1).

The proofs of knowledge of r2 stop a colluder's A_c = A_h^-1 g^t (which would make
R = A_v and decrypt v alone) and copies of a victim's upload under other ids;
the response proofs name a member that sends a wrong share (docs/SECURITY.md).

Pure: ints in, ints out, no I/O. Signatures, retries and the "one answer per
model" rule (crypto note 0.3) are the protocol layer's business.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import gmpy2
from gmpy2 import mpz

from fedcast.shared.crypto.fixedbase import FixedBaseSet
from fedcast.shared.crypto.group import EXPONENT_BITS, GroupParams, frame
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.proofs import (
    DlogProof,
    DlogStatement,
    EqualityProof,
    dlog_failures,
    prove_dlog,
    prove_equality,
    verify_equality,
)
from fedcast.shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    CiphertextShapeError,
    DecryptionError,
    InvalidGroupElementError,
    InvalidProofError,
    NotAMemberError,
    OnlineSetTooSmallError,
    PackingError,
    ProtocolOrderError,
)

_MPZ = type(mpz(0))

__all__ = [
    "DEFAULT_MIN_ONLINE",
    "DEFAULT_TABLE_MEMORY_BYTES",
    "MIN_ONLINE",
    "SAMPLING_SECURITY_BITS",
    "Aggregation",
    "AttemptContext",
    "ClientAttempt",
    "ClientCiphertext",
    "ClientTables",
    "Decryptor",
    "DlogVerifier",
    "ElGamalClient",
    "OnlineSet",
    "ProofSampler",
    "SegmentFolder",
    "SerialFolder",
    "SignedFirst",
    "challenge_digest",
    "check_challenge",
    "compute_challenge",
    "proof_sample_size",
    "respond_to",
]

#: Never fewer than two members: with |S| = 1 the aggregate is one client's input.
MIN_ONLINE = 2
#: What a client enforces unless configured otherwise. An honest client is safe while the
#: corrupt members of S number fewer than (its enforced minimum |S|) - 1: with S = {victim}
#: plus colluders the sum is the victim's input in any secure aggregation (crypto note 1).
DEFAULT_MIN_ONLINE = 3
#: Memory for the fixed-base tables (per party). 100,000 parameters need ~1,430 tables.
DEFAULT_TABLE_MEMORY_BYTES = 256 * 1024 * 1024
_TAG_ATTEMPT = b"fedcast/v2/attempt"
_TAG_CHALLENGE = b"fedcast/v2/challenge"
_TAG_SAMPLE = b"fedcast/v2/proof-sample-key"
#: A bad first-component proof escapes every honest member's sampled check with probability at
#: most 2^-SAMPLING_SECURITY_BITS (:func:`proof_sample_size`).
SAMPLING_SECURITY_BITS = 128


def _is_int(value: Any) -> bool:
    """An int or mpz, never a bool, str or float (mpz() would parse or truncate those)."""
    return isinstance(value, int | _MPZ) and not isinstance(value, bool)


def _u64(value: int) -> bytes:
    return int(value).to_bytes(8, "big")


@dataclass(frozen=True)
class AttemptContext:
    """What every proof of one attempt is bound to: federation, model, round, attempt and S.

    The model digest is SHA-256 of the model bytes each member received; because it is
    in every member's proof, members that were sent different models cannot verify
    each other's proofs, so the aggregator cannot hand them different models.
    """

    federation: str
    model_digest: bytes
    round: int
    attempt: int
    members: tuple[str, ...]

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over all fields (computed once: the member list can hold thousands of ids)."""
        parts = [
            _TAG_ATTEMPT,
            self.federation.encode(),
            self.model_digest,
            _u64(self.round),
            _u64(self.attempt),
        ]
        parts.extend(m.encode() for m in self.members)
        return hashlib.sha256(frame(*parts)).digest()

    def first_context(self, member: str) -> bytes:
        """The context of member's proof of knowledge of r2."""
        return frame(b"first", self.digest, member.encode())

    def response_context(self, member: str) -> bytes:
        """The context of member's response proof."""
        return frame(b"response", self.digest, member.encode())


def challenge_digest(group: GroupParams, challenge: Any) -> bytes:
    """SHA-256 naming the challenge R a response answers (carried in the signed response)."""
    return hashlib.sha256(frame(_TAG_CHALLENGE, int(challenge).to_bytes(group.element_bytes, "big"))).digest()


@dataclass(frozen=True)
class OnlineSet:
    """The online set S of one attempt: sorted member ids and their registered public keys."""

    group: GroupParams
    members: tuple[str, ...]
    public_keys: tuple[mpz, ...]
    squares: tuple[mpz, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {m: i for i, m in enumerate(self.members)})

    @classmethod
    def from_registry(cls, group: GroupParams, keys: Mapping[str, Any]) -> OnlineSet:
        """Build S from {client id: registered pk_i}, each key through the element rule."""
        members = tuple(sorted(keys))
        checked = [group.received(keys[m], f"public key of {m!r}") for m in members]
        publics = tuple(pk for pk, _ in checked)
        squares = tuple(square for _, square in checked)
        if len(set(squares)) != len(squares):
            # Two ids with one key would let one client count as two members.
            raise AggregateKeyMismatchError("two members share a public key")
        return cls(group, members, publics, squares)

    @cached_property
    def aggregate_key(self) -> mpz:
        """pkbar_S = prod pk_i^2 mod N."""
        return self.group.product(self.squares)

    def __len__(self) -> int:
        return len(self.members)

    def key_of(self, client_id: str) -> mpz:
        index = self._index.get(client_id)
        if index is None:
            raise NotAMemberError(f"{client_id!r} is not in the online set")
        return self.public_keys[index]


@dataclass(frozen=True)
class ClientCiphertext:
    """One client's upload: K_i, the u data segments mod N^2, (A_i, B_i) mod N and A_i's proof."""

    key_segment: mpz
    segments: tuple[mpz, ...]
    first: mpz  # A_i = g^r2
    second: mpz  # B_i = g^r1 * pkbar_S^r2
    proof: DlogProof

    def __repr__(self) -> str:
        return f"ClientCiphertext(n_segments={len(self.segments)})"


@dataclass(frozen=True)
class SignedFirst:
    """A member's first component as the challenge carries it (signature checked by the caller)."""

    value: int
    proof: DlogProof


@dataclass
class ClientAttempt:
    """What a client keeps between uploading and answering: public values only.

    The r's and s are discarded right after encrypting; ``answered`` enforces one
    response per attempt (the protocol layer enforces one per model).
    """

    client_id: str
    online: OnlineSet
    context: AttemptContext
    first: mpz
    min_online: int = DEFAULT_MIN_ONLINE  # what this client enforced for S (sizes the proof sample)
    answered: bool = field(default=False)


class ClientTables:
    """The client's fixed bases: B = lift(beta^2) and H_j = lift(h_j), with comb tables.

    Built once per deployment (a lift is one |N|-bit exponentiation mod N^2, ~8 ms at
    2048 bits); simulations share one instance between their clients.
    """

    def __init__(
        self,
        aggregator: AggregatorPublicKey,
        *,
        federation: str,
        n_segments: int,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
    ) -> None:
        group = aggregator.group
        if n_segments < 1:
            raise CiphertextShapeError("need at least one data segment")
        self.group = group
        self.federation = federation
        self.key_base = FixedBaseSet(
            [group.lift(aggregator.beta_square)],
            group.n2,
            exponent_bits=EXPONENT_BITS,
            memory_budget_bytes=table_memory_bytes,
        )
        bases = group.segment_bases(federation, n_segments)
        self.data_bases = FixedBaseSet(
            [group.lift(h) for h in bases],
            group.n2,
            exponent_bits=EXPONENT_BITS,
            memory_budget_bytes=max(0, table_memory_bytes - self.key_base.estimated_memory_bytes),
        )

    @property
    def n_segments(self) -> int:
        return len(self.data_bases)


def _embed(group: GroupParams, m: mpz, mask: mpz) -> mpz:
    """(1 + m N) * mask mod N^2, as mask + N * (m * mask mod N)."""
    n = group.n
    return (mask + n * (m * mask % n)) % group.n2


class ElGamalClient:
    """Client-side encryption and challenge response over shared :class:`ClientTables`."""

    def __init__(
        self,
        keypair: ClientKeyPair,
        aggregator: AggregatorPublicKey,
        tables: ClientTables,
        *,
        check_all_proofs: bool = False,
    ) -> None:
        if keypair.group != aggregator.group or tables.group != keypair.group:
            raise AggregateKeyMismatchError("client key, aggregator key and tables use different groups")
        self.keypair = keypair
        self.group = keypair.group
        self.aggregator = aggregator
        self.tables = tables
        self.sampler = ProofSampler.for_client(keypair, check_all=check_all_proofs)

    def encrypt(
        self,
        segments: Sequence[Any],
        online: OnlineSet,
        context: AttemptContext,
        *,
        client_id: str,
        claimed_aggregate_key: Any,
        min_online: int = DEFAULT_MIN_ONLINE,
    ) -> tuple[ClientCiphertext, ClientAttempt]:
        """Encrypt packed segments for S after the client-side checks; fresh s, r1, r2 every call.

        Refuses (typed errors) unless: the context lists S, the client is a member under
        its own key, |S| >= max(2, min_online), and the claimed pkbar_S equals the
        product of the listed members' keys squared.
        """
        group = self.group
        minimum = max(MIN_ONLINE, min_online)
        if len(online) < minimum:
            raise OnlineSetTooSmallError(f"|S| = {len(online)} is below the minimum {minimum}")
        if context.members != online.members or context.federation != self.tables.federation:
            raise NotAMemberError("the attempt context does not describe this online set")
        if online.key_of(client_id) != self.keypair.public:
            raise NotAMemberError(f"S lists {client_id!r} under a key that is not this client's")
        pk_s = online.aggregate_key
        if not _is_int(claimed_aggregate_key) or mpz(claimed_aggregate_key) != pk_s:
            raise AggregateKeyMismatchError("pkbar_S is not the product of the members' keys")
        if len(segments) != self.tables.n_segments:
            raise CiphertextShapeError(f"expected {self.tables.n_segments} segments, got {len(segments)}")
        limit = mpz(1) << group.plaintext_bits
        ms = [mpz(m) for m in segments]
        if any(not 0 <= m < limit for m in ms):
            raise PackingError("a segment plaintext is outside [0, 2^(|N|-1))")
        s, r1, r2 = group.random_exponent(), group.random_exponent(), group.random_exponent()
        n = group.n
        key_segment = _embed(group, s, self.tables.key_base.pow_all(r1)[0])
        body = tuple(
            _embed(group, m, mask) for m, mask in zip(ms, self.tables.data_bases.pow_all(s), strict=True)
        )
        first = group.power(r2)
        second = group.power(r1) * gmpy2.powmod(pk_s, r2, n) % n
        proof = prove_dlog(group, r2, first, context.first_context(client_id))
        del s, r1, r2  # never kept, never reused
        ciphertext = ClientCiphertext(key_segment, body, first, second, proof)
        return ciphertext, ClientAttempt(client_id, online, context, first, minimum)

    def respond(
        self, attempt: ClientAttempt, challenge: Any, firsts: Mapping[str, SignedFirst]
    ) -> tuple[mpz, EqualityProof]:
        """(T_i, proof) for R, only after :func:`check_challenge`; at most once per attempt."""
        if attempt.answered:
            raise ChallengeRejectedError("this attempt's challenge was already answered")
        r_square = check_challenge(self.group, attempt, challenge, firsts, sampler=self.sampler)
        attempt.answered = True
        return respond_to(self.keypair, attempt, r_square)


def respond_to(keypair: ClientKeyPair, attempt: ClientAttempt, r_square: Any) -> tuple[mpz, EqualityProof]:
    """T_i = (R^2)^sk_i with its equality proof, for a challenge already checked."""
    group = keypair.group
    share = gmpy2.powmod(r_square, keypair.secret, group.n)
    proof = prove_equality(
        group,
        keypair.secret,
        keypair.public,
        r_square,
        share,
        attempt.context.response_context(attempt.client_id),
    )
    return share, proof


def compute_challenge(group: GroupParams, first_components: Iterable[Any]) -> mpz:
    """R = prod A_i mod N (ChelGen)."""
    return group.product(list(first_components))


def proof_sample_size(members: int, min_online: int) -> int:
    """How many of the other members' first components (proof and signature) one client checks.

    Every attack the proofs and signatures stop (a colluder's A_c = A_h^-1 g^t, a copied
    upload, an honest member's entry forged by the aggregator) needs *every* honest
    member of S to answer the challenge: one refusal leaves a share missing and nothing
    can be decrypted. And each honest member's list then holds at least one bad entry
    (a failing proof or signature): a list without one holds every honest member's own
    A, signed, and otherwise only values whose discrete logarithms their provers know,
    so its R unmasks nothing but the honest sum. Under the collusion bound the honest members
    number at least h = |S| - (min_online - 2). If each checks k proofs drawn uniformly
    (and unpredictably) from the |S| - 1 others, a given bad proof escapes all of them
    with probability at most (1 - k/(|S|-1))^h <= exp(-k h / (|S|-1)); k is the smallest
    value that makes this at most 2^-SAMPLING_SECURITY_BITS. Below ~90 members that is
    every proof; at 610 members with a minimum of 3 it is 89 of 609.
    """
    others = members - 1
    honest = members - max(0, min_online - 2)
    if others <= 0 or honest <= 1:
        return max(others, 0)
    needed = math.ceil(SAMPLING_SECURITY_BITS * math.log(2) * others / honest)
    return min(others, needed)


class ProofSampler:
    """Which proofs a client checks: a keyed, deterministic choice per challenge.

    The members are ranked by HMAC-SHA256(key, attempt digest || R || member) and the
    first k taken. Keyed with a secret only this client has (derived from sk_i), the
    choice is unpredictable to the aggregator and colluders; deterministic, a challenge
    sent again meets the same choice (a fresh draw per re-send would let an aggregator
    re-roll until a bad proof is missed). ``check_all`` checks every proof.
    """

    def __init__(self, key: bytes, *, check_all: bool = False) -> None:
        self._key = key
        self.check_all = check_all
        # The last choice and what it was made from: the client asks twice per challenge (its
        # proofs in check_challenge, its signatures in the protocol layer). Performance only.
        self._last: tuple[tuple[Any, ...], list[str]] | None = None

    def __repr__(self) -> str:
        return f"ProofSampler(check_all={self.check_all}, key=<redacted>)"

    @classmethod
    def for_client(cls, keypair: ClientKeyPair, *, check_all: bool = False) -> ProofSampler:
        secret = int(keypair.secret).to_bytes(EXPONENT_BITS // 8, "big")
        return cls(hashlib.sha256(frame(_TAG_SAMPLE, secret)).digest(), check_all=check_all)

    def choose(self, attempt: ClientAttempt, challenge: int, min_online: int) -> list[str]:
        # Everything the choice depends on (the context digest covers federation, model, round,
        # attempt and S); the same inputs give the same list, so it is computed once.
        inputs = (
            attempt.client_id,
            attempt.online.members,
            attempt.online.group.element_bytes,
            attempt.context.digest,
            int(challenge),
            min_online,
            self.check_all,
        )
        last = self._last
        if last is not None and last[0] == inputs:
            return list(last[1])
        chosen = self._choose(attempt, challenge, min_online)
        self._last = (inputs, chosen)
        return list(chosen)

    def _choose(self, attempt: ClientAttempt, challenge: int, min_online: int) -> list[str]:
        others = [m for m in attempt.online.members if m != attempt.client_id]
        k = len(others) if self.check_all else proof_sample_size(len(others) + 1, min_online)
        if k >= len(others):
            return others
        prefix = attempt.context.digest + int(challenge).to_bytes(attempt.online.group.element_bytes, "big")
        keyed = hmac.new(self._key, prefix, hashlib.sha256)  # the common prefix hashed once

        def rank(member: str) -> bytes:
            mac = keyed.copy()
            mac.update(member.encode())
            return mac.digest()

        return sorted(others, key=rank)[:k]


def check_challenge(
    group: GroupParams,
    attempt: ClientAttempt,
    challenge: Any,
    firsts: Mapping[str, SignedFirst],
    *,
    sampler: ProofSampler | None = None,
) -> mpz:
    """The client's checks of a challenge (crypto note section 5); returns R^2 if they pass.

    A response is a decryption share for whatever R it is computed on: with R = A_k the
    aggregator would unmask member k alone. So: the list is exactly S; our own A_i is
    in it unchanged; every A_j passes the element rule; no two have equal squares (a
    copied upload); the proofs of knowledge of r2 verify in this attempt's context (a
    colluder's A_c = A_h^-1 g^t cannot be proven): all of them without a ``sampler``,
    else the sampler's keyed choice (:func:`proof_sample_size`: the same 2^-128 bound, at
    a cost independent of |S| for large S); and R = prod A_j. Signatures are the
    caller's check, for the same sample (they need the members' verify keys).
    """
    members = attempt.online.members
    if set(firsts) != set(members) or len(firsts) != len(members):
        raise ChallengeRejectedError("the challenge's member list is not the online set encrypted for")
    own = firsts[attempt.client_id].value
    if not _is_int(own) or mpz(own) != attempt.first:
        raise ChallengeRejectedError("the challenge carries a first component that is not ours")
    values, bad = group.screen_elements([firsts[m].value for m in members], lambda i: f"A of {members[i]!r}")
    if bad:
        names = sorted(members[i] for i in bad)
        raise ChallengeRejectedError(f"first components of {names} are invalid: {bad[min(bad)]}")
    if not _is_int(challenge):
        raise ChallengeRejectedError("R is not an integer")
    checked = (
        list(members) if sampler is None else sampler.choose(attempt, int(challenge), attempt.min_online)
    )
    statements = [
        DlogStatement(firsts[m].value, firsts[m].proof, attempt.context.first_context(m)) for m in checked
    ]
    # The element rule on each commitment (every statement passed it above), then every
    # chosen proof in one batch.
    failed = dlog_failures(group, statements, publics_screened=True)
    if failed:
        names = sorted(checked[i] for i in failed)
        raise ChallengeRejectedError(f"proofs of {names} are invalid: {failed[min(failed)]}")
    n = group.n
    squares = {v * v % n for v in values}
    if 1 in squares:
        raise ChallengeRejectedError("a first component squares to 1")
    if len(squares) != len(values):
        raise ChallengeRejectedError("two first components have equal squares (a copied upload)")
    r = compute_challenge(group, values)
    if isinstance(challenge, bool) or not isinstance(challenge, int | _MPZ) or r != challenge:
        raise ChallengeRejectedError("R is not the product of the members' first components")
    return r * r % group.n


class Decryptor:
    """The aggregator's secret key prepared for decryption, built once per process.

    Holds comb tables of the inverted data bases H_j^-1 = lift(h_j^-1), so the
    per-round unmasking M_j = L(E_j * (H_j^-1)^s_sum) costs one fixed-base
    exponentiation per segment with the one exponent s_sum (< |S| 2^256).
    """

    def __init__(
        self,
        secret: AggregatorSecretKey,
        *,
        federation: str,
        n_segments: int,
        max_members: int,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
    ) -> None:
        group = secret.group
        if n_segments < 1:
            raise CiphertextShapeError("need at least one data segment")
        self._secret = secret
        self.group = group
        self.max_members = max_members
        inverses = [group.lift(gmpy2.invert(h, group.n)) for h in group.segment_bases(federation, n_segments)]
        self._unmask = FixedBaseSet(
            inverses,
            group.n2,
            exponent_bits=EXPONENT_BITS + int(max_members).bit_length(),
            memory_budget_bytes=table_memory_bytes,
        )

    @property
    def n_segments(self) -> int:
        return len(self._unmask)

    def __repr__(self) -> str:
        return f"Decryptor(n_segments={self.n_segments})"

    def key_unmask(self, x_square: Any) -> mpz:
        """lift(xbar)^-alpha mod N^2, computed as lift(xbar^alpha)^-1 (one lift per round)."""
        group = self.group
        w = gmpy2.powmod(x_square, self._secret.alpha, group.n)
        return gmpy2.invert(gmpy2.powmod(w, group.n, group.n2), group.n2)

    def data_unmasks(self, s_sum: Any) -> list[mpz]:
        """[H_j^-s_sum mod N^2 for every segment j]."""
        return self._unmask.pow_all(s_sum)


#: verifier(group, statements) -> {index: why} of the proofs that fail (dlog_failures's contract).
DlogVerifier = Callable[[GroupParams, Sequence[DlogStatement]], dict[int, str]]


class SegmentFolder(Protocol):
    """Multiplies the members' data segments together, segment by segment, mod N^2.

    Folding is the aggregator's largest cost (one 4096-bit multiplication per segment
    per member); an implementation may spread it over processes
    (``services/aggregator/foldpool.py``). One folder serves one attempt at a time.
    """

    def start(self, n_segments: int) -> None:
        """Begin a new product of ``n_segments`` segments (all 1)."""
        ...

    def fold(self, segments: Sequence[mpz]) -> None:
        """Multiply one member's segments in."""
        ...

    def products(self) -> list[mpz]:
        """The current products E_j = prod_i E_ij mod N^2."""
        ...


class SerialFolder:
    """A :class:`SegmentFolder` in this process."""

    def __init__(self, modulus: Any) -> None:
        self._m = mpz(modulus)
        self._e: list[mpz] = []

    def start(self, n_segments: int) -> None:
        self._e = [mpz(1)] * n_segments

    def fold(self, segments: Sequence[mpz]) -> None:
        m = self._m
        self._e = [a * e % m for a, e in zip(self._e, segments, strict=True)]

    def products(self) -> list[mpz]:
        return list(self._e)


class Aggregation:
    """The aggregator's state for one attempt: fold uploads, challenge, fold responses, decrypt.

    Uploads are folded into K, E_j and d as they arrive (memory: one upload's worth
    plus a few elements per member). Every upload is screened before it is folded:
    shape, ciphertext ranges, A_i and B_i through the element rule, no repeated A.
    The proofs of knowledge of r2 are checked for all members at once
    (:meth:`verify_uploads`) before the challenge; a member caught there has been
    folded in, so the attempt cannot complete: the caller retries without it (no
    member has answered yet, so the retry is safe). Response proofs are checked only
    when a decryption fails (:meth:`share_culprits`): a failure after the challenge
    must name its culprit, because the other members will not upload again for this
    model without proof that only cheaters were dropped (crypto note 0.3).
    """

    def __init__(
        self,
        online: OnlineSet,
        context: AttemptContext,
        n_segments: int,
        *,
        min_online: int = MIN_ONLINE,
        folder: SegmentFolder | None = None,
        verifier: DlogVerifier | None = None,
    ) -> None:
        if len(online) < max(MIN_ONLINE, min_online):
            raise OnlineSetTooSmallError(f"|S| = {len(online)} is below the minimum")
        if n_segments < 1:
            raise CiphertextShapeError("need at least one data segment")
        if context.members != online.members:
            raise NotAMemberError("the attempt context does not describe this online set")
        self.group = online.group
        self.online = online
        self.context = context
        self.n_segments = n_segments
        self._k = mpz(1)
        self._folder: SegmentFolder = folder if folder is not None else SerialFolder(online.group.n2)
        self._folder.start(n_segments)
        self._verifier: DlogVerifier = verifier if verifier is not None else dlog_failures
        self._products: list[mpz] | None = None
        self._d = mpz(1)
        self._t = mpz(1)
        self._firsts: dict[str, SignedFirst] = {}
        self._first_squares: set[mpz] = set()
        self._shares: dict[str, tuple[mpz, EqualityProof]] = {}
        self._unverified: list[str] = []
        self._culprits: dict[str, str] = {}

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def uploaded(self) -> frozenset[str]:
        return frozenset(self._firsts)

    @property
    def responded(self) -> frozenset[str]:
        return frozenset(self._shares)

    @property
    def missing_uploads(self) -> frozenset[str]:
        return frozenset(self.online.members) - self.uploaded

    @property
    def missing_responses(self) -> frozenset[str]:
        return frozenset(self.online.members) - self.responded

    @property
    def all_uploaded(self) -> bool:
        return len(self._firsts) == len(self.online)

    @property
    def all_responded(self) -> bool:
        return len(self._shares) == len(self.online)

    @property
    def firsts(self) -> dict[str, SignedFirst]:
        """Every uploaded member's first component and proof, as received."""
        return dict(self._firsts)

    @property
    def culprits(self) -> dict[str, str]:
        """Members caught cheating (bad proof or share), with what was wrong."""
        return dict(self._culprits)

    # -- uploads --------------------------------------------------------------------------

    def add_upload(self, client_id: str, ciphertext: ClientCiphertext) -> None:
        """Screen a member's upload (everything but its proof, which is batched) and fold it in."""
        self.online.key_of(client_id)  # raises NotAMemberError
        if client_id in self._firsts:
            raise ProtocolOrderError(f"{client_id!r} already uploaded in this attempt")
        if len(ciphertext.segments) != self.n_segments:
            raise CiphertextShapeError(
                f"expected {self.n_segments} segment ciphertexts, got {len(ciphertext.segments)}"
            )
        group = self.group
        n2 = group.n2
        key_segment = mpz(ciphertext.key_segment)
        segments = [mpz(e) for e in ciphertext.segments]
        # Units mod N^2 are checked on the products at decryption (a non-unit factor
        # survives into the product and fails the strict L); here only the range.
        if not 0 < key_segment < n2 or any(not 0 < e < n2 for e in segments):
            raise CiphertextShapeError("a segment ciphertext is outside 0 < x < N^2")
        # A_i gets the whole element rule with its proof, in verify_uploads (a member failing it
        # there is left out before the challenge); here its range, for the duplicate check.
        if not _is_int(ciphertext.first) or not 1 < ciphertext.first < group.n:
            raise InvalidGroupElementError(f"A of {client_id!r} is outside 1 < x < N")
        first = mpz(ciphertext.first)
        first_square = first * first % group.n
        if first_square == 1:
            raise InvalidGroupElementError(f"A of {client_id!r} squares to 1")
        second, _ = group.received(ciphertext.second, f"B of {client_id!r}")
        if first_square in self._first_squares:
            raise ProtocolOrderError("first component repeats another member's (a copied upload)")
        self._k = self._k * key_segment % n2
        self._folder.fold(segments)
        self._d = self._d * second % group.n
        self._firsts[client_id] = SignedFirst(int(first), ciphertext.proof)
        self._first_squares.add(first_square)
        self._unverified.append(client_id)

    def verify_uploads(self) -> dict[str, str]:
        """Batch-check the proofs of knowledge of r2 not yet checked; return the members caught."""
        pending, self._unverified = self._unverified, []
        statements = [
            DlogStatement(self._firsts[m].value, self._firsts[m].proof, self.context.first_context(m))
            for m in pending
        ]
        caught = {
            pending[i]: f"proof of {pending[i]!r}: {why}"
            for i, why in self._verifier(self.group, statements).items()
        }
        self._culprits.update(caught)
        return caught

    def challenge(self, *, verify: bool = True) -> tuple[mpz, dict[str, SignedFirst]]:
        """R and every member's (A_i, proof): what clients check before answering.

        With ``verify`` False the proofs are left to the members (each checks them before
        answering) and to a later :meth:`verify_uploads` if some member does not answer.
        """
        if not self.all_uploaded:
            raise ProtocolOrderError(f"uploads missing from {sorted(self.missing_uploads)}")
        if verify:
            self.verify_uploads()
        if self._culprits:
            raise InvalidProofError(f"invalid uploads from {sorted(self._culprits)}: retry without them")
        if self._products is None:  # collected from the folder once, before any member answers
            self._products = self._folder.products()
        firsts = {m: self._firsts[m] for m in self.online.members}
        return compute_challenge(self.group, [f.value for f in firsts.values()]), firsts

    def _data_products(self) -> list[mpz]:
        if self._products is None:
            self._products = self._folder.products()
        return self._products

    # -- persistence ----------------------------------------------------------------------

    def uploads_state(self) -> dict[str, Any]:
        """The folded uploads as plain data (hex), once every upload is in and checked.

        What an aggregator persists when it sends the challenge: after that, the members
        will not upload again for this model, so a restarted aggregator must be able to
        finish this very attempt (responses are asked for again; members repeat them).
        """
        if not self.all_uploaded or self._culprits:
            raise ProtocolOrderError("only a complete set of uploads without culprits is persisted")
        return {
            "k": format(self._k, "x"),
            "e": [format(e, "x") for e in self._data_products()],
            "d": format(self._d, "x"),
            "firsts": {
                m: [format(f.value, "x"), format(f.proof.commitment, "x"), format(f.proof.response, "x")]
                for m, f in self._firsts.items()
            },
        }

    @classmethod
    def from_uploads_state(
        cls,
        online: OnlineSet,
        context: AttemptContext,
        n_segments: int,
        state: Any,
        *,
        min_online: int = MIN_ONLINE,
    ) -> Aggregation:
        """Inverse of :meth:`uploads_state` (the aggregator's own file; elements re-screened anyway)."""
        aggregation = cls(online, context, n_segments, min_online=min_online)
        folder = SerialFolder(online.group.n2)
        folder.start(n_segments)
        try:
            e = [mpz(int(x, 16)) for x in state["e"]]
            if len(e) != n_segments or set(state["firsts"]) != set(online.members):
                raise ProtocolOrderError("persisted uploads do not match this attempt")
            folder.fold(e)
            aggregation._folder = folder
            aggregation._products = e
            aggregation._k, aggregation._d = mpz(int(state["k"], 16)), mpz(int(state["d"], 16))
            for m, (a, t, z) in state["firsts"].items():
                # As on arrival: range and square only; the element rule with the proofs in
                # verify_uploads (each restored member is unverified again).
                value = mpz(int(a, 16))
                if not 1 < value < online.group.n:
                    raise ProtocolOrderError(f"persisted A of {m!r} is out of range")
                square = value * value % online.group.n
                if square == 1:
                    raise InvalidGroupElementError(f"persisted A of {m!r} squares to 1")
                aggregation._first_squares.add(square)
                aggregation._firsts[m] = SignedFirst(int(value), DlogProof(int(t, 16), int(z, 16)))
            aggregation._unverified = list(online.members)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolOrderError(f"persisted uploads are malformed: {exc}") from exc
        return aggregation

    # -- responses ------------------------------------------------------------------------

    def add_response(self, client_id: str, share: Any, proof: EqualityProof) -> None:
        """Screen T_i (the element rule) and fold it in; its proof is checked only if decryption fails."""
        self.online.key_of(client_id)
        if not self.all_uploaded:
            raise ProtocolOrderError("responses before the challenge")
        if client_id in self._shares:
            raise ProtocolOrderError(f"{client_id!r} already responded")
        t, _ = self.group.received(share, f"T of {client_id!r}")
        self._t = self._t * t % self.group.n
        self._shares[client_id] = (t, proof)

    def share_culprits(self) -> dict[str, str]:
        """Verify every response proof (after a failed decryption); return the members caught."""
        group = self.group
        r = compute_challenge(group, [self._firsts[m].value for m in self.online.members])
        r_square = r * r % group.n
        caught = {}
        for member, (t, proof) in sorted(self._shares.items()):
            try:
                verify_equality(
                    group,
                    self.online.key_of(member),
                    r_square,
                    t,
                    proof,
                    self.context.response_context(member),
                    f"response of {member!r}",
                )
            except InvalidProofError as exc:
                caught[member] = str(exc)
        self._culprits.update(caught)
        return caught

    # -- decryption -----------------------------------------------------------------------

    def decrypt(self, decryptor: Decryptor) -> list[mpz]:
        """The segment sums M_j = sum_i m_ij; raises DecryptionError if anything is off."""
        if not self.all_responded:
            raise ProtocolOrderError(f"responses missing from {sorted(self.missing_responses)}")
        if decryptor.n_segments != self.n_segments or decryptor.group != self.group:
            raise DecryptionError("the decryptor was built for another group or segment count")
        if len(self.online) > decryptor.max_members:
            raise DecryptionError(
                f"|S| = {len(self.online)} exceeds the {decryptor.max_members} the decryptor is sized for"
            )
        group = self.group
        n, n2 = group.n, group.n2
        x = self._d * gmpy2.invert(self._t, n) % n
        x_square = x * x % n  # g^(2 sum r1) if every share was honest
        y = self._k * decryptor.key_unmask(x_square) % n2
        if y % n != 1:
            raise DecryptionError("the key segment did not decrypt (a wrong share or a malformed upload)")
        s_sum = (y - 1) // n
        if s_sum >= mpz(len(self.online)) << EXPONENT_BITS:
            raise DecryptionError("the sum of the members' s is out of range (a malformed key segment)")
        sums: list[mpz] = []
        for j, (e, u) in enumerate(zip(self._data_products(), decryptor.data_unmasks(s_sum), strict=True)):
            v = e * u % n2
            if v % n != 1:
                raise DecryptionError(f"data segment {j} did not decrypt (a malformed upload)")
            sums.append((v - 1) // n)
        return sums
