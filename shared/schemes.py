"""The encrypted :class:`~shared.secure_sum.SecureSum` schemes: multi-key ElGamal and Paillier.

Every party of a round is simulated in this process, running the very same
functions the services run (encode, pack, encrypt, fold, challenge, respond,
decrypt, unpack, decode), and each cost is timed on its own so benchmarks can
report client, aggregate and decrypt seconds separately.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.crypto.elgamal import (
    DEFAULT_TABLE_MEMORY_BYTES,
    Aggregation,
    Decryptor,
    ElGamalClient,
    OnlineSet,
    lifted_bases,
)
from shared.crypto.fixedbase import FixedBaseSet
from shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from shared.crypto.paillier import DEFAULT_PAILLIER_BITS, PaillierKeys
from shared.encoding import FixedPointEncoding
from shared.errors import ConfigurationError
from shared.params import SystemParams
from shared.secure_sum import FloatArray, RoundStats, check_vectors

__all__ = ["ElGamalSum", "PaillierSum"]


@dataclass
class _Deployment:
    """Aggregator keys for one vector length, their tables, and the clients built on them."""

    secret: AggregatorSecretKey
    decryptor: Decryptor
    bases: FixedBaseSet
    clients: list[ElGamalClient]


class ElGamalSum:
    """fedcast's scheme: packed multi-key ElGamal with challenge-response decryption.

    Keys are generated on first use: one aggregator key set per vector length
    (u segment keys) and one key pair per simulated client, reused across rounds
    as a deployment would. Uploads are folded as they are produced; the online
    set is every client that was handed a vector.
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
        self._by_segments: dict[int, _Deployment] = {}
        self._last = RoundStats()
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
            secret = AggregatorSecretKey.generate(group, n_segments)
            # One table set per aggregator key, shared by every simulated client.
            bases = lifted_bases(secret.public, self._table_memory)
            self._by_segments[n_segments] = _Deployment(secret, Decryptor(secret), bases, [])
        deployment = self._by_segments[n_segments]
        clients = deployment.clients
        while len(clients) < n_clients:
            keypair = self._clients[len(clients)]
            clients.append(ElGamalClient(keypair, deployment.secret.public, bases=deployment.bases))
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
        pk_s = online.aggregate_key
        stats = RoundStats(n_clients=len(vectors), n_params=n)
        aggregation = Aggregation(online, u)
        attempts = {}
        upload_bytes = u * group.ciphertext_bytes + 2 * group.element_bytes
        for cid, client, vector in zip(ids, clients, vectors, strict=True):
            start = time.perf_counter()
            encoded = encoding.encode(vector, self._rng)
            segments = layout.pack(encoded.values)
            ciphertext, attempts[cid] = client.encrypt(
                segments, online, client_id=cid, claimed_aggregate_key=pk_s
            )
            stats.client_seconds.append(time.perf_counter() - start)
            stats.upload_bytes.append(upload_bytes)
            stats.clipped_values += encoded.clipped
            start = time.perf_counter()
            aggregation.add_upload(cid, ciphertext)
            stats.aggregate_seconds += time.perf_counter() - start
        start = time.perf_counter()
        challenge, firsts = aggregation.challenge()
        stats.aggregate_seconds += time.perf_counter() - start
        for cid, client in zip(ids, clients, strict=True):
            start = time.perf_counter()
            response = client.respond(attempts[cid], challenge, firsts)
            stats.respond_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            aggregation.add_response(cid, response)
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
