"""The edge client's state machine (sans-I/O).

Per round: answer the announcement with "ready"; on the envelope, check the
member list (itself in it, at least max(2, minimum) members, every member
registered and not revoked), check that pk_S equals the product of the members'
keys *as registered at the key service* (the shell fetches them; the
aggregator's claim is not trusted), open the sealed model, then train, encode,
pack, encrypt and sign (:meth:`ClientMachine.compute_upload`, CPU heavy: the
shell runs it in an executor). On the challenge, check every member's first
component signature and let :func:`shared.crypto.elgamal.respond_to_challenge`
check R (crypto note section 5) before answering, at most once per attempt.
Local state (FedMF user vectors) is committed only when the round completed
with this client in S.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.crypto.delivery import delivery_key, open_model
from shared.crypto.elgamal import (
    DEFAULT_TABLE_MEMORY_BYTES,
    MIN_ONLINE,
    ClientAttempt,
    ElGamalClient,
    OnlineSet,
)
from shared.crypto.keys import AggregatorPublicKey, ClientKeyPair
from shared.errors import (
    AggregateKeyMismatchError,
    ConfigurationError,
    NotAMemberError,
    OnlineSetTooSmallError,
    StaleMessageError,
)
from shared.learning.data import FloatArray
from shared.learning.tasks import ClientTask, model_from_bytes
from shared.params import SystemParams
from shared.protocol.outgoing import Outgoing
from shared.protocol.stages import CLIENT_TRANSITIONS, ClientStage, check_transition
from shared.transport.base import AGGREGATOR
from shared.wire.messages import (
    Announce,
    Challenge,
    MemberEnvelope,
    MessageType,
    Ready,
    RegistryEntry,
    Response,
    RoundResult,
    RoundStatus,
    Upload,
)

__all__ = ["ClientMachine", "FirstSigner", "PreparedUpload", "UploadJob"]

#: sign_first(round, attempt, first) -> 64-byte Ed25519 signature over the first component.
FirstSigner = Callable[[int, int, int], bytes]
#: verify_first(member, round, attempt, first, signature, verify_key): raises SignatureError.
MemberFirstVerifier = Callable[[str, int, int, int, bytes, bytes], None]


@dataclass(frozen=True)
class UploadJob:
    """Everything :meth:`ClientMachine.compute_upload` needs, fixed when the envelope was accepted."""

    round: int
    attempt: int
    online: OnlineSet
    aggregate_key: int
    min_online: int
    model: FloatArray
    verify_keys: Mapping[str, bytes]


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
        min_online: int = MIN_ONLINE,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
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
        self._sign_first = sign_first
        self._verify_first = verify_first
        self._clock = clock
        # Building the fixed-base tables is the slow part of start-up (seconds for 10^5 params).
        self._elgamal = ElGamalClient(keypair, aggregator, table_memory_bytes=table_memory_bytes)
        self._delivery_key = delivery_key(params.group, keypair.secret, aggregator.delivery)
        self._rng = np.random.default_rng()  # stochastic rounding; OS entropy
        self.stage = ClientStage.IDLE
        self.round = 0
        self.attempt = 0
        self.last_completed_round = 0
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self.n_upload = task.spec.upload_size
        if params.n_segments(self.n_upload) != aggregator.n_segments:
            raise ConfigurationError("the aggregator's keys do not match this task's model size")

    def _to(self, stage: ClientStage) -> None:
        check_transition(CLIENT_TRANSITIONS, self.stage, stage)
        self.stage = stage

    # -- announce -----------------------------------------------------------------------

    def on_announce(self, round_id: int, attempt: int, announce: Announce) -> list[Outgoing]:
        if announce.task != self.task.spec.name or announce.n_params != self.n_upload:
            raise ConfigurationError(
                f"announced task {announce.task!r} with {announce.n_params} values; this client runs "
                f"{self.task.spec.name!r} with {self.n_upload}"
            )
        if round_id <= self.last_completed_round or (round_id, attempt) < (self.round, self.attempt):
            raise StaleMessageError(f"announcement of round {round_id} attempt {attempt} is old")
        self.round, self.attempt = round_id, attempt
        self._to(ClientStage.READY_SENT)
        return [Outgoing(AGGREGATOR, MessageType.READY, round_id, attempt, Ready())]

    # -- envelope -----------------------------------------------------------------------

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
        online = OnlineSet.from_registry(self.params.group, {m: registry[m].elgamal_public for m in members})
        if online.key_of(self.client_id) != self.keypair.public:
            raise AggregateKeyMismatchError("the key service lists another key for this client")
        if int(online.aggregate_key) != envelope.aggregate_key:
            raise AggregateKeyMismatchError("pk_S is not the product of the members' registered keys")
        plaintext = open_model(
            self._delivery_key,
            envelope.sealed_model,
            federation_id=self.federation,
            round_id=round_id,
            client_id=self.client_id,
        )
        model = model_from_bytes(plaintext, self.task.spec.model_size)
        self.attempt = attempt
        verify_keys = {m: registry[m].verify_key for m in members}
        return UploadJob(round_id, attempt, online, envelope.aggregate_key, minimum, model, verify_keys)

    def compute_upload(self, job: UploadJob) -> PreparedUpload:
        """Train, encode, pack, encrypt (fresh r1, r2) and sign. Pure CPU: run it off the event loop."""
        start = self._clock()
        update = self.task.local_update(job.model)
        trained = self._clock()
        encoded = self.params.encoding.encode(update.vector, self._rng)
        segments = self.params.layout.pack(encoded.values)
        ciphertext, state = self._elgamal.encrypt(
            segments,
            job.online,
            client_id=self.client_id,
            claimed_aggregate_key=job.aggregate_key,
            min_online=job.min_online,
        )
        signature = self._sign_first(job.round, job.attempt, int(ciphertext.first))
        body = Upload(
            tuple(int(s) for s in ciphertext.segments),
            int(ciphertext.first),
            int(ciphertext.second),
            signature,
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
        """Send the upload unless a newer attempt superseded it while it was computed."""
        job = prepared.job
        if (job.round, job.attempt) != (self.round, self.attempt):
            return []
        self._attempts[(job.round, job.attempt)] = _Attempt(
            prepared.attempt_state, prepared.pending, job.verify_keys, job.online.members
        )
        self._to(ClientStage.UPLOADED)
        return [Outgoing(AGGREGATOR, MessageType.UPLOAD, job.round, job.attempt, prepared.body)]

    # -- challenge and result ---------------------------------------------------------

    def on_challenge(self, round_id: int, attempt: int, challenge: Challenge) -> list[Outgoing]:
        """Answer only a checked challenge of an attempt this client uploaded for, once."""
        current = self._attempts.get((round_id, attempt))
        if current is None:
            raise StaleMessageError(f"no upload of ours for round {round_id} attempt {attempt}")
        firsts: dict[str, int] = {}
        for item in challenge.firsts:
            key = current.verify_keys.get(item.member)
            if key is None:
                raise NotAMemberError(f"challenge lists {item.member!r}, not a member of S")
            self._verify_first(item.member, round_id, attempt, item.value, item.signature, key)
            firsts[item.member] = item.value
        share = self._elgamal.respond(current.state, challenge.challenge, firsts)
        self._to(ClientStage.RESPONDED)
        return [Outgoing(AGGREGATOR, MessageType.RESPONSE, round_id, attempt, Response(int(share)))]

    def on_result(self, round_id: int, attempt: int, result: RoundResult) -> bool:
        """Commit local state if the round completed with us; returns True if it did."""
        current = self._attempts.pop((round_id, attempt), None)
        committed = False
        if result.status == RoundStatus.COMPLETE and current is not None and self.client_id in result.members:
            self.task.commit(current.pending)
            self.last_completed_round = max(self.last_completed_round, round_id)
            committed = True
        if result.status != RoundStatus.RETRY:
            # Round over (completed or restarted): forget every attempt of it.
            self._attempts = {k: v for k, v in self._attempts.items() if k[0] > round_id}
            if self.stage != ClientStage.IDLE:
                self._to(ClientStage.IDLE)
        return committed
