"""The encrypted :class:`~fedcast.shared.secure_sum.SecureSum` schemes: multi-key ElGamal and Paillier.

Every party of a round is simulated in this process, running the very same
functions the services run (encode, pack, encrypt, fold, challenge, respond,
decrypt, unpack, decode), and each cost is timed on its own so benchmarks can
report client, aggregate and decrypt seconds separately.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedcast.shared.crypto.elgamal import (
    DEFAULT_TABLE_MEMORY_BYTES,
    Aggregation,
    AttemptContext,
    ClientTables,
    Decryptor,
    ElGamalClient,
    OnlineSet,
)
from fedcast.shared.crypto.keys import AggregatorPublicKey, AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.paillier import DEFAULT_PAILLIER_BITS, PaillierKeys
from fedcast.shared.crypto.proofs import RESPONSE_BITS
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.params import SystemParams
from fedcast.shared.secure_sum import FloatArray, RoundStats, check_vectors

__all__ = ["ElGamalSum", "PaillierSum"]

_FEDERATION = "simulation"
_VERIFY_KEY = bytes(32)  # the simulated aggregator's Ed25519 key: only binds the key proofs


@dataclass
class _Deployment:
    """Decryptor and client tables for one vector length, and the clients built on them."""

    decryptor: Decryptor
    tables: ClientTables
    clients: list[ElGamalClient]


class ElGamalSum:
    """fedcast's scheme (v2): multi-key ElGamal on an RSA modulus with challenge-response decryption.

    Keys are generated on first use: one aggregator key, its decryptor and the
    client tables per vector length, and one key pair per simulated client, reused
    across rounds as a deployment would. Uploads are folded as they are produced;
    the online set is every client that was handed a vector. Each call is one round
    for a fresh model digest, so the one-answer-per-model rule never interferes.
    """

    def __init__(
        self,
        params: SystemParams,
        *,
        table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES,
        seed: int | None = None,
    ) -> None:
        self.params = params
        self._table_memory = table_memory_bytes
        self._rng = np.random.default_rng(seed)  # stochastic rounding only; keys use the OS CSPRNG
        self._clients: list[ClientKeyPair] = []
        self._secret = AggregatorSecretKey.generate(params.group)
        self._public: AggregatorPublicKey = self._secret.public(
            federation=_FEDERATION, verify_key=_VERIFY_KEY
        )
        self._by_segments: dict[int, _Deployment] = {}
        self._last = RoundStats()
        self._rounds = 0
        self.clipped_total = 0  # over every round, for reports

    @property
    def name(self) -> str:
        return "elgamal"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def _parties(self, n_segments: int, n_clients: int) -> tuple[Decryptor, list[ElGamalClient]]:
        group = self.params.group
        while len(self._clients) < n_clients:
            self._clients.append(ClientKeyPair.generate(group))
        if n_segments not in self._by_segments:
            decryptor = Decryptor(
                self._secret,
                federation=_FEDERATION,
                n_segments=n_segments,
                max_members=self.params.max_clients,
                table_memory_bytes=self._table_memory,
            )
            # One table set per deployment, shared by every simulated client.
            tables = ClientTables(
                self._public,
                federation=_FEDERATION,
                n_segments=n_segments,
                table_memory_bytes=self._table_memory,
            )
            self._by_segments[n_segments] = _Deployment(decryptor, tables, [])
        deployment = self._by_segments[n_segments]
        clients = deployment.clients
        while len(clients) < n_clients:
            keypair = self._clients[len(clients)]
            clients.append(ElGamalClient(keypair, self._public, deployment.tables))
        return deployment.decryptor, clients[:n_clients]

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        n = check_vectors(vectors, min_clients=2)
        if len(vectors) > self.params.max_clients:
            raise ConfigurationError(f"{len(vectors)} clients exceed max_clients={self.params.max_clients}")
        layout, encoding, group = self.params.layout, self.params.encoding, self.params.group
        u = layout.n_segments(n)
        decryptor, clients = self._parties(u, len(vectors))
        ids = [f"client-{i:05d}" for i in range(len(vectors))]
        online = OnlineSet.from_registry(
            group, {i: c.keypair.public for i, c in zip(ids, clients, strict=True)}
        )
        self._rounds += 1
        digest = hashlib.sha256(b"simulated model %d" % self._rounds).digest()
        context = AttemptContext(_FEDERATION, digest, self._rounds, 0, online.members)
        pk_s = online.aggregate_key
        stats = RoundStats(n_clients=len(vectors), n_params=n)
        aggregation = Aggregation(online, context, u)
        attempts = {}
        # Upload = K_i + u segments (mod N^2), A_i and B_i (mod N), A_i's proof (t mod N, z of 65 bytes).
        upload_bytes = (u + 1) * group.ciphertext_bytes + 3 * group.element_bytes + (RESPONSE_BITS + 7) // 8
        for cid, client, vector in zip(ids, clients, vectors, strict=True):
            start = time.perf_counter()
            encoded = encoding.encode(vector, self._rng)
            segments = layout.pack(encoded.values)
            ciphertext, attempts[cid] = client.encrypt(
                segments, online, context, client_id=cid, claimed_aggregate_key=pk_s, min_online=2
            )
            stats.client_seconds.append(time.perf_counter() - start)
            stats.upload_bytes.append(upload_bytes)
            stats.clipped_values += encoded.clipped
            start = time.perf_counter()
            aggregation.add_upload(cid, ciphertext)
            stats.aggregate_seconds += time.perf_counter() - start
        start = time.perf_counter()
        # as the aggregator does by default: the proofs are the members' to check before answering
        challenge, firsts = aggregation.challenge(verify=False)
        stats.aggregate_seconds += time.perf_counter() - start
        for cid, client in zip(ids, clients, strict=True):
            start = time.perf_counter()
            share, proof = client.respond(attempts[cid], challenge, firsts)
            stats.respond_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            aggregation.add_response(cid, share, proof)
            stats.aggregate_seconds += time.perf_counter() - start
        start = time.perf_counter()
        sums = layout.unpack(aggregation.decrypt(decryptor), n, n_clients=len(vectors))
        total = encoding.decode_sum(sums, len(vectors))
        stats.decrypt_seconds = time.perf_counter() - start
        self._last = stats
        self.clipped_total += stats.clipped_values
        return total


class PaillierSum:
    """The FedMF paper's baseline: Paillier, one ciphertext per value, same encoding."""

    def __init__(
        self,
        encoding: FixedPointEncoding | None = None,
        *,
        n_bits: int = DEFAULT_PAILLIER_BITS,
        seed: int | None = None,
    ) -> None:
        self.encoding = encoding or FixedPointEncoding()
        self.keys = PaillierKeys(n_bits)
        self._rng = np.random.default_rng(seed)
        self._last = RoundStats()
        self.clipped_total = 0  # over every round, for reports

    @property
    def name(self) -> str:
        return "paillier"

    @property
    def last_round(self) -> RoundStats:
        return self._last

    def sum(self, vectors: Sequence[FloatArray]) -> FloatArray:
        n = check_vectors(vectors)
        stats = RoundStats(n_clients=len(vectors), n_params=n)
        accumulator = None
        for vector in vectors:
            start = time.perf_counter()
            encoded = self.encoding.encode(vector, self._rng)
            ciphertexts = self.keys.encrypt(encoded.values.tolist())
            stats.client_seconds.append(time.perf_counter() - start)
            stats.upload_bytes.append(n * self.keys.ciphertext_bytes)
            stats.clipped_values += encoded.clipped
            start = time.perf_counter()
            if accumulator is None:
                accumulator = ciphertexts
            else:
                self.keys.add_into(accumulator, ciphertexts)
            stats.aggregate_seconds += time.perf_counter() - start
        assert accumulator is not None  # check_vectors guarantees one vector
        start = time.perf_counter()
        sums = np.array(self.keys.decrypt(accumulator), dtype=np.uint64)
        total = self.encoding.decode_sum(sums, len(vectors))
        stats.decrypt_seconds = time.perf_counter() - start
        self._last = stats
        self.clipped_total += stats.clipped_values
        return total
