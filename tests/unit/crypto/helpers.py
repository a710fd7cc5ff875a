"""Small drivers that run the scheme's parties in-process for tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.crypto.elgamal import Aggregation, ClientAttempt, ClientCiphertext, ElGamalClient, OnlineSet
from shared.crypto.group import GroupParams
from shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from shared.params import SystemParams


@dataclass
class Federation:
    params: SystemParams
    secret: AggregatorSecretKey
    clients: dict[str, ElGamalClient]
    online: OnlineSet

    @classmethod
    def create(cls, group: GroupParams, n_clients: int, n_params: int, max_clients: int = 16) -> Federation:
        params = SystemParams(group, max_clients=max_clients)
        secret = AggregatorSecretKey.generate(group, params.n_segments(n_params))
        keypairs = {f"c{i}": ClientKeyPair.generate(group) for i in range(n_clients)}
        clients = {cid: ElGamalClient(kp, secret.public) for cid, kp in keypairs.items()}
        online = OnlineSet.from_registry(group, {cid: kp.public for cid, kp in keypairs.items()})
        return cls(params, secret, clients, online)

    def upload_all(
        self, vectors: dict[str, np.ndarray], seed: int = 0
    ) -> tuple[Aggregation, dict[str, ClientAttempt], dict[str, ClientCiphertext], np.ndarray]:
        """Every member encodes, packs, encrypts and uploads; returns the summed encodings too."""
        rng = np.random.default_rng(seed)
        n = len(next(iter(vectors.values())))
        aggregation = Aggregation(self.online, self.params.n_segments(n))
        attempts: dict[str, ClientAttempt] = {}
        cts: dict[str, ClientCiphertext] = {}
        total = np.zeros(n, dtype=np.uint64)
        for cid, vec in vectors.items():
            encoded = self.params.encoding.encode(vec, rng)
            total += encoded.values
            ct, attempts[cid] = self.clients[cid].encrypt(
                self.params.layout.pack(encoded.values),
                self.online,
                client_id=cid,
                claimed_aggregate_key=self.online.aggregate_key,
            )
            cts[cid] = ct
            aggregation.add_upload(cid, ct)
        return aggregation, attempts, cts, total

    def respond_all(self, aggregation: Aggregation, attempts: dict[str, ClientAttempt]) -> None:
        challenge, firsts = aggregation.challenge()
        for cid, attempt in attempts.items():
            aggregation.add_response(cid, self.clients[cid].respond(attempt, challenge, firsts))
