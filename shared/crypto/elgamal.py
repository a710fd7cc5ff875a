"""The multi-private-key additive ElGamal scheme (paper sections 3.2-3.4, crypto note 1 and 5).

Client C_i in online set S, with packed segments m_1..m_u (each < 2^(|p|-1)):

    E_ij = (1 + m_j * p) * beta_j'^r1          mod p^2   (beta_j' = lift(beta_j))
    E_i2 = (A_i, B_i) = (g^r2, g^r1 * pk_S^r2)  mod p

Aggregator, after every member uploaded:

    R = prod A_i;  each member answers T_i = R^sk_i after checking R
    E_agg_j = prod_i E_ij mod p^2;  d = prod B_i;  T = prod T_i
    x = d / T = g^(sum r1) mod p;   x' = lift(x)     (once per round)
    M_j = L(E_agg_j * x'^(-alpha_j) mod p^2) = sum_i m_ij,  L(y) = (y - 1) / p

The printed formula (d/T)^-alpha mod p^2 does not round-trip; working in the
order-q subgroup of Z_{p^2}^* through the lift does (crypto note section 1).

This module is pure: ints in, ints out, no I/O. Who talks to whom, signatures
and retries are the protocol layer's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
from gmpy2 import mpz

from shared.crypto.batch import check_elements, invalid_elements, screen_element
from shared.crypto.fixedbase import CombShape, FixedBaseSet, pow_many_exponents
from shared.crypto.group import GroupParams
from shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    CiphertextShapeError,
    DecryptionError,
    InvalidGroupElementError,
    NotAMemberError,
    OnlineSetTooSmallError,
    PackingError,
    ProtocolOrderError,
)

__all__ = [
    "DEFAULT_TABLE_MEMORY_BYTES",
    "MIN_ONLINE",
    "Aggregation",
    "ClientAttempt",
    "ClientCiphertext",
    "Decryptor",
    "ElGamalClient",
    "OnlineSet",
    "aggregate_public_key",
    "compute_challenge",
    "lifted_bases",
    "respond_to_challenge",
]

#: Never fewer than two members: with |S| = 1 the aggregate is one client's input (paper 4.2).
MIN_ONLINE = 2
#: Memory for the client's fixed-base tables. 100,000 parameters need ~1,400 tables of
#: ~145 KB (h=8 comb, 2048-bit group), ~210 MB; a Pi-class device sets less and the
#: remaining bases fall back to powmod.
DEFAULT_TABLE_MEMORY_BYTES = 256 * 1024 * 1024
# Below this many segments a per-round table costs more than it saves.
_DECRYPT_TABLE_MIN_SEGMENTS = 8


def aggregate_public_key(group: GroupParams, public_keys: Iterable[Any]) -> mpz:
    """pk_S = prod pk_i mod p (AggPKGen)."""
    acc = mpz(1)
    for pk in public_keys:
        acc = acc * mpz(pk) % group.p
    return acc


@dataclass(frozen=True)
class OnlineSet:
    """The online set S of one round attempt: member ids and their registered public keys.

    Members are kept in sorted id order so every party derives the same canonical list.
    """

    group: GroupParams
    members: tuple[str, ...]
    public_keys: tuple[mpz, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # key_of runs once per message: a dict, not a scan of |S| ids
        object.__setattr__(self, "_index", {m: i for i, m in enumerate(self.members)})

    @classmethod
    def from_registry(cls, group: GroupParams, keys: Mapping[str, Any]) -> OnlineSet:
        """Build S from {client id: registered pk_i}, validating every key."""
        members = tuple(sorted(keys))
        if len(members) != len(keys):  # pragma: no cover - dict keys are unique
            raise NotAMemberError("duplicate member ids")
        pks = tuple(
            check_elements(group, [keys[m] for m in members], lambda i: f"public key of {members[i]!r}")
        )
        if len(set(pks)) != len(pks):
            # Two ids with one key would let one client count as two members.
            raise AggregateKeyMismatchError("two members share a public key")
        return cls(group, members, pks)

    @property
    def aggregate_key(self) -> mpz:
        return aggregate_public_key(self.group, self.public_keys)

    def __len__(self) -> int:
        return len(self.members)

    def key_of(self, client_id: str) -> mpz:
        index = self._index.get(client_id)
        if index is None:
            raise NotAMemberError(f"{client_id!r} is not in the online set")
        return self.public_keys[index]


@dataclass(frozen=True)
class ClientCiphertext:
    """One client's upload: u segment ciphertexts mod p^2 and (A_i, B_i) mod p."""

    segments: tuple[mpz, ...]
    first: mpz  # A_i = g^r2
    second: mpz  # B_i = g^r1 * pk_S^r2

    def __repr__(self) -> str:
        return f"ClientCiphertext(n_segments={len(self.segments)})"


@dataclass
class ClientAttempt:
    """What a client keeps between uploading and answering the challenge of one attempt.

    Only public values: the r's are discarded right after encrypting. ``answered``
    enforces at most one response per attempt.
    """

    client_id: str
    online: OnlineSet
    first: mpz
    answered: bool = field(default=False)


class ElGamalClient:
    """Client-side encryption and challenge response, with fixed-base tables for beta_j'."""

    def __init__(
        self,
        keypair: ClientKeyPair,
        aggregator: AggregatorPublicKey,
        *,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
        bases: FixedBaseSet | None = None,
    ) -> None:
        if keypair.group != aggregator.group:
            raise AggregateKeyMismatchError("client key and aggregator key use different groups")
        self.keypair = keypair
        self.group = keypair.group
        self.aggregator = aggregator
        # The tables depend only on the aggregator's betas: simulations share one set.
        self.bases = bases or lifted_bases(aggregator, table_memory_bytes)

    def encrypt(
        self,
        segments: Sequence[Any],
        online: OnlineSet,
        *,
        client_id: str,
        claimed_aggregate_key: Any,
        min_online: int = MIN_ONLINE,
        _randomness: tuple[Any, Any] | None = None,
    ) -> tuple[ClientCiphertext, ClientAttempt]:
        """Encrypt packed segments for S after the client-side checks of paper 3.2.

        Refuses (typed errors) unless: the client is a member under its own key,
        |S| >= max(2, min_online), and the claimed pk_S equals the product of the
        listed members' keys. ``_randomness`` = (r1, r2) exists for known-answer
        tests only; production calls draw fresh r's every time.
        """
        group = self.group
        if len(online) < max(MIN_ONLINE, min_online):
            raise OnlineSetTooSmallError(
                f"|S| = {len(online)} is below the minimum {max(MIN_ONLINE, min_online)}"
            )
        if online.key_of(client_id) != self.keypair.public:
            raise NotAMemberError(f"S lists {client_id!r} under a key that is not this client's")
        pk_s = online.aggregate_key
        if mpz(claimed_aggregate_key) != pk_s:
            raise AggregateKeyMismatchError("pk_S is not the product of the members' keys")
        if len(segments) != len(self.bases):
            raise CiphertextShapeError(
                f"expected {len(self.bases)} segments (aggregator keys), got {len(segments)}"
            )
        limit = mpz(1) << group.plaintext_bits
        ms = [mpz(m) for m in segments]
        if any(not 0 <= m < limit for m in ms):
            raise PackingError("a segment plaintext is outside [0, 2^(|p|-1))")
        if _randomness is None:
            r1, r2 = group.random_exponent(), group.random_exponent()
        else:
            r1, r2 = (mpz(r) for r in _randomness)
        p, p2 = group.p, group.p2
        masks = self.bases.pow_all(r1)
        body = tuple((1 + m * p) * mask % p2 for m, mask in zip(ms, masks, strict=True))
        first = group.power(r2)
        second = group.power(r1) * gmpy2.powmod(pk_s, r2, p) % p
        del r1, r2  # never kept, never reused
        return ClientCiphertext(body, first, second), ClientAttempt(client_id, online, first)

    def respond(self, attempt: ClientAttempt, challenge: Any, first_components: Mapping[str, Any]) -> mpz:
        """T_i = R^sk_i, only after :func:`respond_to_challenge`'s checks pass."""
        return respond_to_challenge(self.keypair, attempt, challenge, first_components)


def lifted_bases(aggregator: AggregatorPublicKey, table_memory_bytes: int) -> FixedBaseSet:
    """beta_j' = lift(beta_j) with comb tables under the memory cap (once per deployment)."""
    group = aggregator.group
    return FixedBaseSet(
        [group.lift(b) for b in aggregator.betas],
        group.p2,
        exponent_bits=group.q.bit_length(),
        memory_budget_bytes=table_memory_bytes,
    )


def compute_challenge(group: GroupParams, first_components: Iterable[Any]) -> mpz:
    """R = prod A_i mod p (ChelGen)."""
    acc = mpz(1)
    for a in first_components:
        acc = acc * mpz(a) % group.p
    return acc


def respond_to_challenge(
    keypair: ClientKeyPair,
    attempt: ClientAttempt,
    challenge: Any,
    first_components: Mapping[str, Any],
) -> mpz:
    """Answer R with T_i = R^sk_i after the checks of crypto note section 5.

    A response is a decryption share for whatever R it is computed on: if R were
    client k's own A_k, the shares would unmask k's individual gradient. So the
    client answers only if the list of first components is exactly S, its own
    A_i is in it unchanged, every A is a group element, and R is their product;
    and only once per attempt.
    """
    group = keypair.group
    if attempt.answered:
        raise ChallengeRejectedError("this attempt's challenge was already answered")
    if set(first_components) != set(attempt.online.members):
        raise ChallengeRejectedError("the challenge's member list is not the online set encrypted for")
    if mpz(first_components[attempt.client_id]) != attempt.first:
        raise ChallengeRejectedError("the challenge carries a first component that is not ours")
    members = attempt.online.members
    checked = check_elements(group, [first_components[m] for m in members], lambda i: f"A of {members[i]!r}")
    # R must equal the product of elements just validated, which makes it one as well.
    r = compute_challenge(group, checked)
    if not isinstance(challenge, int | mpz) or r != challenge:
        raise ChallengeRejectedError("R is not the product of the members' first components")
    attempt.answered = True
    return gmpy2.powmod(r, keypair.secret, group.p)


class Aggregation:
    """The aggregator's state for one round attempt: fold uploads, challenge, decrypt.

    Uploads are folded into E_agg, d and R as they arrive, so memory is one
    upload's worth (plus two group elements per member) whatever |S| is. Every
    upload is screened before it is folded: its shape, every segment a unit mod
    p^2, A_i and B_i in range and (in a batch-verifiable group) quadratic
    residues. Their remaining subgroup check runs for all members at once
    (:meth:`verify_uploads`, one batch test) before the challenge; the T_i
    likewise before decryption (:meth:`verify_responses`). A member caught
    there has already been folded in, so the attempt cannot complete: the
    caller retries it without that member (the protocol's dropout path).
    """

    def __init__(self, online: OnlineSet, n_segments: int, *, min_online: int = MIN_ONLINE) -> None:
        if len(online) < max(MIN_ONLINE, min_online):
            raise OnlineSetTooSmallError(f"|S| = {len(online)} is below the minimum")
        if n_segments < 1:
            raise CiphertextShapeError("need at least one segment")
        self.group = online.group
        self.online = online
        self.n_segments = n_segments
        self._e_agg = [mpz(1)] * n_segments
        self._d = mpz(1)
        self._first: dict[str, mpz] = {}
        self._first_values: set[mpz] = set()
        self._second: dict[str, mpz] = {}
        self._t = mpz(1)
        self._shares: dict[str, mpz] = {}
        self._unverified_uploads: list[str] = []
        self._unverified_shares: list[str] = []
        self._culprits: dict[str, str] = {}

    @property
    def uploaded(self) -> frozenset[str]:
        return frozenset(self._first)

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
        """Every member uploaded (O(1): checked on every message)."""
        return len(self._first) == len(self.online)

    @property
    def all_responded(self) -> bool:
        return len(self._shares) == len(self.online)

    @property
    def culprits(self) -> dict[str, str]:
        """Members caught sending an invalid group element, with what was invalid."""
        return dict(self._culprits)

    def add_upload(self, client_id: str, ciphertext: ClientCiphertext) -> None:
        """Screen a member's ciphertext completely but for the batched subgroup test, then fold it in."""
        self.online.key_of(client_id)  # raises NotAMemberError
        if client_id in self._first:
            raise ProtocolOrderError(f"{client_id!r} already uploaded in this attempt")
        if len(ciphertext.segments) != self.n_segments:
            raise CiphertextShapeError(
                f"expected {self.n_segments} segment ciphertexts, got {len(ciphertext.segments)}"
            )
        group = self.group
        p, p2 = group.p, group.p2
        segments = [mpz(e) for e in ciphertext.segments]
        for j, e in enumerate(segments):
            # A valid E_ij is a unit mod p^2: in (0, p^2) and not divisible by p.
            if not 0 < e < p2 or e % p == 0:
                raise CiphertextShapeError(f"segment ciphertext {j} is not a unit mod p^2")
        first = screen_element(group, ciphertext.first, f"A of {client_id!r}")
        second = screen_element(group, ciphertext.second, f"B of {client_id!r}")
        if first in self._first_values:
            raise ProtocolOrderError("first component repeats another member's (replayed randomness)")
        self._e_agg = [a * e % p2 for a, e in zip(self._e_agg, segments, strict=True)]
        self._d = self._d * second % p
        self._first[client_id] = first
        self._first_values.add(first)
        self._second[client_id] = second
        self._unverified_uploads.append(client_id)

    def verify_uploads(self) -> dict[str, str]:
        """Batch-check every A_i, B_i not yet checked; return the members caught (id -> what).

        Empty when all are valid. Otherwise this attempt cannot complete (the
        culprits are folded in): retry it without them.
        """
        pending, self._unverified_uploads = self._unverified_uploads, []
        elements = [x for m in pending for x in (self._first[m], self._second[m])]
        caught = {}
        for i in invalid_elements(self.group, elements):
            member = pending[i // 2]
            caught[member] = f"{'AB'[i % 2]} of {member!r} is not in the order-q subgroup"
        self._culprits.update(caught)
        return caught

    def challenge(self) -> tuple[mpz, dict[str, mpz]]:
        """R and every member's first component A_i (what clients check before answering)."""
        if not self.all_uploaded:
            raise ProtocolOrderError(f"uploads missing from {sorted(self.missing_uploads)}")
        self.verify_uploads()
        self._refuse_culprits()
        first = {m: self._first[m] for m in self.online.members}
        return compute_challenge(self.group, first.values()), first

    def add_response(self, client_id: str, response: Any) -> None:
        """Screen T_i (range, quadratic residue) and fold it in; batch-checked before decryption."""
        self.online.key_of(client_id)
        if not self.all_uploaded:
            raise ProtocolOrderError("responses before the challenge")
        if client_id in self._shares:
            raise ProtocolOrderError(f"{client_id!r} already responded")
        t = screen_element(self.group, response, f"T of {client_id!r}")
        self._t = self._t * t % self.group.p
        self._shares[client_id] = t
        self._unverified_shares.append(client_id)

    def verify_responses(self) -> dict[str, str]:
        """Batch-check every T_i not yet checked; like :meth:`verify_uploads`."""
        pending, self._unverified_shares = self._unverified_shares, []
        bad = invalid_elements(self.group, [self._shares[m] for m in pending])
        caught = {pending[i]: f"T of {pending[i]!r} is not in the order-q subgroup" for i in bad}
        self._culprits.update(caught)
        return caught

    def _refuse_culprits(self) -> None:
        if self._culprits:
            members = sorted(self._culprits)
            raise InvalidGroupElementError(f"invalid group elements from {members}: retry without them")

    def decrypt(self, key: AggregatorSecretKey | Decryptor) -> list[mpz]:
        """The segment sums M_j = sum_i m_ij; raises DecryptionError if anything is off."""
        if not self.all_responded:
            raise ProtocolOrderError(f"responses missing from {sorted(self.missing_responses)}")
        self.verify_responses()
        self._refuse_culprits()
        decryptor = key if isinstance(key, Decryptor) else Decryptor(key)
        if decryptor.n_segments != self.n_segments:
            raise DecryptionError("the secret key has a different number of segment keys")
        group = self.group
        p, p2 = group.p, group.p2
        x = self._d * gmpy2.invert(self._t, p) % p  # g^(sum r1) if every share was honest
        unmask = decryptor.unmask_powers(group.lift(x))  # the lift once per round
        sums: list[mpz] = []
        for j, (e, u) in enumerate(zip(self._e_agg, unmask, strict=True)):
            y = e * u % p2
            if y % p != 1:
                raise DecryptionError(f"segment {j} did not decrypt (wrong key, share or tampering)")
            sums.append((y - 1) // p)
        return sums


class Decryptor:
    """The aggregator's secret key prepared for decryption, built once per process.

    The exponents q - alpha_j (x'^(q-alpha_j) = x'^(-alpha_j), x' having order q)
    are fixed for a deployment, so their comb digits are extracted here once;
    each round then builds one table of x' and evaluates every segment against it.
    """

    def __init__(self, secret: AggregatorSecretKey) -> None:
        self._secret = secret
        group = secret.group
        self._exponents = [group.q - a for a in secret.alphas]
        # One table of x' is built per round and serves all u exponents: pick the comb
        # whose build cost plus u evaluations is smallest.
        self._shape = CombShape.cheapest(len(self._exponents), int(group.q.bit_length()))
        self._digits = (
            [self._shape.digits(e).steps() for e in self._exponents]
            if len(self._exponents) >= _DECRYPT_TABLE_MIN_SEGMENTS
            else None
        )

    @property
    def n_segments(self) -> int:
        return len(self._exponents)

    def __repr__(self) -> str:
        return f"Decryptor(n_segments={self.n_segments})"

    def unmask_powers(self, x_lifted: Any) -> list[mpz]:
        """[x'^(-alpha_j) mod p^2 for every segment j]."""
        p2 = self._secret.group.p2
        if self._digits is None:
            return [gmpy2.powmod(x_lifted, e, p2) for e in self._exponents]
        return pow_many_exponents(x_lifted, self._digits, p2, self._shape)
