"""An in-memory federation: one AggregatorMachine and N ClientMachines wired directly.

Messages go through the real serde (encode, decode, verify) so the state machines are
exercised on exactly what a service would hand them; tests can drop or alter messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedcast.shared.crypto.elgamal import ClientTables
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import FedcastError
from fedcast.shared.learning.data import SyntheticConfig, make_synthetic, partition_users
from fedcast.shared.learning.tasks import FedMFClientTask, FedMFServerTask, TaskSpec
from fedcast.shared.params import SystemParams
from fedcast.shared.protocol.aggregator import AggregatorMachine, RoundConfig
from fedcast.shared.protocol.client import ClientMachine
from fedcast.shared.protocol.ledger import MemoryLedger
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.base import AGGREGATOR, client_endpoint
from fedcast.shared.wire import serde
from fedcast.shared.wire.messages import Header, MessageType, RegistryEntry, Signed

FED = "plant-7"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Federation:
    group: GroupParams
    params: SystemParams
    spec: TaskSpec
    aggregator: AggregatorMachine
    clients: dict[str, ClientMachine]
    registry: dict[str, RegistryEntry]
    signers: dict[str, SigningKeyPair]
    clock: Clock
    offline: set[str] = field(default_factory=set)
    # (client, message type) pairs that are lost on the way to the aggregator
    lost: set[tuple[str, MessageType]] = field(default_factory=set)
    # (client, message type) pairs that are lost on the way to the client
    unheard: set[tuple[str, MessageType]] = field(default_factory=set)
    log: list[tuple[str, str, Signed]] = field(default_factory=list)
    rejected: list[tuple[str, Exception]] = field(default_factory=list)
    tamper: Callable[[str, Signed], Signed] | None = None
    next_round: list[Outgoing] = field(default_factory=list)  # held back between rounds
    completed: list[tuple[int, tuple[str, ...], np.ndarray]] = field(default_factory=list)
    # every message as delivered to the aggregator, raw bytes (what evidence is made of)
    raw: dict[tuple[str, MessageType, int, int], bytes] = field(default_factory=dict)
    ledgers: dict[str, MemoryLedger] = field(default_factory=dict)
    tables: ClientTables | None = None
    hold_finish: bool = False  # leave DECRYPTING to the test

    @classmethod
    def create(
        cls, group: GroupParams, n_clients: int = 4, *, config: RoundConfig | None = None, min_online: int = 2
    ) -> Federation:
        # gd: test_rounds' tolerance model (lr * n * quantum) assumes eq. 4's linear update
        spec = TaskSpec(n_items=12, latent_dim=3, learning_rate=0.01, seed=3, optimizer="gd")
        params = SystemParams(group, FixedPointEncoding(16, 16.0), max_clients=64)
        secret = AggregatorSecretKey.generate(group)
        signers: dict[str, SigningKeyPair] = {"aggregator": SigningKeyPair.generate()}
        public = secret.public(federation=FED, verify_key=signers["aggregator"].verify_key)
        tables = ClientTables(public, federation=FED, n_segments=params.n_segments(spec.upload_size))
        data = make_synthetic(SyntheticConfig(n_users=2 * n_clients, n_items=12, ratings_per_user=6, seed=3))
        shards = partition_users(data, users_per_client=2, seed=3)
        clock = Clock()
        ctx = serde.WireContext.from_group(group)
        registry: dict[str, RegistryEntry] = {}
        clients: dict[str, ClientMachine] = {}
        ledgers: dict[str, MemoryLedger] = {}
        for i, users in enumerate(shards):
            cid = f"line-{i}"
            kp = ClientKeyPair.generate(group)
            signer = SigningKeyPair.generate()
            signers[cid] = signer
            registry[cid] = RegistryEntry(cid, int(kp.public), signer.verify_key, False)
            local = data.for_users(np.sort(users))
            ledgers[cid] = MemoryLedger()
            clients[cid] = ClientMachine(
                client_id=cid,
                federation=FED,
                params=params,
                keypair=kp,
                aggregator=public,
                task=FedMFClientTask(spec, local, client_seed=i),
                min_online=min_online,
                tables=tables,
                ledger=ledgers[cid],
                sign_first=lambda r, a, first, s=signer, c=cid: serde.sign_first(s, FED, r, a, c, first, ctx),
                verify_first=lambda m, r, a, first, sig, key: serde.verify_first(
                    key, sig, FED, r, a, m, first, ctx
                ),
            )
        config = config or RoundConfig(min_online=2, expected_clients=n_clients, ready_window_s=5)
        aggregator = AggregatorMachine(
            federation=FED,
            params=params,
            secret=secret,
            task=FedMFServerTask(spec),
            config=config,
            verify_first=lambda m, r, a, first, sig: serde.verify_first(
                registry[m].verify_key, sig, FED, r, a, m, first, ctx
            ),
            clock=clock,
        )
        federation = cls(group, params, spec, aggregator, clients, registry, signers, clock)
        federation.ledgers, federation.tables = ledgers, tables
        return federation

    @property
    def ctx(self) -> serde.WireContext:
        return serde.WireContext.from_group(self.group)

    def _wire(self, sender: str, out: Outgoing) -> Signed:
        header = Header(out.type, FED, out.round, out.attempt, sender)
        data = serde.encode(header, out.body, self.signers[sender], self.ctx)
        msg = serde.decode(data, self.ctx)
        key = self.signers[sender].verify_key
        serde.verify(msg, key, self.ctx)
        if out.endpoint == AGGREGATOR:
            self.raw[(sender, out.type, out.round, out.attempt)] = data
        return msg

    def expected_vectors(self, members: list[str]) -> dict[str, np.ndarray]:
        """What each member would upload now (FedMF local updates are pure until commit)."""
        model = self.aggregator.model
        return {m: self.clients[m].task.local_update(model).vector for m in members}

    def run(self, outgoing: list[Outgoing], sender: str = "aggregator") -> None:
        """Deliver messages until the federation is quiet."""
        queue = [(sender, out) for out in outgoing]
        while queue:
            src, out = queue.pop(0)
            msg = self._wire(src, out)
            if self.tamper is not None:
                msg = self.tamper(src, msg)
            if out.endpoint == AGGREGATOR:
                if (src, out.type) in self.lost:
                    continue
                queue += [("aggregator", o) for o in self._to_aggregator(src, msg)]
            else:
                targets = (
                    [c for c in self.clients if client_endpoint(c) == out.endpoint]
                    if out.endpoint is not None
                    else list(self.clients)
                )
                for cid in targets:
                    if cid in self.offline or (cid, out.type) in self.unheard:
                        continue
                    queue += [(cid, o) for o in self._to_client(cid, msg)]
            if self.aggregator.ready_to_finish and not self.hold_finish:
                try:
                    outcome = self.aggregator.finish()
                except FedcastError as exc:  # as the service does: retry or restart
                    queue += [("aggregator", o) for o in self.aggregator.decryption_failed(exc.reason)]
                    continue
                self.aggregator.adopt(outcome)
                self.completed.append((outcome.round, outcome.members, outcome.model))
                after = self.aggregator.checkpointed()
                # The RESULT goes out now; the next round's announcement waits for the test.
                queue += [("aggregator", o) for o in after if o.type == MessageType.RESULT]
                self.next_round = [o for o in after if o.type != MessageType.RESULT]

    def _to_aggregator(self, src: str, msg: Signed) -> list[Outgoing]:
        h = msg.header
        agg = self.aggregator
        try:
            if h.type == MessageType.READY:
                return agg.on_ready(h.sender, h.round, h.attempt, self.registry[h.sender])
            if h.type == MessageType.UPLOAD:
                return agg.on_upload(h.sender, h.round, h.attempt, msg.body)  # type: ignore[arg-type]
            if h.type == MessageType.RESPONSE:
                raw = serde.encode(msg.header, msg.body, self.signers[src], self.ctx)
                return agg.on_response(h.sender, h.round, h.attempt, msg.body, raw)  # type: ignore[arg-type]
        except Exception as exc:
            self.rejected.append(("aggregator", exc))
        return []

    def _to_client(self, cid: str, msg: Signed) -> list[Outgoing]:
        h = msg.header
        client = self.clients[cid]
        try:
            if h.type == MessageType.ANNOUNCE:
                return client.on_announce(h.round, h.attempt, msg.body)  # type: ignore[arg-type]
            if h.type == MessageType.ENVELOPE:
                job = client.on_envelope(h.round, h.attempt, msg.body, self.registry)  # type: ignore[arg-type]
                return client.uploaded(client.compute_upload(job))
            if h.type == MessageType.CHALLENGE:
                registry = self.registry if client.needs_registry(h.round, h.attempt) else None
                return client.on_challenge(h.round, h.attempt, msg.body, registry)  # type: ignore[arg-type]
            if h.type == MessageType.RESULT:
                client.on_result(h.round, h.attempt, msg.body)  # type: ignore[arg-type]
        except Exception as exc:
            self.rejected.append((cid, exc))
        return []

    def expire(self) -> None:
        """Jump past the aggregator's deadline and deliver what that triggers."""
        assert self.aggregator.deadline is not None
        self.clock.now = self.aggregator.deadline + 0.001
        self.run(self.aggregator.poll())
