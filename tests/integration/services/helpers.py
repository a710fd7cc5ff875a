"""A whole federation over the real RabbitMQ for service-level tests, and the probes they use.

:class:`Federation` wires a key service, an aggregator and edge clients exactly as
``fedcast/demo.py`` does (device provisioning, the pinned key-service verify key, the
``on_round`` / ``on_result`` hooks), but with one :class:`AmqpTransport` per service whose
connection name is unique to the test federation, so a test can find and kill it with
``rabbitmqctl``. Alongside, :class:`PlaintextReplay` steps the same task without crypto over
the online sets the secure run reports, so tests can compare models within quantization.

Nothing here sleeps to "let things settle": hooks and probes notify a :class:`Pulse` and
tests wait, with a bounded timeout, until the condition they need is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import numpy as np
import pytest
from prometheus_client import REGISTRY

from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.edge_client.data import DataSource, synthetic_shard
from fedcast.services.edge_client.service import EdgeClientService, EdgeConfig
from fedcast.services.keyserver.service import KeyServer, KeyServerConfig
from fedcast.services.runtime import Outbox
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import DEFAULT_FRAC_BITS
from fedcast.shared.keystore import read_secret_json
from fedcast.shared.learning.data import FloatArray
from fedcast.shared.learning.tasks import FedMFClientTask, FedMFServerTask, TaskSpec
from fedcast.shared.protocol.aggregator import RoundConfig, RoundOutcome
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.amqp import AmqpConfig, AmqpTransport
from fedcast.shared.transport.base import AGGREGATOR, KEYSERVER, Delivery, client_endpoint
from fedcast.shared.wire.messages import Header, MessageType, Signed
from fedcast.shared.wire.serde import WireContext, decode, peek_header

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_TOKEN = "svc-test-admin-token-" + "a" * 24
AGGREGATOR_TOKEN = "svc-test-aggregator-token-" + "b" * 24
CLIP = 16.0  # wide enough that no value of SPEC is clipped (tests check the clip counter)
QUANTUM = 2.0**-DEFAULT_FRAC_BITS
# Plain gradient descent: these tests check the protocol against a plaintext replay, and the
# replay tolerance below is gd's (precond divides by the summed curvature, which amplifies the
# fixed-point quantum by a data-dependent factor; its own parity tests are in tests/unit).
SPEC = TaskSpec(n_items=12, latent_dim=3, learning_rate=0.01, seed=7, optimizer="gd")
#: Test federations have 2-5 clients: the minimum online set is lowered to 2 explicitly (the
#: default is 3) for the key service, the aggregator and every edge.
MIN_ONLINE = 2
#: Short timeouts: a ready window closes early once every expected client is ready.
FAST_ROUNDS = RoundConfig(
    min_online=2, ready_window_s=1.5, upload_timeout_s=2.5, response_timeout_s=2.5, max_attempts=3
)
WAIT_S = 30.0  # the bound on any single wait in these tests (a hang fails instead of blocking CI)

T = TypeVar("T")


# -- metrics ----------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    """The current value of one Prometheus sample of this process (0 if never incremented)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected(service: str, reason: str) -> float:
    return sample("fedcast_messages_rejected_total", service=service, reason=reason)


def rejections(service: str, reasons: Sequence[str]) -> dict[str, float]:
    return {reason: rejected(service, reason) for reason in reasons}


# -- waiting ----------------------------------------------------------------------------------


class Pulse:
    """Wake waiters whenever something they might be waiting for changed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.checks: list[Callable[[], None]] = []  # run on every wake-up: raise to fail fast

    def notify(self) -> None:
        self._event.set()

    async def wait_for_event(self, event: asyncio.Event, what: str, timeout: float = WAIT_S) -> None:
        """Until ``event`` is set (the checks still run, so a dead service fails the wait)."""
        watcher = asyncio.ensure_future(event.wait())
        watcher.add_done_callback(lambda _: self.notify())
        try:
            await self.wait_until(event.is_set, what, timeout)
        finally:
            watcher.cancel()

    async def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for check in self.checks:
                        check()
                    if predicate():
                        return
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


# -- broker-side fault injection ----------------------------------------------------------------


async def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl; skip the test (with the reason) if it is missing or does not work here."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(ctl):
        pytest.skip("rabbitmqctl is not installed: cannot close connections from the broker side")
    process = await asyncio.create_subprocess_exec(
        ctl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.skip(f"rabbitmqctl {args[0]} did not answer within 60 s")
    if process.returncode != 0:
        pytest.skip(f"rabbitmqctl does not work here: {err.decode(errors='replace')[:200]}")
    return out.decode()


async def connection_pid(connection_name: str) -> str:
    """The Erlang pid of the connection whose client_properties carry ``connection_name``.

    RabbitMQ 3.10's ``close_connection`` takes that pid, not the ``name`` column
    (the same lookup as tests/integration/transport/test_amqp.py).
    """
    listing = await rabbitmqctl("list_connections", "-q", "pid", "client_properties")
    pids = [
        line.split("\t")[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    assert len(pids) == 1, f"expected one connection named {connection_name!r}:\n{listing}"
    return pids[0]


async def close_connection(pid: str) -> None:
    await rabbitmqctl("close_connection", pid, "fedcast services fault-injection test")


# -- the plaintext reference ------------------------------------------------------------------


class PlaintextReplay:
    """The same federation without crypto, stepped over the secure run's online sets (demo.py)."""

    def __init__(self, spec: TaskSpec, sources: dict[str, DataSource]) -> None:
        self.server = FedMFServerTask(spec)
        self.model: FloatArray = self.server.initial_model()
        self.clients: dict[str, FedMFClientTask] = {}
        for cid, source in sources.items():
            train, test = synthetic_shard(spec, source)
            self.clients[cid] = FedMFClientTask(spec, train, test, client_seed=source.shard)
        self.models: dict[int, FloatArray] = {}  # round -> model after it

    def step(self, round_id: int, members: Sequence[str]) -> None:
        updates = {m: self.clients[m].local_update(self.model) for m in members}
        aggregate = np.sum([u.vector for u in updates.values()], axis=0)
        self.model = self.server.apply(self.model, aggregate, len(members))
        for m, update in updates.items():
            self.clients[m].commit(update.pending)
        self.models[round_id] = self.model


def tolerance(spec: TaskSpec, sizes: Sequence[int]) -> float:
    """How far the secure model may be from the replay after rounds with these |S|.

    Per round, stochastic rounding moves each member's value by less than one quantum, so
    the step moves by < learning_rate * |S| * quantum; later rounds carry earlier differences
    through the (smooth) local updates, which the factor 2 covers with room to spare.
    """
    return 2.0 * sum(spec.learning_rate * n * QUANTUM for n in sizes)


# -- probes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One message a probe saw: its header and raw bytes."""

    header: Header
    body: bytes


class ProbeAggregator(AggregatorService):
    """The real aggregator, recording every delivery it handled (after handling it)."""

    pulse: Pulse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Seen] = []
        self.accepted: list[Header] = []  # passed the gate and the state machine

    def _dispatch(self, msg: Signed, raw: bytes) -> list[Outgoing]:
        outgoing = super()._dispatch(msg, raw)
        self.accepted.append(msg.header)
        return outgoing

    async def _on_delivery(self, delivery: Delivery) -> None:
        try:
            await super()._on_delivery(delivery)
        finally:
            with contextlib.suppress(Exception):  # garbage has no header: it is only counted
                self.seen.append(Seen(peek_header(delivery.body, max_bytes=1 << 30), delivery.body))
            self.pulse.notify()


class ProbeEdge(EdgeClientService):
    """The real edge client; records what it handled and replied, and can drop messages.

    ``drop(msg)`` True makes the client behave as if it died on that message: nothing is
    processed and nothing is sent (a member that stops before uploading, or after uploading
    but before answering the challenge). ``hold`` pauses the handling of an envelope until
    the test releases it (to act while the round is certainly in progress).
    """

    pulse: Pulse

    def __init__(
        self,
        *args: Any,
        drop: Callable[[Signed], bool] | None = None,
        hold: Callable[[Signed], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.drop = drop or (lambda msg: False)
        self.hold = hold or (lambda msg: False)
        self.held = asyncio.Event()  # set when a held message arrived
        self.release = asyncio.Event()
        self.handled: list[Header] = []  # every message that passed the gate, in order
        self.dropped: list[Header] = []
        self.replies: list[Outgoing] = []  # everything the shell was asked to send

    async def _dispatch(self, msg: Signed) -> list[Outgoing]:
        if self.drop(msg):
            self.dropped.append(msg.header)
            return []
        if self.hold(msg):
            self.held.set()
            await self.release.wait()
        outgoing = await super()._dispatch(msg)
        self.replies.extend(outgoing)
        return outgoing

    async def _on_delivery(self, delivery: Delivery) -> None:
        try:
            await super()._on_delivery(delivery)
        finally:
            with contextlib.suppress(Exception):
                self.handled.append(peek_header(delivery.body, max_bytes=1 << 30))
            self.pulse.notify()

    def replied(self, mtype: MessageType) -> list[Outgoing]:
        return [o for o in self.replies if o.type == mtype]


# -- the federation -----------------------------------------------------------------------------


@dataclass
class RoundLog:
    outcomes: dict[int, RoundOutcome] = field(default_factory=dict)
    commits: dict[str, list[int]] = field(default_factory=dict)  # client -> rounds it committed

    def members(self, round_id: int) -> tuple[str, ...]:
        return self.outcomes[round_id].members


class Federation:
    """One test federation on the real broker; :meth:`cleanup` removes all it created."""

    def __init__(
        self,
        root: Path,
        n_clients: int,
        *,
        rounds: RoundConfig = FAST_ROUNDS,
        real_group: bool = False,
        spec: TaskSpec = SPEC,
    ) -> None:
        self.id = f"test-svc-{uuid.uuid4().hex[:12]}"
        self.root = root
        self.rounds = rounds
        self.real_group = real_group
        self.spec = spec
        self.ids = [f"line-{i}" for i in range(n_clients)]
        self.sources = {
            cid: DataSource(shard=i, n_shards=n_clients, users_per_client=2, seed=3)
            for i, cid in enumerate(self.ids)
        }
        self.replay = PlaintextReplay(spec, self.sources)
        self.log = RoundLog()
        self.pulse = Pulse()
        self.pulse.checks.append(self._raise_if_a_service_died)
        self.transports: list[AmqpTransport] = []
        self.endpoints: set[str] = {KEYSERVER, AGGREGATOR} | {client_endpoint(c) for c in self.ids}
        self.keyserver: KeyServer | None = None
        self.tokens: dict[str, str] = {}
        self.edges: dict[str, EdgeClientService] = {}
        self.edge_stop = asyncio.Event()
        self.runners: dict[str, asyncio.Task[None]] = {}

    # -- transports ---------------------------------------------------------------------------

    def connection_name(self, service: str) -> str:
        return f"fedcast-test-{self.id}-{service}"

    def transport(self, service: str) -> AmqpTransport:
        """A fresh (unconnected) transport with a connection name unique to this federation."""
        config = AmqpConfig(
            AMQP_URL,
            self.id,
            connection_name=self.connection_name(service),
            reconnect_interval=0.2,
            operation_timeout=5.0,
        )
        transport = AmqpTransport.from_config(config)
        self.transports.append(transport)
        return transport

    # -- services ------------------------------------------------------------------------------

    @property
    def ks(self) -> KeyServer:
        assert self.keyserver is not None, "start_keyserver() first"
        return self.keyserver

    async def start_keyserver(self) -> KeyServer:
        transport = self.transport("keyserver")
        await transport.connect()
        self.keyserver = KeyServer(
            KeyServerConfig(
                self.root / "keyserver",
                federation=self.id,
                modulus_bits=2048,
                clip=CLIP,
                max_clients=16,
                min_online=MIN_ONLINE,
                admin_token=ADMIN_TOKEN,
                aggregator_token=AGGREGATOR_TOKEN,
                allow_insecure_test_group=not self.real_group,
            ),
            transport,
        )
        await self.keyserver.start()
        self.tokens = {cid: self.keyserver.store.provision_device(cid) for cid in self.ids}
        return self.keyserver

    @property
    def aggregator_dir(self) -> Path:
        return self.root / "aggregator"

    def aggregator(
        self,
        cls: type[AggregatorService] = ProbeAggregator,
        *,
        name: str = "aggregator",
        on_round: Callable[[RoundOutcome], None] | None = None,
        **overrides: Any,
    ) -> AggregatorService:
        """An aggregator on this federation's state dir (not started); records every round."""

        def record(outcome: RoundOutcome) -> None:
            self.replay.step(outcome.round, outcome.members)
            self.log.outcomes[outcome.round] = outcome
            if on_round is not None:
                on_round(outcome)
            self.pulse.notify()

        settings: dict[str, Any] = {
            "federation": self.id,
            "amqp_url": AMQP_URL,
            "aggregator_token": AGGREGATOR_TOKEN,
            "keyserver_verify_key": self.ks.verify_key,
            "task": self.spec,
            "rounds": self.rounds,
            "allow_insecure_test_group": not self.real_group,
        } | overrides
        service = cls(
            AggregatorConfig(self.aggregator_dir, **settings), self.transport(name), on_round=record
        )
        if isinstance(service, ProbeAggregator):
            service.pulse = self.pulse
        return service

    def run(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run a service's ``run()`` as a task; its failure fails the next wait at once."""
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda _: self.pulse.notify())
        self.runners[name] = task
        return task

    def run_aggregator(self, aggregator: AggregatorService, stop: asyncio.Event) -> asyncio.Task[None]:
        return self.run(f"aggregator-{id(aggregator)}", aggregator.run(stop))

    def edge(
        self, cid: str, cls: type[EdgeClientService] = EdgeClientService, **kwargs: Any
    ) -> EdgeClientService:
        def committed(round_id: int, ok: bool) -> None:
            if ok:
                self.log.commits.setdefault(cid, []).append(round_id)
            self.pulse.notify()

        config = EdgeConfig(
            cid,
            self.root / cid,
            self.ks.verify_key,
            federation=self.id,
            amqp_url=AMQP_URL,
            enrollment_token=self.tokens[cid],
            task=self.spec,
            data=self.sources[cid],
            min_online=MIN_ONLINE,
            allow_insecure_test_group=not self.real_group,
        )
        service = cls(config, self.transport(cid), on_result=committed, **kwargs)
        if isinstance(service, ProbeEdge):
            service.pulse = self.pulse
        self.edges[cid] = service
        return service

    async def start_edges(
        self, ids: Sequence[str], cls: type[EdgeClientService] = EdgeClientService, **kwargs: Any
    ) -> list[EdgeClientService]:
        """Run edge clients until ``edge_stop``; returns once each is enrolled and consuming."""
        edges = [self.edge(cid, cls, **kwargs) for cid in ids]
        for edge in edges:
            self.run(edge.config.client_id, edge.run(self.edge_stop))
        for edge in edges:
            await self.pulse.wait_for_event(edge.ready, f"edge {edge.config.client_id} to be ready")
        return edges

    # -- waiting and checking --------------------------------------------------------------------

    def _raise_if_a_service_died(self) -> None:
        for name, task in self.runners.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"service {name} failed") from task.exception()

    async def wait_round(self, round_id: int, timeout: float = WAIT_S) -> RoundOutcome:
        await self.pulse.wait_until(lambda: round_id in self.log.outcomes, f"round {round_id}", timeout)
        return self.log.outcomes[round_id]

    async def wait_commits(self, round_id: int, timeout: float = WAIT_S) -> None:
        """Until every member of ``round_id`` committed it (the RESULT reached them)."""
        outcome = await self.wait_round(round_id, timeout)
        await self.pulse.wait_until(
            lambda: all(round_id in self.log.commits.get(m, []) for m in outcome.members),
            f"the members of round {round_id} to commit it",
            timeout,
        )

    def assert_matches_replay(self, round_id: int) -> None:
        """The secure model after ``round_id`` equals the plaintext replay within quantization."""
        secure = self.log.outcomes[round_id].model
        plain = self.replay.models[round_id]
        sizes = [len(self.log.members(r)) for r in sorted(self.log.outcomes) if r <= round_id]
        np.testing.assert_allclose(secure, plain, rtol=0, atol=tolerance(self.spec, sizes))
        # and the comparison can fail: a round's step is far larger than the tolerance
        previous = self.replay.models.get(round_id - 1, self.replay.server.initial_model())
        assert np.max(np.abs(plain - previous)) > 100 * tolerance(self.spec, sizes)

    async def stop_all(self, timeout: float = WAIT_S) -> None:
        """Set the edges' stop event and wait for every runner to end (each closes its transport)."""
        self.edge_stop.set()
        pending = [t for t in self.runners.values() if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)

    async def cleanup(self) -> None:
        for task in self.runners.values():
            if not task.done():
                task.cancel()
        if self.runners:
            await asyncio.wait(list(self.runners.values()), timeout=10)
        if self.keyserver is not None:
            await self.keyserver.stop()
        for transport in self.transports:
            await transport.close()
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        try:
            channel = await connection.channel()
            for endpoint in sorted(self.endpoints):
                await channel.queue_delete(f"fedcast.{self.id}.{endpoint}")
            await channel.exchange_delete(f"fedcast.{self.id}")
            await channel.exchange_delete(f"fedcast.{self.id}.broadcast")
        finally:
            await connection.close()


# -- a malicious aggregator: the test, signing with the aggregator's own key ------------------------


class ForgedAggregator:
    """Speaks as ``aggregator`` with the key from the real aggregator's state directory.

    It owns the ``aggregator`` endpoint (the real service only started to register its keys,
    then stopped), so everything the clients send in reply lands in :attr:`inbox`.
    """

    def __init__(self, fed: Federation, signer: SigningKeyPair, secret: AggregatorSecretKey) -> None:
        self.fed = fed
        self.signer = signer
        self.secret = secret
        self.ctx = WireContext.from_group(fed.ks.params.group)
        self.transport = fed.transport("forger")
        self.inbox: list[Signed] = []

    @classmethod
    async def from_state_dir(cls, fed: Federation) -> ForgedAggregator:
        group = fed.ks.params.group
        signer = SigningKeyPair.from_secret_dict(read_secret_json(fed.aggregator_dir / "signing-key.json"))
        secret = AggregatorSecretKey.from_secret_dict(
            read_secret_json(fed.aggregator_dir / "aggregator-key.json"), group
        )
        registered = fed.ks.store.aggregator()
        assert registered is not None and registered.verify_key == signer.verify_key
        forger = cls(fed, signer, secret)
        await forger.transport.connect()
        await forger.transport.consume(AGGREGATOR, forger._received)
        return forger

    async def _received(self, delivery: Delivery) -> None:
        self.inbox.append(decode(delivery.body, self.ctx))
        self.fed.pulse.notify()

    def from_client(self, cid: str, *types: MessageType) -> list[Signed]:
        return [m for m in self.inbox if m.header.sender == cid and (not types or m.header.type in types)]

    async def send(self, outgoing: Sequence[Outgoing]) -> None:
        outbox = Outbox("test-forger", self.transport, self.fed.id, "aggregator", self.signer, self.ctx)
        await outbox.send(outgoing)


async def bounded(awaitable: Awaitable[T], what: str, timeout: float = WAIT_S) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
