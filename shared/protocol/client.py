"""The edge client's state machine (sans-I/O).

Per round: answer the announcement with "ready"; on the envelope, check the
member list (itself in it, at least max(2, minimum) members, every member
registered and not revoked), check that pkbar_S equals the product of the
members' keys *as registered at the key service* squared (the shell fetches them;
the aggregator's claim is not trusted), open the sealed model, and refuse a model
this client already answered for unless evidence proves that every member dropped
since was a cheater (crypto note 0.3, :mod:`fedcast.shared.protocol.ledger`). Then train,
encode, pack, encrypt, prove and sign (:meth:`ClientMachine.compute_upload`, CPU
heavy: the shell runs it in an executor). On the challenge, let
:func:`fedcast.shared.crypto.elgamal.check_challenge` check the list, every A_j, R and the
proofs of the client's keyed sample, then check that sample's first-component
signatures before answering, at most once per model; the answer is
recorded in the ledger before it leaves, and a repeated challenge gets the same
answer again. Local state (FedMF user vectors) is committed only when the round
completed with this client in S.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedcast.shared.crypto.delivery import delivery_key, open_model
from fedcast.shared.crypto.elgamal import (
    DEFAULT_MIN_ONLINE,
    DEFAULT_TABLE_MEMORY_BYTES,
    MIN_ONLINE,
    AttemptContext,
    ClientAttempt,
    ClientTables,
    ElGamalClient,
    OnlineSet,
    SignedFirst,
    challenge_digest,
    check_challenge,
    respond_to,
)
from fedcast.shared.crypto.keys import AggregatorPublicKey, ClientKeyPair
from fedcast.shared.crypto.proofs import verify_dlog, verify_equality
from fedcast.shared.errors import (
    AggregateKeyMismatchError,
    ChallengeRejectedError,
    ConfigurationError,
    FedcastError,
    InvalidProofError,
    ModelAlreadyAnsweredError,
    NotAMemberError,
    OnlineSetTooSmallError,
    StaleMessageError,
)
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import ClientTask, model_from_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.ledger import AnswerRecord, AttemptRecord, MemoryLedger, ModelLedger
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.protocol.stages import CLIENT_TRANSITIONS, ClientStage, check_transition
from fedcast.shared.transport.base import AGGREGATOR
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import (
    Announce,
    Challenge,
    FirstComponent,
    MemberEnvelope,
    MessageType,
    Ready,
    RegistryEntry,
    Response,
    RoundResult,
    RoundStatus,
    Upload,
)
from fedcast.shared.wire.serde import FirstComponentSigned, decode, verify

__all__ = [
    "ClientMachine",
    "FirstSigner",
    "MemberFirstVerifier",
    "PreparedUpload",
    "UploadJob",
    "firsts_binding",
    "model_digest",
]

#: sign_first(round, attempt, signed) -> 64-byte Ed25519 signature over the first component.
FirstSigner = Callable[[int, int, FirstComponentSigned], bytes]
#: verify_first(member, round, attempt, signed, signature, verify_key): raises SignatureError.
MemberFirstVerifier = Callable[[str, int, int, FirstComponentSigned, bytes, bytes], None]


def firsts_binding(challenge: Challenge) -> bytes:
    """SHA-256 over a challenge's (member, A) pairs: what a client binds an attempt to.

    Each pair is length-prefixed (u32 length, then the id's bytes; u32 length, then A in its
    minimal big-endian bytes, at least one), so no two lists encode alike.
    """
    parts = [b"fedcast/v2/firsts-binding"]
    for item in sorted(challenge.firsts, key=lambda f: f.member):
        value = int(item.value)
        member = item.member.encode()
        width = max(1, (value.bit_length() + 7) // 8)
        parts.append(len(member).to_bytes(4, "big") + member + width.to_bytes(4, "big"))
        parts.append(value.to_bytes(width, "big"))
    return hashlib.sha256(b"".join(parts)).digest()


def model_digest(model_bytes: bytes) -> bytes:
    """SHA-256 of the model bytes as delivered: how a client identifies a model (crypto note 0.3)."""
    return hashlib.sha256(model_bytes).digest()


@dataclass(frozen=True)
class UploadJob:
    """Everything :meth:`ClientMachine.compute_upload` needs, fixed when the envelope was accepted."""

    round: int
    attempt: int
    online: OnlineSet
    context: AttemptContext
    aggregate_key: int
    min_online: int
    model: FloatArray
    verify_keys: Mapping[str, bytes]
    after_answer: bool = False


@dataclass(frozen=True)
class PreparedUpload:
    job: UploadJob
    body: Upload
    attempt_state: ClientAttempt
    pending: Any
    clipped: int
    train_seconds: float
    encrypt_seconds: float


@dataclass
class _Attempt:
    state: ClientAttempt
    pending: Any
    verify_keys: Mapping[str, bytes]
    record: AttemptRecord
    members: tuple[str, ...] = field(default=())


class ClientMachine:
    """One edge client of one federation."""

    def __init__(
        self,
        *,
        client_id: str,
        federation: str,
        params: SystemParams,
        keypair: ClientKeyPair,
        aggregator: AggregatorPublicKey,
        task: ClientTask,
        sign_first: FirstSigner,
        verify_first: MemberFirstVerifier,
        min_online: int = DEFAULT_MIN_ONLINE,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
        tables: ClientTables | None = None,
        ledger: ModelLedger | None = None,
        check_all_proofs: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if min_online < MIN_ONLINE:
            raise ConfigurationError("a client never accepts an online set below two members")
        self.client_id = client_id
        self.federation = federation
        self.params = params
        self.keypair = keypair
        self.task = task
        self.min_online = min_online
        self.ledger: ModelLedger = ledger if ledger is not None else MemoryLedger()
        self._sign_first = sign_first
        self._verify_first = verify_first
        self._clock = clock
        self._ctx = WireContext.from_group(params.group)
        self.n_upload = task.spec.upload_size
        n_segments = params.n_segments(self.n_upload)
        # Building the fixed-base tables is the slow part of start-up (seconds for 10^5 params).
        if tables is None:
            tables = ClientTables(
                aggregator,
                federation=federation,
                n_segments=n_segments,
                table_memory_bytes=table_memory_bytes,
            )
        if tables.n_segments != n_segments or tables.federation != federation:
            raise ConfigurationError("the fixed-base tables do not match this task's model size")
        self._elgamal = ElGamalClient(keypair, aggregator, tables, check_all_proofs=check_all_proofs)
        self._delivery_key = delivery_key(params.group, keypair.secret, aggregator.delivery)
        self._rng = np.random.default_rng()  # stochastic rounding; OS entropy
        self.stage = ClientStage.IDLE
        self.round = 0
        self.attempt = 0
        self.last_completed_round = 0
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self._checked_online: tuple[tuple[tuple[str, Any], ...], OnlineSet] | None = None

    def _to(self, stage: ClientStage) -> None:
        check_transition(CLIENT_TRANSITIONS, self.stage, stage)
        self.stage = stage

    # -- announce -----------------------------------------------------------------------

    def on_announce(self, round_id: int, attempt: int, announce: Announce) -> list[Outgoing]:
        if announce.task != self.task.spec.wire_name or announce.n_params != self.n_upload:
            raise ConfigurationError(
                f"announced task {announce.task!r} with {announce.n_params} values; this client runs "
                f"{self.task.spec.wire_name!r} with {self.n_upload}"
            )
        if round_id <= self.last_completed_round or (round_id, attempt) < (self.round, self.attempt):
            raise StaleMessageError(f"announcement of round {round_id} attempt {attempt} is old")
        self.round, self.attempt = round_id, attempt
        self._to(ClientStage.READY_SENT)
        return [Outgoing(AGGREGATOR, MessageType.READY, round_id, attempt, Ready())]

    # -- envelope -----------------------------------------------------------------------

    def evidence_senders(self, envelope: MemberEnvelope) -> set[str]:
        """Ids whose registry entries the evidence check needs besides the members'."""
        senders = {item.member for item in envelope.first_evidence}
        for raw in envelope.evidence:
            try:
                senders.add(decode(raw, self._ctx).header.sender)
            except FedcastError:
                continue  # refused in on_envelope with a reason
        return senders - set(envelope.members)

    def on_envelope(
        self, round_id: int, attempt: int, envelope: MemberEnvelope, registry: Mapping[str, RegistryEntry]
    ) -> UploadJob:
        """Check the envelope against the key service's registry; return the upload work to do."""
        if round_id != self.round or attempt < self.attempt or (round_id, attempt) in self._attempts:
            raise StaleMessageError(f"envelope for round {round_id} attempt {attempt} is not current")
        members = envelope.members
        if self.client_id not in members:
            raise NotAMemberError("this client is not in the envelope's member list")
        minimum = max(MIN_ONLINE, self.min_online, envelope.min_online)
        if len(members) < minimum:
            raise OnlineSetTooSmallError(f"|S| = {len(members)} is below {minimum}")
        missing = [m for m in members if m not in registry or registry[m].revoked]
        if missing:
            raise AggregateKeyMismatchError(f"members not active at the key service: {missing}")
        online = self._online_set(members, registry)
        if online.key_of(self.client_id) != self.keypair.public:
            raise AggregateKeyMismatchError("the key service lists another key for this client")
        if int(online.aggregate_key) != envelope.aggregate_key:
            raise AggregateKeyMismatchError("pkbar_S is not the product of the members' registered keys")
        plaintext = open_model(
            self._delivery_key,
            envelope.sealed_model,
            federation_id=self.federation,
            round_id=round_id,
            client_id=self.client_id,
        )
        digest = model_digest(plaintext)
        after_answer = False
        if self.ledger.has_answered(digest):
            self._check_evidence(digest, envelope, registry)
            after_answer = True
        model = model_from_bytes(plaintext, self.task.spec.model_size)
        self.attempt = attempt
        verify_keys = {m: registry[m].verify_key for m in members}
        context = AttemptContext(self.federation, digest, round_id, attempt, online.members)
        return UploadJob(
            round_id,
            attempt,
            online,
            context,
            envelope.aggregate_key,
            minimum,
            model,
            verify_keys,
            after_answer,
        )

    def _online_set(self, members: tuple[str, ...], registry: Mapping[str, RegistryEntry]) -> OnlineSet:
        """S with every registered key through the element rule and the equal-squares check.

        This client remembers the last S it checked: the same members with the same registered
        keys give the same verdict (the checks are deterministic functions of the keys), so
        long-lived keys are checked once, not every round. Any change is checked in full.
        """
        keys = tuple((m, registry[m].elgamal_public) for m in members)
        plain = all(type(pk) is int for _, pk in keys)  # what KEYS decodes to; anything else: no memo
        cached = self._checked_online
        if plain and cached is not None and cached[0] == keys:
            return cached[1]
        online = OnlineSet.from_registry(self.params.group, dict(keys))
        if plain:
            self._checked_online = (keys, online)
        return online

    def _check_evidence(
        self, digest: bytes, envelope: MemberEnvelope, registry: Mapping[str, RegistryEntry]
    ) -> None:
        """Allow a second upload for an answered model only if every member dropped since cheated.

        The aggregator may hold the aggregate of the answered set S_a and will get that of
        the new S; their difference is the sum over S_a minus S. That is safe only if S is a
        subset of S_a and every member of S_a minus S is proven to have sent a wrong share:
        its own signed response, for the very R this client answered, whose proof fails.
        """
        last = self.ledger.last_answer()
        if last is None or last.model_digest != digest or last.answer is None:
            raise ModelAlreadyAnsweredError("this client already answered a challenge for this model")
        new, old = set(envelope.members), set(last.members)
        if not new <= old:
            raise ModelAlreadyAnsweredError(
                "a retry for an answered model may only drop members, not add any"
            )
        proven: set[str] = set()
        r = last.answer.challenge
        r_square = r * r % self.params.group.n
        expected_digest = challenge_digest(self.params.group, r)
        context = AttemptContext(self.federation, digest, last.round, last.attempt, last.members)
        for raw in envelope.evidence:
            sender = self._proven_cheater(raw, last, r_square, expected_digest, context, registry)
            if sender is not None:
                proven.add(sender)
        for item in envelope.first_evidence:
            if self._proven_by_first(item, last, context, registry):
                proven.add(item.member)
        unproven = sorted(old - new - proven)
        if unproven:
            raise ModelAlreadyAnsweredError(
                f"this client already answered for this model; {unproven} were dropped without proof "
                "of cheating"
            )

    def _proven_cheater(
        self,
        raw: bytes,
        last: AttemptRecord,
        r_square: int,
        expected_digest: bytes,
        context: AttemptContext,
        registry: Mapping[str, RegistryEntry],
    ) -> str | None:
        """The sender of ``raw`` if it is its signed RESPONSE to our R with a failing proof, else None.

        An honest member never signs that; the response naming the R it answers
        (``challenge_digest``) keeps an equivocating aggregator from passing off an honest
        answer to another R as a failing one.
        """
        try:
            msg = decode(raw, self._ctx)
        except FedcastError:
            return None
        h, body = msg.header, msg.body
        entry = registry.get(h.sender)
        if (
            not isinstance(body, Response)
            or h.federation != self.federation
            or (h.round, h.attempt) != (last.round, last.attempt)
            or h.sender not in last.members
            or entry is None
        ):
            return None
        if body.challenge_digest != expected_digest:
            return None
        try:
            verify(msg, entry.verify_key, self._ctx)
        except FedcastError:
            return None
        try:
            verify_equality(
                self.params.group,
                entry.elgamal_public,
                r_square,
                body.share,
                body.proof,
                context.response_context(h.sender),
            )
        except InvalidProofError:
            return h.sender  # signed by the member, for our R, and wrong: a cheater
        return None

    def _proven_by_first(
        self,
        item: FirstComponent,
        last: AttemptRecord,
        context: AttemptContext,
        registry: Mapping[str, RegistryEntry],
    ) -> bool:
        """True if ``item`` is the member's signed first component, for the attempt context we
        answered, whose proof of knowledge of r2 fails (or whose A fails the element rule).

        The signature covers the context digest: an honest member shown another S by an
        equivocating aggregator signed that other context, so its first component is no
        evidence here (the signature does not verify for ours).
        """
        entry = registry.get(item.member)
        if item.member not in last.members or entry is None:
            return False
        signed = FirstComponentSigned(item.value, item.proof, context.digest)
        try:
            self._verify_first(
                item.member, last.round, last.attempt, signed, item.signature, entry.verify_key
            )
        except FedcastError:
            return False
        try:
            verify_dlog(self.params.group, item.value, item.proof, context.first_context(item.member))
        except InvalidProofError:
            return True
        return False

    def compute_upload(self, job: UploadJob) -> PreparedUpload:
        """Train, encode, pack, encrypt (fresh s, r1, r2), prove and sign. CPU only: run it off the loop."""
        start = self._clock()
        update = self.task.local_update(job.model)
        trained = self._clock()
        encoded = self.params.encoding.encode(update.vector, self._rng)
        segments = self.params.layout.pack(encoded.values)
        ciphertext, state = self._elgamal.encrypt(
            segments,
            job.online,
            job.context,
            client_id=self.client_id,
            claimed_aggregate_key=job.aggregate_key,
            min_online=job.min_online,
        )
        signature = self._sign_first(
            job.round,
            job.attempt,
            FirstComponentSigned(int(ciphertext.first), ciphertext.proof, job.context.digest),
        )
        body = Upload(
            int(ciphertext.key_segment),
            tuple(int(s) for s in ciphertext.segments),
            int(ciphertext.first),
            int(ciphertext.second),
            ciphertext.proof,
            signature,
            job.context.digest,
        )
        done = self._clock()
        return PreparedUpload(
            job,
            body,
            state,
            update.pending,
            update.clipped + encoded.clipped,
            trained - start,
            done - trained,
        )

    def uploaded(self, prepared: PreparedUpload) -> list[Outgoing]:
        """Record and send the upload unless a newer attempt superseded it while it was computed."""
        job = prepared.job
        if (job.round, job.attempt) != (self.round, self.attempt):
            return []
        record = AttemptRecord(
            job.round,
            job.attempt,
            job.context.model_digest,
            job.online.members,
            int(prepared.attempt_state.first),
            job.after_answer,
            min_online=job.min_online,
        )
        self.ledger.record_upload(record)  # durable before the upload leaves: answerable after a restart
        self._attempts[(job.round, job.attempt)] = _Attempt(
            prepared.attempt_state, prepared.pending, job.verify_keys, record, job.online.members
        )
        self._to(ClientStage.UPLOADED)
        return [Outgoing(AGGREGATOR, MessageType.UPLOAD, job.round, job.attempt, prepared.body)]

    # -- challenge and result ---------------------------------------------------------

    def needs_registry(self, round_id: int, attempt: int) -> bool:
        """True if answering this attempt's challenge needs the members' verify keys from the shell.

        That is the case after a restart: the attempt is known only from the ledger.
        """
        return (round_id, attempt) not in self._attempts

    def on_challenge(
        self,
        round_id: int,
        attempt: int,
        challenge: Challenge,
        registry: Mapping[str, RegistryEntry] | None = None,
    ) -> list[Outgoing]:
        """Answer only a checked challenge of an attempt this client uploaded for, once per model."""
        current = self._attempts.get((round_id, attempt)) or self._restore(round_id, attempt, registry)
        record = current.record
        repeated = self._repeated_answer(record, challenge)
        if repeated is not None:
            return repeated
        record = self._bind(current, challenge)
        digest = current.state.context.digest
        firsts: dict[str, SignedFirst] = {}
        for item in challenge.firsts:
            if item.member not in current.verify_keys:
                raise NotAMemberError(f"challenge lists {item.member!r}, not a member of S")
            firsts[item.member] = SignedFirst(item.value, item.proof)
        group = self.params.group
        sampler = self._elgamal.sampler
        r_square = check_challenge(group, current.state, challenge.challenge, firsts, sampler=sampler)
        # The signatures of the same keyed sample whose proofs were checked: whatever lists an
        # aggregator shows, an R other than the honest one leaves in every honest member's
        # list an entry whose signature or proof fails, so one sample covers both
        # (proof_sample_size; docs/SECURITY.md section 6).
        by_member = {item.member: item for item in challenge.firsts}
        for member in sampler.choose(current.state, int(challenge.challenge), current.state.min_online):
            item = by_member[member]
            signed = FirstComponentSigned(item.value, item.proof, digest)
            self._verify_first(member, round_id, attempt, signed, item.signature, current.verify_keys[member])
        share, proof = respond_to(self.keypair, current.state, r_square)
        answer = AnswerRecord(int(challenge.challenge), int(share), proof)
        self.ledger.record_answer(record.answered(answer))  # durable before the answer leaves
        current.record = record.answered(answer)
        current.state.answered = True
        self._to(ClientStage.RESPONDED)
        return [self._response(round_id, attempt, answer)]

    def _bind(self, current: _Attempt, challenge: Challenge) -> AttemptRecord:
        """Bind this attempt, durably, to the first list of first components it is shown.

        A client checks a keyed sample of the members' proofs. If it could be shown other
        lists for the same attempt after refusing one, colluders could move an unprovable
        A_c around until its sample missed it; bound to one list, each member gets one
        independent chance to catch it (docs/SECURITY.md section 6).
        """
        record = current.record
        binding = firsts_binding(challenge)
        if record.firsts_digest is None:
            record = replace(record, firsts_digest=binding)
            pending = self.ledger.pending()
            if pending is not None and (pending.round, pending.attempt) == (record.round, record.attempt):
                self.ledger.record_upload(record)  # before it is checked: a refusal binds as well
            # (an older attempt than the ledger's latest upload stays bound in memory only: the
            # ledger keeps the latest, which is the one a restart must be able to answer)
            current.record = record
        elif record.firsts_digest != binding:
            raise ChallengeRejectedError("this attempt was already shown another list of first components")
        return record

    def _response(self, round_id: int, attempt: int, answer: AnswerRecord) -> Outgoing:
        digest = challenge_digest(self.params.group, answer.challenge)
        body = Response(answer.share, answer.proof, digest)
        return Outgoing(AGGREGATOR, MessageType.RESPONSE, round_id, attempt, body)

    def _repeated_answer(self, record: AttemptRecord, challenge: Challenge) -> list[Outgoing] | None:
        """The stored answer if this exact challenge was answered; refuse any other for an answered model."""
        if not self.ledger.has_answered(record.model_digest):
            return None
        last = self.ledger.last_answer()
        if (
            last is not None
            and last.answer is not None
            and (last.round, last.attempt, last.model_digest)
            == (record.round, record.attempt, record.model_digest)
        ):
            if last.answer.challenge != challenge.challenge:
                raise ModelAlreadyAnsweredError("this attempt was answered for another challenge")
            return [self._response(record.round, record.attempt, last.answer)]
        if record.after_answer and record.answer is None:
            return None  # an upload accepted on evidence: its challenge may be answered once
        raise ModelAlreadyAnsweredError("this client already answered a challenge for this model")

    def _restore(self, round_id: int, attempt: int, registry: Mapping[str, RegistryEntry] | None) -> _Attempt:
        """Rebuild an attempt this client uploaded for before a restart, from the ledger."""
        record = self.ledger.pending()
        if record is None or (record.round, record.attempt) != (round_id, attempt):
            raise StaleMessageError(f"no upload of ours for round {round_id} attempt {attempt}")
        if registry is None or any(m not in registry for m in record.members):
            raise StaleMessageError("the members' verify keys are needed to answer a restored attempt")
        context = AttemptContext(self.federation, record.model_digest, round_id, attempt, record.members)
        group = self.params.group
        online = OnlineSet.from_registry(group, {m: registry[m].elgamal_public for m in record.members})
        state = ClientAttempt(
            self.client_id, online, context, group.check_element(record.first, "own A"), record.min_online
        )
        restored = _Attempt(
            state, None, {m: registry[m].verify_key for m in record.members}, record, record.members
        )
        self._attempts[(round_id, attempt)] = restored
        self.round, self.attempt = max((self.round, self.attempt), (round_id, attempt))
        return restored

    def on_result(self, round_id: int, attempt: int, result: RoundResult) -> bool:
        """Commit local state if the round completed with us; returns True if it did."""
        current = self._attempts.pop((round_id, attempt), None)
        committed = False
        completed = result.status == RoundStatus.COMPLETE and self.client_id in result.members
        if completed and current is not None and current.pending is not None:
            self.task.commit(current.pending)
            committed = True
        if completed:
            self.last_completed_round = max(self.last_completed_round, round_id)
        if result.status != RoundStatus.RETRY:
            # Round over (completed or restarted): forget every attempt of it.
            self._attempts = {k: v for k, v in self._attempts.items() if k[0] > round_id}
            # A copy of an earlier round's result (a restarted aggregator sends its last one
            # again) must not end the round in progress.
            if self.stage != ClientStage.IDLE and round_id >= self.round:
                self._to(ClientStage.IDLE)
        return committed
