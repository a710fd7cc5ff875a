"""Real edge clients (:class:`fedcast.shared.protocol.client.ClientMachine`) and a hand-driven aggregator.

The clients are the production state machines with a :class:`MemoryLedger`; every
message they accept or send goes through the real wire types, signatures included.
The aggregator side is written out step by step (:meth:`MachineFederation.open`,
``upload``, ``challenge``, ``answer``, ``decrypt``) so that a malicious aggregator
can run them in any order, with any online set, and tamper with what it likes.
A refusal by a client is recorded per member with its reason code, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gmpy2 import mpz

from fedcast.attacks.parties import FEDERATION, V2Parties
from fedcast.shared.crypto.delivery import delivery_key, seal_model
from fedcast.shared.crypto.elgamal import Aggregation, AttemptContext, ClientCiphertext
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import DecryptionError, FedcastError
from fedcast.shared.learning.data import FloatArray, RatingData, SyntheticConfig, make_synthetic
from fedcast.shared.learning.tasks import FedMFClientTask, FedMFServerTask, TaskSpec, model_to_bytes
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.client import ClientMachine, UploadJob, model_digest
from fedcast.shared.protocol.ledger import MemoryLedger
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import (
    Announce,
    Challenge,
    FirstComponent,
    Header,
    MemberEnvelope,
    MessageType,
    RegistryEntry,
    Response,
    RoundResult,
    RoundStatus,
    Upload,
)

__all__ = ["AttemptRun", "MachineFederation", "ResponseTamper"]

#: tamper(member, response) -> the response the aggregator receives instead (signed by the member).
ResponseTamper = Callable[[str, Response], Response]


@dataclass
class AttemptRun:
    """One attempt as the aggregator saw it: who refused, what was uploaded, answered, decrypted."""

    round: int
    attempt: int
    members: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)  # member -> "reason: message"
    jobs: dict[str, UploadJob] = field(default_factory=dict)
    aggregation: Aggregation | None = None
    challenge: Challenge | None = None
    raw_responses: dict[str, bytes] = field(default_factory=dict)
    sums: list[mpz] | None = None
    culprits: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.sums is not None


class MachineFederation:
    """``n_clients`` real ClientMachines c0, c1, ... of a tiny FedMF task; ``model`` is what is sent."""

    def __init__(self, group: GroupParams, n_clients: int, *, seed: int = 0) -> None:
        self.spec = TaskSpec(n_items=6, latent_dim=2, seed=seed)
        self.params = SystemParams(group, FixedPointEncoding(16, 8.0), max_clients=16)
        self.members = tuple(f"c{i}" for i in range(n_clients))
        n_segments = self.params.n_segments(self.spec.upload_size)
        self.parties = V2Parties.create(group, self.members, n_segments)
        self.group = group
        self.ctx = serde.WireContext.from_group(group)
        self.signers = {m: SigningKeyPair.generate() for m in self.members}
        self.registry = {
            m: RegistryEntry(m, int(self.parties.keys[m].public), self.signers[m].verify_key, False)
            for m in self.members
        }
        self.model = FedMFServerTask(self.spec).initial_model()
        data = make_synthetic(SyntheticConfig(n_users=n_clients, n_items=6, ratings_per_user=3, seed=seed))
        self.machines = {m: self._machine(m, i, data.for_users([i])) for i, m in enumerate(self.members)}
        # (round, attempt, member) -> the member's signature over its first component
        self._signatures: dict[tuple[int, int, str], bytes] = {}

    def _machine(self, member: str, index: int, local: RatingData) -> ClientMachine:
        signer, ctx = self.signers[member], self.ctx
        return ClientMachine(
            client_id=member,
            federation=FEDERATION,
            params=self.params,
            keypair=self.parties.keys[member],
            aggregator=self.parties.public,
            task=FedMFClientTask(self.spec, local, client_seed=index),
            sign_first=lambda r, a, first: serde.sign_first(signer, FEDERATION, r, a, member, first, ctx),
            verify_first=lambda m, r, a, first, sig, key: serde.verify_first(
                key, sig, FEDERATION, r, a, m, first, ctx
            ),
            tables=self.parties.tables,
            ledger=MemoryLedger(),
        )

    # -- ground truth ----------------------------------------------------------------------

    def update_of(self, member: str) -> FloatArray:
        """What ``member`` uploads for the current model (FedMF updates are pure until commit)."""
        return self.machines[member].task.local_update(self.model).vector

    def decode(self, sums: Sequence[mpz], n_members: int) -> FloatArray:
        """The float aggregate of decrypted segment sums, as the aggregator service decodes it."""
        unpacked = self.params.layout.unpack(sums, self.spec.upload_size, n_clients=n_members)
        return self.params.encoding.decode_sum(unpacked, n_members)

    # -- the aggregator's steps --------------------------------------------------------------

    def announce(self, round_id: int, attempt: int, members: Sequence[str]) -> None:
        body = Announce(self.spec.name, self.spec.upload_size, 5.0)
        for m in members:
            self.machines[m].on_announce(round_id, attempt, body)

    def retry(self, round_id: int, attempt: int, survivors: Sequence[str], detail: str = "timeout") -> None:
        """The RESULT(retry) the aggregator broadcasts before opening the next attempt."""
        result = RoundResult(RoundStatus.RETRY, tuple(sorted(survivors)), detail)
        for m in self.members:
            self.machines[m].on_result(round_id, attempt, result)

    def envelope(
        self, round_id: int, member: str, members: Sequence[str], evidence: tuple[bytes, ...] = ()
    ) -> MemberEnvelope:
        """The envelope for ``member``: S, pkbar_S, the model sealed to it, and any evidence."""
        online = self.parties.online(members)
        key = delivery_key(self.group, self.parties.secret.delivery_secret, self.parties.keys[member].public)
        plaintext = model_to_bytes(self.model)
        sealed = seal_model(key, plaintext, federation_id=FEDERATION, round_id=round_id, client_id=member)
        return MemberEnvelope(online.members, int(online.aggregate_key), 3, sealed, evidence)

    def open(
        self, round_id: int, attempt: int, members: Sequence[str], evidence: tuple[bytes, ...] = ()
    ) -> AttemptRun:
        """Hand every member of S its envelope; record refusals and the aggregation to fold into."""
        run = AttemptRun(round_id, attempt, tuple(sorted(members)))
        online = self.parties.online(run.members)
        digest = model_digest(model_to_bytes(self.model))
        context = AttemptContext(FEDERATION, digest, round_id, attempt, online.members)
        run.aggregation = Aggregation(online, context, self.parties.tables.n_segments)
        for m in run.members:
            envelope = self.envelope(round_id, m, run.members, evidence)
            try:
                run.jobs[m] = self.machines[m].on_envelope(round_id, attempt, envelope, self.registry)
            except FedcastError as exc:
                run.refused[m] = f"{exc.reason}: {exc}"
        return run

    def upload(self, run: AttemptRun) -> dict[str, Upload]:
        """Every member that accepted its envelope trains, encrypts and uploads; folded in."""
        assert run.aggregation is not None
        uploads: dict[str, Upload] = {}
        for m, job in run.jobs.items():
            for out in self.machines[m].uploaded(self.machines[m].compute_upload(job)):
                assert isinstance(out.body, Upload)
                uploads[m] = body = out.body
                ct = ClientCiphertext(
                    body.key_segment, body.segments, body.first, body.second, body.first_proof
                )
                run.aggregation.add_upload(m, ct)
        self._signatures.update({(run.round, run.attempt, m): u.first_signature for m, u in uploads.items()})
        return uploads

    def challenge(self, run: AttemptRun) -> Challenge:
        assert run.aggregation is not None
        r, firsts = run.aggregation.challenge()
        listed = tuple(
            FirstComponent(m, f.value, f.proof, self._signatures[(run.round, run.attempt, m)])
            for m, f in firsts.items()
        )
        run.challenge = Challenge(int(r), listed)
        return run.challenge

    def answer(self, run: AttemptRun, tamper: ResponseTamper | None = None) -> None:
        """Send the challenge to every member; fold the (possibly tampered) signed responses."""
        assert run.aggregation is not None and run.challenge is not None
        for m in run.members:
            try:
                outgoing = self.machines[m].on_challenge(run.round, run.attempt, run.challenge)
            except FedcastError as exc:
                run.refused[m] = f"{exc.reason}: {exc}"
                continue
            body = outgoing[0].body
            assert isinstance(body, Response)
            if tamper is not None:
                body = tamper(m, body)
            header = Header(MessageType.RESPONSE, FEDERATION, run.round, run.attempt, m)
            run.raw_responses[m] = serde.encode(header, body, self.signers[m], self.ctx)
            run.aggregation.add_response(m, body.share, body.proof)

    def decrypt(self, run: AttemptRun) -> None:
        """Decrypt if every member answered; after a failure, name the culprits by their proofs."""
        assert run.aggregation is not None
        if not run.aggregation.all_responded:
            return
        try:
            run.sums = run.aggregation.decrypt(self.parties.decryptor)
        except DecryptionError:
            run.culprits = run.aggregation.share_culprits()

    def run(
        self,
        round_id: int,
        attempt: int,
        members: Sequence[str],
        evidence: tuple[bytes, ...] = (),
        tamper: ResponseTamper | None = None,
    ) -> AttemptRun:
        """open, then (if nobody refused) upload, challenge, answer and decrypt."""
        run = self.open(round_id, attempt, members, evidence)
        if run.refused:
            return run
        self.upload(run)
        self.challenge(run)
        self.answer(run, tamper)
        self.decrypt(run)
        return run
