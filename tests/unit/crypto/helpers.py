"""Small drivers that run the v2 scheme's parties in-process for tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from gmpy2 import mpz

from fedcast.shared.crypto.elgamal import (
    MIN_ONLINE,
    Aggregation,
    AttemptContext,
    ClientAttempt,
    ClientCiphertext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
)
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.params import SystemParams

FEDERATION = "plant-7"
VERIFY_KEY = b"\x07" * 32  # the aggregator's Ed25519 key: only binds the key proofs here
MODEL = hashlib.sha256(b"global model, round 1").digest()
# Two safe primes (P = 2p' + 1, p' prime) small enough to compute with, known to the tests only.
SAFE_P, SAFE_Q = 1099511628443, 1099513631627


def known_group() -> GroupParams:
    """A group whose factors the tests know (the bare constructor skips validation). INSECURE."""
    return GroupParams(mpz(SAFE_P * SAFE_Q), insecure=True)


def context_for(
    members: tuple[str, ...], *, attempt: int = 0, federation: str = FEDERATION
) -> AttemptContext:
    return AttemptContext(federation, MODEL, 1, attempt, members)


@dataclass
class Upload:
    """What :meth:`Federation.upload_all` produced: the aggregation and every party's view."""

    aggregation: Aggregation
    attempts: dict[str, ClientAttempt]
    ciphertexts: dict[str, ClientCiphertext]
    expected: np.ndarray  # the sum of the members' encodings, slot by slot
    clipped: int = 0


@dataclass
class Federation:
    """One aggregator key, one deployment (tables, decryptor) and ``n_clients`` members."""

    group: GroupParams
    params: SystemParams
    secret: AggregatorSecretKey
    public: AggregatorPublicKey
    tables: ClientTables
    decryptor: Decryptor
    keypairs: dict[str, ClientKeyPair]
    clients: dict[str, ElGamalClient]
    online: OnlineSet
    context: AttemptContext
    n_params: int

    @classmethod
    def create(
        cls, group: GroupParams, n_clients: int, n_params: int, *, max_clients: int = 16
    ) -> Federation:
        params = SystemParams(group, max_clients=max_clients)
        u = params.n_segments(n_params)
        secret = AggregatorSecretKey.generate(group)
        public = secret.public(federation=FEDERATION, verify_key=VERIFY_KEY)
        tables = ClientTables(public, federation=FEDERATION, n_segments=u)
        decryptor = Decryptor(secret, federation=FEDERATION, n_segments=u, max_members=max_clients)
        keypairs = {f"c{i}": ClientKeyPair.generate(group) for i in range(n_clients)}
        clients = {cid: ElGamalClient(kp, public, tables) for cid, kp in keypairs.items()}
        online = OnlineSet.from_registry(group, {cid: kp.public for cid, kp in keypairs.items()})
        return cls(
            group,
            params,
            secret,
            public,
            tables,
            decryptor,
            keypairs,
            clients,
            online,
            context_for(online.members),
            n_params,
        )

    @property
    def n_segments(self) -> int:
        return self.tables.n_segments

    def zero_segments(self) -> list[mpz]:
        return [mpz(x) for x in self.params.layout.pack(np.zeros(self.n_params, dtype=np.uint64))]

    def encrypt(
        self, cid: str, segments: list[mpz], context: AttemptContext | None = None
    ) -> tuple[ClientCiphertext, ClientAttempt]:
        return self.clients[cid].encrypt(
            segments,
            self.online,
            context or self.context,
            client_id=cid,
            claimed_aggregate_key=self.online.aggregate_key,
            min_online=MIN_ONLINE,
        )

    def upload_all(self, vectors: dict[str, np.ndarray] | None = None, seed: int = 0) -> Upload:
        """Every member encodes, packs, encrypts and uploads (zeros if no vectors are given)."""
        rng = np.random.default_rng(seed)
        if vectors is None:
            vectors = {cid: np.zeros(self.n_params) for cid in self.online.members}
        upload = Upload(
            Aggregation(self.online, self.context, self.n_segments),
            {},
            {},
            np.zeros(self.n_params, dtype=np.uint64),
        )
        for cid, vector in vectors.items():
            encoded = self.params.encoding.encode(vector, rng)
            upload.expected += encoded.values
            upload.clipped += encoded.clipped
            ct, upload.attempts[cid] = self.encrypt(
                cid, [mpz(x) for x in self.params.layout.pack(encoded.values)]
            )
            upload.ciphertexts[cid] = ct
            upload.aggregation.add_upload(cid, ct)
        return upload

    def respond_all(self, upload: Upload) -> None:
        challenge, firsts = upload.aggregation.challenge()
        for cid, attempt in upload.attempts.items():
            upload.aggregation.add_response(cid, *self.clients[cid].respond(attempt, challenge, firsts))

    def run_round(
        self, vectors: dict[str, np.ndarray] | None = None, seed: int = 0
    ) -> tuple[np.ndarray, Upload]:
        """A full honest round: the unpacked slot sums and the upload record."""
        upload = self.upload_all(vectors, seed)
        self.respond_all(upload)
        sums = upload.aggregation.decrypt(self.decryptor)
        return self.params.layout.unpack(sums, self.n_params, n_clients=len(upload.attempts)), upload
