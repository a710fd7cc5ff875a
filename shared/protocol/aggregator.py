"""The aggregator's round state machine (sans-I/O), Algorithm 1 round by round.

announce -> collect "ready" -> fix the online set S (after a window, at least
``min_online``) -> send each member its envelope (sealed model, pkbar_S, member
list) -> collect uploads, folding each into the running aggregate, then check
every member's proof of knowledge of r2 in one batch -> challenge R with every
member's signed, proven first component -> collect responses T_i -> decrypt,
unpack, decode -> update the model -> checkpoint -> next round.

Dropouts and cheaters (docs/PROTOCOL.md section 5.4):

* *before the challenge* (a member does not upload, or its proof fails): the
  attempt is retried with the survivors (new S, new attempt number, fresh
  encryption by every client) up to ``max_attempts``; with fewer than
  ``min_online`` survivors the round is restarted from the announcement. No
  member has answered, so no decryption share exists and the retry is safe.
* *after the challenge*, members have answered for this model and will not
  upload for it again (crypto note 0.3). A member that stays silent gets the
  challenge again every ``response_timeout_s`` (it answers from its ledger, even
  after a restart); the attempt is never abandoned for silence, because nothing
  else could complete this model. A member whose share makes the decryption
  fail is named by its response proof and excluded; the retry's envelopes
  carry its signed response as evidence, which is what lets the others upload
  again. A failure nobody can be blamed for (a malformed upload) spends the
  model: the round is restarted, and members that answered refuse it
  (docs/SECURITY.md, "open problems").

The shell feeds verified messages and the clock, runs :meth:`finish` (CPU
heavy) in an executor, persists the checkpoint, and sends what the machine
returns. Every stage change is checked against
:data:`fedcast.shared.protocol.stages.AGGREGATOR_TRANSITIONS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedcast.shared.crypto.delivery import delivery_key, seal_model
from fedcast.shared.crypto.elgamal import (
    DEFAULT_MIN_ONLINE,
    DEFAULT_TABLE_MEMORY_BYTES,
    MIN_ONLINE,
    Aggregation,
    AttemptContext,
    ClientCiphertext,
    Decryptor,
    DlogVerifier,
    OnlineSet,
    SegmentFolder,
    challenge_digest,
)
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.errors import (
    ChallengeRejectedError,
    ConfigurationError,
    DecryptionError,
    InternalError,
    InvalidGroupElementError,
    NotAMemberError,
    ProtocolOrderError,
    StaleMessageError,
)
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import ServerTask, model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.client import model_digest
from fedcast.shared.protocol.outgoing import Event, Outgoing
from fedcast.shared.protocol.stages import AGGREGATOR_TRANSITIONS, AggregatorStage, check_transition
from fedcast.shared.transport.base import client_endpoint
from fedcast.shared.wire.messages import (
    Announce,
    Challenge,
    FirstComponent,
    MemberEnvelope,
    MessageType,
    RegistryEntry,
    Response,
    RoundResult,
    RoundStatus,
    Upload,
)
from fedcast.shared.wire.serde import FirstComponentSigned

__all__ = ["AggregatorMachine", "FirstVerifier", "RoundConfig", "RoundOutcome"]

Stage = AggregatorStage
# Metric names of the timed phases (fedcast_round_phase_duration_seconds{phase}).
_PHASES = {
    Stage.COLLECTING_READY: "ready",
    Stage.COLLECTING_UPLOADS: "upload",
    Stage.COLLECTING_RESPONSES: "response",
    Stage.DECRYPTING: "decrypt",
    Stage.UPDATING: "update",
    Stage.CHECKPOINTING: "checkpoint",
}
#: Longest back-off before a round is tried again after a failure no member could be blamed for.
_MAX_BACKOFF_S = 600.0
#: verify_first(member, round, attempt, signed, signature): raises SignatureError if it fails.
FirstVerifier = Callable[[str, int, int, FirstComponentSigned, bytes], None]


@dataclass(frozen=True)
class RoundConfig:
    """Timing and size limits of rounds; validated on construction."""

    min_online: int = DEFAULT_MIN_ONLINE
    max_online: int = 1000
    ready_window_s: float = 10.0
    upload_timeout_s: float = 120.0
    response_timeout_s: float = 60.0
    max_attempts: int = 3
    expected_clients: int | None = None  # close the ready window early once this many are ready
    #: Check every member's proof of knowledge of r2 before sending the challenge (one batch
    #: test, ~50 ms at 610 members). Off by default: members check the proofs before answering,
    #: so a bad proof makes some of them refuse, and the aggregator checks the proofs when a
    #: member has not answered in time, naming the culprit (its signed first component, which
    #: covers the proof and the attempt context, is the evidence).
    check_proofs_before_challenge: bool = False

    def __post_init__(self) -> None:
        if self.min_online < MIN_ONLINE:
            raise ConfigurationError("min_online must be >= 2: one member's aggregate is its own input")
        if self.max_online < self.min_online:
            raise ConfigurationError("max_online must be >= min_online")
        for name in ("ready_window_s", "upload_timeout_s", "response_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0")
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be >= 1")
        if self.expected_clients is not None and self.expected_clients < self.min_online:
            raise ConfigurationError(
                f"expected_clients ({self.expected_clients}) is below min_online ({self.min_online}): "
                "no online set could ever be fixed"
            )


@dataclass(frozen=True)
class RoundOutcome:
    """What :meth:`AggregatorMachine.finish` produced: the new model and its costs."""

    round: int
    members: tuple[str, ...]
    model: FloatArray
    aggregate: FloatArray
    decrypt_seconds: float


class AggregatorMachine:
    """One federation's aggregator: rounds, attempts, S, and the running aggregate."""

    def __init__(
        self,
        *,
        federation: str,
        params: SystemParams,
        secret: AggregatorSecretKey,
        task: ServerTask,
        config: RoundConfig,
        verify_first: FirstVerifier,
        model: FloatArray | None = None,
        round_id: int = 1,
        attempt: int = 0,
        decryptor: Decryptor | None = None,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
        folder: SegmentFolder | None = None,
        verifier: DlogVerifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``attempt`` is where the round's attempt numbers start: a restarted aggregator
        resuming a round it had already opened must not reuse an attempt number, since
        every client encrypts and answers at most once per (round, attempt)."""
        self.federation = federation
        self.params = params
        self.secret = secret
        self.task = task
        self.config = config
        self._verify_first = verify_first
        self._clock = clock
        self.n_upload = task.spec.upload_size
        self.n_segments = params.n_segments(self.n_upload)
        if decryptor is None:  # comb tables of the inverted segment bases: seconds for 10^5 parameters
            decryptor = Decryptor(
                secret,
                federation=federation,
                n_segments=self.n_segments,
                max_members=params.max_clients,
                table_memory_bytes=table_memory_bytes,
            )
        if decryptor.n_segments != self.n_segments:
            raise ConfigurationError(
                f"the task's {self.n_upload} values need {self.n_segments} segments, "
                f"the decryptor has {decryptor.n_segments}"
            )
        self._decryptor = decryptor
        self._folder = folder  # None: fold in this process (the shell may pass helper processes)
        self._verifier = verifier
        self.model = task.initial_model() if model is None else np.asarray(model, dtype=np.float64)
        if self.model.shape != (task.spec.model_size,):
            raise ConfigurationError("model does not match the task")
        if attempt < 0:
            raise ConfigurationError("attempt must be >= 0")
        self.round = round_id
        self.attempt = attempt
        self.stage = Stage.IDLE
        self._stage_since = clock()
        self.deadline: float | None = None
        self._ready: dict[str, RegistryEntry] = {}
        self._online: OnlineSet | None = None
        self._aggregation: Aggregation | None = None
        self._signatures: dict[str, bytes] = {}
        self._raw_responses: dict[str, bytes] = {}
        self._proofs_checked = False
        self._challenge_digest = b""
        self._challenge_out: list[Outgoing] = []
        self._share_culprits: dict[str, str] = {}
        self._attempts_in_round = 0
        self._unattributed = 0  # decryption failures of this round that no proof explained
        self._round_started = 0.0
        self._events: list[Event] = []
        self._delivery_keys: dict[int, bytes] = {}

    # -- helpers --------------------------------------------------------------------------

    def _to(self, stage: Stage) -> None:
        check_transition(AGGREGATOR_TRANSITIONS, self.stage, stage)
        now = self._clock()
        if stage != self.stage and self.stage in _PHASES:
            self._event("phase", phase=_PHASES[self.stage], seconds=now - self._stage_since)
        if stage != self.stage:
            self._stage_since = now
        self.stage = stage

    def _event(self, kind: str, **data: object) -> None:
        self._events.append(Event(kind, self.round, self.attempt, dict(data)))

    def drain_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _check_current(self, round_id: int, attempt: int, stage: Stage) -> None:
        if round_id != self.round or attempt != self.attempt:
            raise StaleMessageError(
                f"message for round {round_id} attempt {attempt}; current is {self.round}/{self.attempt}"
            )
        if self.stage != stage:
            raise StaleMessageError(f"not expected in stage {self.stage}")

    @property
    def members(self) -> tuple[str, ...]:
        return self._online.members if self._online else ()

    # -- round start and ready ------------------------------------------------------------

    def completed_result(self, round_id: int, attempt: int, members: tuple[str, ...]) -> list[Outgoing]:
        """The COMPLETE result of an earlier, checkpointed round, to send again after a restart.

        A crash between the checkpoint and the broadcast would otherwise leave the members
        without the result that commits their local state; members that saw it ignore it.
        """
        if round_id >= self.round:
            raise ProtocolOrderError(f"round {round_id} is not before the current round {self.round}")
        result = RoundResult(RoundStatus.COMPLETE, tuple(members), "")
        return [Outgoing(None, MessageType.RESULT, round_id, attempt, result)]

    def start_round(self) -> list[Outgoing]:
        """Announce the current round (attempt numbers keep growing within a round)."""
        self._to(Stage.COLLECTING_READY)
        self._ready = {}
        self._online = None
        self._aggregation = None
        self._attempts_in_round = 0
        if not self._round_started:
            self._round_started = self._clock()
        self.deadline = self._clock() + self.config.ready_window_s
        self._event("round_announced")
        body = Announce(self.task.spec.wire_name, self.n_upload, self.config.ready_window_s)
        return [Outgoing(None, MessageType.ANNOUNCE, self.round, self.attempt, body)]

    def on_ready(self, sender: str, round_id: int, attempt: int, entry: RegistryEntry) -> list[Outgoing]:
        """Record a registered, non-revoked client as online for this round."""
        self._check_current(round_id, attempt, Stage.COLLECTING_READY)
        if entry.client_id != sender or entry.revoked:
            raise NotAMemberError(f"{sender!r} is not an active registered client")
        self._ready.setdefault(sender, entry)
        expected = self.config.expected_clients
        enough = len(self._ready) >= self.config.min_online
        if enough and expected is not None and len(self._ready) >= min(expected, self.config.max_online):
            return self._fix_online_set()
        return []

    def _fix_online_set(self) -> list[Outgoing]:
        chosen = list(self._ready)[: min(self.config.max_online, self.params.max_clients)]
        keys = {cid: self._ready[cid].elgamal_public for cid in chosen}
        return self._open_attempt(keys)

    def _open_attempt(
        self,
        keys: Mapping[str, int],
        evidence: tuple[bytes, ...] = (),
        first_evidence: tuple[FirstComponent, ...] = (),
    ) -> list[Outgoing]:
        """Fix S, seal the model to each member, and wait for uploads."""
        online = OnlineSet.from_registry(self.params.group, keys)
        plaintext = model_to_bytes(self.model)
        context = AttemptContext(
            self.federation, model_digest(plaintext), self.round, self.attempt, online.members
        )
        self._online = online
        self._aggregation = Aggregation(
            online,
            context,
            self.n_segments,
            min_online=self.config.min_online,
            folder=self._folder,
            verifier=self._verifier,
        )
        self._signatures = {}
        self._raw_responses = {}
        self._proofs_checked = False
        self._challenge_out = []
        self._share_culprits = {}
        self._attempts_in_round += 1
        self._to(Stage.COLLECTING_UPLOADS)
        self.deadline = self._clock() + self.config.upload_timeout_s
        self._event("online_set_fixed", size=len(online))
        group = self.params.group
        out = []
        for member, pk in zip(online.members, online.public_keys, strict=True):
            key = self._delivery_keys.get(int(pk))
            if key is None:  # a DH exponentiation per member: derive once, keys are long-lived
                key = delivery_key(group, self.secret.delivery_secret, pk)
                if len(self._delivery_keys) >= self.params.max_clients * 4:
                    self._delivery_keys.clear()  # bounded, whatever churn the registry sees
                self._delivery_keys[int(pk)] = key
            sealed = seal_model(
                key, plaintext, federation_id=self.federation, round_id=self.round, client_id=member
            )
            body = MemberEnvelope(
                online.members,
                int(online.aggregate_key),
                self.config.min_online,
                sealed,
                evidence,
                first_evidence,
            )
            out.append(
                Outgoing(client_endpoint(member), MessageType.ENVELOPE, self.round, self.attempt, body)
            )
        return out

    # -- uploads and responses ------------------------------------------------------------

    def on_upload(self, sender: str, round_id: int, attempt: int, upload: Upload) -> list[Outgoing]:
        """Validate and fold a member's upload; challenge once every member uploaded."""
        self._check_current(round_id, attempt, Stage.COLLECTING_UPLOADS)
        assert self._aggregation is not None
        self._aggregation.online.key_of(sender)  # NotAMemberError before any crypto work
        if upload.context_digest != self._aggregation.context.digest:
            raise StaleMessageError(
                f"{sender!r} uploaded for another attempt context (its S or model differs)"
            )
        signed = FirstComponentSigned(upload.first, upload.first_proof, upload.context_digest)
        self._verify_first(sender, round_id, attempt, signed, upload.first_signature)
        ciphertext = ClientCiphertext(
            upload.key_segment, tuple(upload.segments), upload.first, upload.second, upload.first_proof
        )
        self._aggregation.add_upload(sender, ciphertext)
        self._signatures[sender] = upload.first_signature
        if not self._aggregation.all_uploaded:
            return []
        self._proofs_checked = self.config.check_proofs_before_challenge
        if self._proofs_checked and self._caught(self._aggregation.verify_uploads()):
            # Nobody has answered yet: retrying without the culprits is safe.
            return self._attempt_failed("upload", self._aggregation.uploaded, cause="invalid upload")
        try:
            return self._send_challenge()
        except InternalError:  # the folder lost a helper process: nobody answered, retry at once
            return self._attempt_failed("upload", self._aggregation.uploaded, cause="internal failure")

    def _send_challenge(self) -> list[Outgoing]:
        assert self._aggregation is not None
        challenge, firsts = self._aggregation.challenge(verify=False)
        listed = tuple(FirstComponent(m, f.value, f.proof, self._signatures[m]) for m, f in firsts.items())
        body = Challenge(int(challenge), listed)
        self._challenge_digest = challenge_digest(self.params.group, challenge)
        self._to(Stage.COLLECTING_RESPONSES)
        self.deadline = self._clock() + self.config.response_timeout_s
        self._challenge_out = [
            Outgoing(client_endpoint(m), MessageType.CHALLENGE, self.round, self.attempt, body)
            for m in self.members
        ]
        return list(self._challenge_out)

    def on_response(
        self, sender: str, round_id: int, attempt: int, response: Response, raw: bytes = b""
    ) -> list[Outgoing]:
        """Fold T_i; when every member answered, the shell runs :meth:`finish`.

        ``raw`` is the signed message as received: if this share turns out wrong, it is
        the evidence the other members need before they upload again for this model.
        """
        self._check_current(round_id, attempt, Stage.COLLECTING_RESPONSES)
        assert self._aggregation is not None
        self._aggregation.online.key_of(sender)
        if response.challenge_digest != self._challenge_digest:
            raise ChallengeRejectedError(f"{sender!r} answered another challenge than this attempt's")
        try:
            self._aggregation.add_response(sender, response.share, response.proof)
        except InvalidGroupElementError as exc:
            # Signed by the member, for this R, and not a valid share: that is proof of cheating
            # the others can check, so the attempt is retried at once without it (with evidence).
            if not raw or sender in self._raw_responses:
                raise
            self._raw_responses[sender] = raw
            return self._without_cheaters({sender: f"response of {sender!r}: {exc}"})
        self._raw_responses[sender] = raw
        if self._aggregation.all_responded:
            self._to(Stage.DECRYPTING)
            self.deadline = None
        return []

    @property
    def ready_to_finish(self) -> bool:
        return self.stage == Stage.DECRYPTING

    def finish(self) -> RoundOutcome:
        """Decrypt, unpack, decode and apply the aggregate (CPU heavy: run in an executor).

        If the key segment does not decrypt, every response proof is checked (also CPU
        heavy, hence here) to name the members whose share was wrong; the shell then
        calls :meth:`decryption_failed`.
        """
        if self.stage != Stage.DECRYPTING or self._aggregation is None or self._online is None:
            raise ProtocolOrderError("finish() before every member responded")
        start = self._clock()
        n_members = len(self._online)
        layout, encoding = self.params.layout, self.params.encoding
        try:
            segment_sums = self._aggregation.decrypt(self._decryptor)
        except DecryptionError:
            self._share_culprits = self._aggregation.share_culprits()
            raise
        sums = layout.unpack(segment_sums, self.n_upload, n_clients=n_members)
        aggregate = encoding.decode_sum(sums, n_members)
        decrypt_seconds = self._clock() - start
        model = self.task.apply(self.model, aggregate, n_members)
        if not np.all(np.isfinite(model)):
            raise ProtocolOrderError("the updated model is not finite; round not applied")
        return RoundOutcome(self.round, self._online.members, model, aggregate, decrypt_seconds)

    def decryption_failed(self, reason: str) -> list[Outgoing]:
        """The aggregate did not decrypt: retry without proven cheaters, or restart the round.

        Members named by their response proofs are excluded and their signed responses go
        to the survivors as evidence (the only retry after a challenge that clients accept).
        A failure no proof explains (a malformed upload) spends this model.
        """
        assert self._online is not None and self._aggregation is not None
        culprits, self._share_culprits = self._share_culprits, {}
        if not culprits:
            self._event("round_failed", reason=reason, attributed=False)
            # Nobody can be excluded (the members that answered accept only the same S again for
            # this model): try again after a back-off that doubles, so a member that spoils every
            # attempt costs a bounded amount of work (docs/SECURITY.md, open problems).
            self._unattributed += 1
            delay = min(_MAX_BACKOFF_S, self.config.ready_window_s * 2 ** (self._unattributed - 1))
            self._event("backoff", seconds=delay, failures=self._unattributed)
            previous = self.attempt
            self.attempt += 1
            detail = f"decryption failed: {reason}; no member could be blamed; retry in {delay:.0f} s"
            result = RoundResult(RoundStatus.FAILED, self.members, detail)
            self._to(Stage.IDLE)
            self.deadline = self._clock() + delay
            return [Outgoing(None, MessageType.RESULT, self.round, previous, result)]
        return self._without_cheaters(culprits)

    def _without_cheaters(self, culprits: Mapping[str, str]) -> list[Outgoing]:
        """Retry without members proven to have cheated after the challenge, with the evidence."""
        assert self._online is not None
        self._caught(culprits)
        evidence = tuple(self._raw_responses[m] for m in sorted(culprits) if self._raw_responses.get(m))
        survivors = frozenset(self._online.members) - culprits.keys()
        return self._attempt_failed("decrypt", survivors, cause="wrong shares", evidence=evidence)

    def adopt(self, outcome: RoundOutcome) -> None:
        """Take the new model; the shell checkpoints it next."""
        if outcome.round != self.round:
            raise ProtocolOrderError("outcome of another round")
        self._to(Stage.UPDATING)
        self.model = outcome.model
        self._to(Stage.CHECKPOINTING)

    def checkpointed(self) -> list[Outgoing]:
        """After the durable checkpoint: tell everyone, move to the next round."""
        if self.stage != Stage.CHECKPOINTING:
            raise ProtocolOrderError("checkpointed() outside the checkpointing stage")
        members = self.members
        self._event("round_completed", members=len(members), seconds=self._clock() - self._round_started)
        result = RoundResult(RoundStatus.COMPLETE, members, "")
        out = [Outgoing(None, MessageType.RESULT, self.round, self.attempt, result)]
        self.round += 1
        self.attempt = 0
        self._unattributed = 0
        self._round_started = 0.0
        return out + self.start_round()

    # -- time ----------------------------------------------------------------------------

    def poll(self, now: float | None = None) -> list[Outgoing]:
        """Act on an expired deadline (the shell calls this when ``deadline`` passes)."""
        now = self._clock() if now is None else now
        if self.deadline is None or now < self.deadline:
            return []
        if self.stage == Stage.IDLE:  # a back-off after a failure nobody could be blamed for
            return self.start_round()
        if self.stage == Stage.COLLECTING_READY:
            if len(self._ready) >= self.config.min_online:
                return self._fix_online_set()
            self._event("ready_window_extended", ready=len(self._ready))
            self.deadline = now + self.config.ready_window_s
            body = Announce(self.task.spec.wire_name, self.n_upload, self.config.ready_window_s)
            return [Outgoing(None, MessageType.ANNOUNCE, self.round, self.attempt, body)]
        if self.stage == Stage.COLLECTING_UPLOADS:
            assert self._aggregation is not None
            self._caught(self._aggregation.verify_uploads())  # no culprit among the survivors
            return self._attempt_failed("upload", self._aggregation.uploaded)
        if self.stage == Stage.COLLECTING_RESPONSES:
            assert self._aggregation is not None
            if not self._proofs_checked:
                # Silence may be members refusing a bad proof: check the proofs now. A culprit's
                # signed first component (it covers the proof and the context) is the evidence
                # the members that answered need to upload again.
                self._proofs_checked = True
                culprits = self._aggregation.verify_uploads()
                if culprits:
                    self._caught(culprits)
                    firsts = self._aggregation.firsts
                    first_evidence = tuple(
                        FirstComponent(m, firsts[m].value, firsts[m].proof, self._signatures[m])
                        for m in sorted(culprits)
                        if m in self._signatures
                    )
                    survivors = frozenset(self._aggregation.online.members) - culprits.keys()
                    return self._attempt_failed(
                        "response", survivors, cause="invalid proofs", first_evidence=first_evidence
                    )
            # Members that answered will not upload again for this model: the attempt can only
            # complete. Ask the silent members again (a restarted member answers from its ledger).
            missing = self._aggregation.missing_responses
            self._event("challenge_resent", members=len(missing))
            self.deadline = now + self.config.response_timeout_s
            return [o for o in self._challenge_out if o.endpoint in {client_endpoint(m) for m in missing}]
        return []

    def _caught(self, culprits: Mapping[str, str]) -> bool:
        """Report members caught by a proof (of r2, or of their share); True if any were."""
        for member, detail in sorted(culprits.items()):
            self._event("invalid_proof", member=member, detail=detail)
        return bool(culprits)

    def _attempt_failed(
        self,
        phase: str,
        survivors: frozenset[str],
        cause: str = "timeout",
        evidence: tuple[bytes, ...] = (),
        first_evidence: tuple[FirstComponent, ...] = (),
    ) -> list[Outgoing]:
        """Retry the attempt with the survivors (minus any member caught cheating), or restart."""
        assert self._online is not None and self._aggregation is not None
        survivors = survivors - self._aggregation.culprits.keys()
        dropped = sorted(set(self._online.members) - survivors)
        self._event("attempt_failed", phase=phase, dropouts=len(dropped), survivors=len(survivors))
        keys = {m: int(self._online.key_of(m)) for m in sorted(survivors)}
        previous = self.attempt
        if len(keys) >= self.config.min_online and self._attempts_in_round < self.config.max_attempts:
            self.attempt += 1
            result = RoundResult(RoundStatus.RETRY, tuple(sorted(keys)), _detail(f"{phase} {cause}", dropped))
            out = [Outgoing(None, MessageType.RESULT, self.round, previous, result)]
            return out + self._open_attempt(keys, evidence, first_evidence)
        return self._restart_round(_detail(f"{phase} {cause} with {len(keys)} survivors", dropped))

    def _restart_round(self, detail: str) -> list[Outgoing]:
        previous = self.attempt
        self.attempt += 1
        result = RoundResult(RoundStatus.FAILED, self.members, detail)
        out = [Outgoing(None, MessageType.RESULT, self.round, previous, result)]
        return out + self.start_round()

    # -- persistence of an attempt past its challenge ------------------------------------

    def attempt_snapshot(self) -> dict[str, object]:
        """What to persist when the challenge goes out (see :meth:`resume_attempt`)."""
        if self.stage != Stage.COLLECTING_RESPONSES or self._aggregation is None or self._online is None:
            raise ProtocolOrderError("only an attempt waiting for responses is persisted")
        context = self._aggregation.context
        return {
            "format": "fedcast.aggregator-attempt",
            "version": 2,
            "round": self.round,
            "attempt": self.attempt,
            "attempts_in_round": self._attempts_in_round,
            "model_digest": context.model_digest.hex(),
            "keys": {
                m: format(pk, "x")
                for m, pk in zip(self._online.members, self._online.public_keys, strict=True)
            },
            "signatures": {m: sig.hex() for m, sig in self._signatures.items()},
            "uploads": self._aggregation.uploads_state(),
        }

    def resume_attempt(self, snapshot: Mapping[str, object]) -> list[Outgoing]:
        """Take up a persisted attempt after a restart: send its challenge again.

        Members that answered repeat their answer (same R, same share); the others answer
        now. Refused (ProtocolOrderError) unless the snapshot is this round's and this
        model's: a stale file is the caller's to discard.
        """
        if self.stage != Stage.IDLE:
            raise ProtocolOrderError("resume_attempt() only on a fresh machine")
        try:
            if snapshot.get("format") != "fedcast.aggregator-attempt" or snapshot.get("version") != 2:
                raise ProtocolOrderError("not an aggregator attempt snapshot")
            if int(snapshot["round"]) != self.round:  # type: ignore[call-overload]
                raise ProtocolOrderError("the snapshot is of another round")
            digest = model_digest(model_to_bytes(self.model))
            if bytes.fromhex(str(snapshot["model_digest"])) != digest:
                raise ProtocolOrderError("the snapshot is of another model")
            keys = {str(m): int(str(pk), 16) for m, pk in dict(snapshot["keys"]).items()}  # type: ignore[call-overload]
            signatures = {str(m): bytes.fromhex(str(v)) for m, v in dict(snapshot["signatures"]).items()}  # type: ignore[call-overload]
            attempt = int(snapshot["attempt"])  # type: ignore[call-overload]
            attempts_in_round = int(snapshot["attempts_in_round"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolOrderError(f"attempt snapshot is malformed: {exc}") from exc
        online = OnlineSet.from_registry(self.params.group, keys)
        context = AttemptContext(self.federation, digest, self.round, attempt, online.members)
        self._aggregation = Aggregation.from_uploads_state(
            online, context, self.n_segments, snapshot["uploads"], min_online=MIN_ONLINE
        )
        self._online = online
        self.attempt = attempt
        self._attempts_in_round = attempts_in_round
        self._signatures = signatures
        self._raw_responses = {}
        self._proofs_checked = False
        self._round_started = self._clock()
        self._to(Stage.COLLECTING_READY)
        self._to(Stage.COLLECTING_UPLOADS)
        self._event("attempt_resumed", members=len(online))
        return self._send_challenge()

    def stop(self) -> None:
        self._to(Stage.STOPPED)
        self.deadline = None


def _detail(what: str, dropped: list[str], limit: int = 1000) -> str:
    """A RoundResult detail that stays far below the wire's 4096-character bound."""
    listed = ", ".join(dropped)
    if len(listed) > limit:
        listed = listed[:limit].rsplit(", ", 1)[0] + f", ... ({len(dropped)} in all)"
    return f"{what}; dropped: {listed}" if dropped else what
