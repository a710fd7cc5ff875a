"""``fedcast demo``: a whole federation in one process, on real 2048-bit crypto.

A key service, an aggregator and N edge clients run as asyncio tasks and talk
through a transport exactly as separate processes would: the in-process broker
by default (no RabbitMQ needed), or RabbitMQ with ``--amqp URL``. The task is
FedMF on the seeded synthetic IIoT data (production lines x part types).

Alongside, the demo replays every completed round in plaintext over the same
online set (same data, same initialisation) and reports both test RMSEs per
round: the secure run should match the plaintext one up to quantization.

With ``--metrics-port`` the process serves ``/metrics``, ``/healthz`` and
``/readyz`` for the whole federation (:func:`run_demo_observed`); the services
share the process's registry and are told apart by the ``service`` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.edge_client.data import DataSource, synthetic_shard
from fedcast.services.edge_client.service import EdgeClientService, EdgeConfig
from fedcast.services.keyserver.service import KeyServer, KeyServerConfig
from fedcast.services.observability import MetricsServer, ObservabilityConfig, initialize_series
from fedcast.services.runtime import make_transport
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.tasks import FedMFClientTask, FedMFServerTask, TaskSpec
from fedcast.shared.metrics import PHASE_SECONDS
from fedcast.shared.protocol.aggregator import RoundConfig, RoundOutcome
from fedcast.shared.transport.inprocess import InProcessBroker

__all__ = [
    "DemoConfig",
    "DemoResult",
    "DemoStatus",
    "main_json",
    "print_summary",
    "run_demo",
    "run_demo_observed",
]

_ADMIN_TOKEN = "demo-admin-token-" + "x" * 24
_AGGREGATOR_TOKEN = "demo-aggregator-token-" + "y" * 24


@dataclass(frozen=True)
class DemoConfig:
    n_clients: int = 8
    rounds: int = 100
    users_per_client: int = 6
    n_items: int = 60
    latent_dim: int = 5
    learning_rate: float = 0.004
    clip: float = 16.0  # item gradients of 6 lines per node reach ~10 in the first rounds
    modulus_bits: int = 2048
    amqp_url: str | None = None
    seed: int = 0
    state_dir: Path | None = None
    insecure_small_group: bool = False  # tests only: a 512-bit modulus for speed
    federation: str | None = None  # default: "demo" in-process, a fresh "demo-<hex>" on RabbitMQ

    def __post_init__(self) -> None:
        if self.n_clients < DEFAULT_MIN_ONLINE:
            raise ConfigurationError(
                f"the demo needs at least {DEFAULT_MIN_ONLINE} clients: every client refuses an online set "
                f"below {DEFAULT_MIN_ONLINE} members (with fewer, colluders could isolate one client's "
                "update)"
            )
        if self.rounds < 1:
            raise ConfigurationError("the demo needs at least one round")


@dataclass
class DemoStatus:
    """What the demo's ``/readyz`` reports: every service serving, and not yet shutting down."""

    ready: bool = False


@dataclass
class DemoResult:
    rounds_completed: int = 0
    rmse_secure: list[float] = field(default_factory=list)
    rmse_plaintext: list[float] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    bytes_total: int = 0
    bytes_by_endpoint: dict[str, int] = field(default_factory=dict)
    seconds_total: float = 0.0
    transport: str = "inprocess"
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds_completed": self.rounds_completed,
            "rmse_secure": self.rmse_secure,
            "rmse_plaintext": self.rmse_plaintext,
            "bytes_total": self.bytes_total,
            "seconds_total": self.seconds_total,
            "transport": self.transport,
        }


class _PlaintextReplay:
    """The same federation without crypto, stepped over the secure run's online sets."""

    def __init__(self, spec: TaskSpec, sources: dict[str, DataSource]) -> None:
        self.server = FedMFServerTask(spec)
        self.model = self.server.initial_model()
        self.clients = {}
        self.tests = {}
        for cid, source in sources.items():
            train, test = synthetic_shard(spec, source)
            self.clients[cid] = FedMFClientTask(spec, train, test, client_seed=source.shard)
            self.tests[cid] = test

    def step(self, members: tuple[str, ...]) -> None:
        updates = {m: self.clients[m].local_update(self.model) for m in members}
        aggregate = np.sum([u.vector for u in updates.values()], axis=0)
        self.model = self.server.apply(self.model, aggregate, len(members))
        for m, update in updates.items():
            self.clients[m].commit(update.pending)


def _global_rmse(tasks: dict[str, FedMFClientTask], model: np.ndarray) -> float:
    """Test RMSE over every client's held-out ratings (weighted by their counts)."""
    squared, count = 0.0, 0
    for task in tasks.values():
        metrics = task.quality(model)
        n = task.n_test_ratings
        if metrics and n:
            squared += metrics["rmse"] ** 2 * n
            count += n
    return math.sqrt(squared / count) if count else float("nan")


async def run_demo_observed(
    config: DemoConfig,
    observability: ObservabilityConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """:func:`run_demo` with the metrics endpoints served for its whole duration."""
    status = DemoStatus()
    async with MetricsServer(
        lambda: status.ready, port=observability.metrics_port, host=observability.metrics_host
    ) as server:
        if progress is not None:
            progress(f"metrics, healthz and readyz on {server.url}")
        return await run_demo(config, progress=progress, status=status)


async def run_demo(
    config: DemoConfig,
    *,
    progress: Callable[[str], None] | None = None,
    status: DemoStatus | None = None,
) -> DemoResult:
    """Run the federation for ``config.rounds`` rounds and return what it measured.

    ``status.ready`` is set once the key service, the aggregator and every edge client
    serve, and cleared when the demo starts shutting down.
    """
    say = progress or (lambda message: None)
    status = status or DemoStatus()
    result = DemoResult(transport="amqp" if config.amqp_url else "inprocess")
    federation = config.federation or ("demo" if not config.amqp_url else f"demo-{uuid.uuid4().hex[:8]}")
    for service in ("keyserver", "aggregator", "edge"):
        initialize_series(service)
    broker = InProcessBroker()

    def counter(endpoint: str, n_bytes: int) -> None:
        result.bytes_total += n_bytes
        # client.<id> -> client; RPC replies (reply.<uuid>, fedcast.<f>.reply.<uuid>) -> reply;
        # an AMQP fanout publish is reported once as "*" (the broker copies it per client).
        if endpoint == "*":
            key = "broadcast"
        elif endpoint.startswith("reply.") or ".reply." in endpoint:
            key = "reply"
        else:
            key = endpoint.split(".", 1)[0]
        result.bytes_by_endpoint[key] = result.bytes_by_endpoint.get(key, 0) + n_bytes

    def transport(service: str) -> Any:
        return make_transport(config.amqp_url, federation, service=service, broker=broker, on_send=counter)

    spec = TaskSpec(
        n_items=config.n_items,
        latent_dim=config.latent_dim,
        learning_rate=config.learning_rate,
        seed=config.seed,
    )
    ids = [f"line-{i:02d}" for i in range(config.n_clients)]
    sources = {
        cid: DataSource(
            shard=i, n_shards=config.n_clients, users_per_client=config.users_per_client, seed=config.seed
        )
        for i, cid in enumerate(ids)
    }
    with contextlib.ExitStack() as stack:
        root = config.state_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="fedcast-demo-"))
        )
        start = time.perf_counter()
        say(f"generating a {config.modulus_bits}-bit RSA modulus and starting the key service")
        ks_transport = transport("keyserver")
        await ks_transport.connect()
        keyserver = KeyServer(
            KeyServerConfig(
                root / "keyserver",
                federation=federation,
                modulus_bits=config.modulus_bits,
                clip=config.clip,
                max_clients=max(64, config.n_clients),
                admin_token=_ADMIN_TOKEN,
                aggregator_token=_AGGREGATOR_TOKEN,
                allow_insecure_test_group=config.insecure_small_group,
            ),
            ks_transport,
        )
        await keyserver.start()
        tokens = {cid: keyserver.store.provision_device(cid) for cid in ids}
        replay = _PlaintextReplay(spec, sources)
        edges: dict[str, EdgeClientService] = {}
        edge_tasks: dict[str, FedMFClientTask] = {}
        stop = asyncio.Event()
        pending_rounds: dict[int, tuple[set[str], np.ndarray, int]] = {}
        # Over RabbitMQ the edges can receive and commit a round's result before the aggregator's
        # on_round runs (it runs after the broadcast's publisher confirm): remember those commits.
        early_commits: dict[int, set[str]] = {}

        def measure(round_id: int) -> None:
            _, model, n_members = pending_rounds.pop(round_id)
            result.rmse_secure.append(_global_rmse(edge_tasks, model))
            result.rmse_plaintext.append(_global_rmse(replay.clients, replay.model))
            result.rounds_completed += 1
            secure, plain = result.rmse_secure[-1], result.rmse_plaintext[-1]
            say(
                f"round {round_id:3d}: {n_members} clients, RMSE secure {secure:.4f} "
                f"plaintext {plain:.4f}, {result.bytes_total / 1e6:.1f} MB on the wire"
            )
            if result.rounds_completed >= config.rounds:
                stop.set()

        def on_round(outcome: RoundOutcome) -> None:
            replay.step(outcome.members)
            waiting = set(outcome.members) - early_commits.pop(outcome.round, set())
            pending_rounds[outcome.round] = (waiting, outcome.model, len(outcome.members))
            result.members.append(len(outcome.members))
            if not waiting:
                measure(outcome.round)

        def on_result(cid: str) -> Callable[[int, bool], None]:
            def record(round_id: int, committed: bool) -> None:
                if not committed:
                    return
                waiting = pending_rounds.get(round_id)
                if waiting is None:
                    early_commits.setdefault(round_id, set()).add(cid)
                    return
                waiting[0].discard(cid)
                if not waiting[0]:  # every member adopted round_id's user vectors: measure now
                    measure(round_id)

            return record

        aggregator = AggregatorService(
            AggregatorConfig(
                root / "aggregator",
                federation=federation,
                amqp_url=config.amqp_url,
                aggregator_token=_AGGREGATOR_TOKEN,
                keyserver_verify_key=keyserver.verify_key,
                task=spec,
                rounds=RoundConfig(expected_clients=config.n_clients, ready_window_s=10.0),
                allow_insecure_test_group=config.insecure_small_group,
            ),
            transport("aggregator"),
            on_round=on_round,
        )
        say("starting the aggregator (registers its keys at the key service)")
        await aggregator.start()
        say(f"starting {config.n_clients} edge clients (keys, enrollment, fixed-base tables)")
        for cid in ids:
            edges[cid] = EdgeClientService(
                EdgeConfig(
                    cid,
                    root / cid,
                    keyserver.verify_key,
                    federation=federation,
                    amqp_url=config.amqp_url,
                    enrollment_token=tokens[cid],
                    task=spec,
                    data=sources[cid],
                    allow_insecure_test_group=config.insecure_small_group,
                ),
                transport(cid),
                on_result=on_result(cid),
            )
        runners = [asyncio.create_task(edge.run(stop)) for edge in edges.values()]
        await asyncio.gather(*(edge.ready.wait() for edge in edges.values()))
        for cid, edge in edges.items():
            assert edge.machine is not None
            edge_tasks[cid] = edge.machine.task  # type: ignore[assignment]
        runners.append(asyncio.create_task(aggregator.run(stop)))
        status.ready = True
        try:
            done, _ = await asyncio.wait(
                {*runners, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED"
            )
            for task in done:
                if task in runners and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            status.ready = False
            stop.set()
            await asyncio.gather(*runners, return_exceptions=True)
            await keyserver.stop()
            await ks_transport.close()
        result.seconds_total = time.perf_counter() - start
    result.phase_seconds = _phase_totals()
    return result


def _phase_totals() -> dict[str, float]:
    totals: dict[str, float] = {}
    for metric in PHASE_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                phase = sample.labels.get("phase", "")
                totals[phase] = totals.get(phase, 0.0) + sample.value
    return totals


def print_summary(result: DemoResult) -> None:
    print()
    print(
        f"fedcast demo over the {result.transport} transport: {result.rounds_completed} rounds in "
        f"{result.seconds_total:.1f} s"
    )
    print(f"  {'round':>5}  {'RMSE secure':>12}  {'RMSE plaintext':>15}  {'diff %':>8}")
    n = len(result.rmse_secure)
    for i, (s, p) in enumerate(zip(result.rmse_secure, result.rmse_plaintext, strict=True), start=1):
        if i <= 5 or i % 10 == 0 or i == n:  # the first rounds, then every tenth
            print(f"  {i:>5}  {s:>12.5f}  {p:>15.5f}  {100 * (s - p) / p:>+8.4f}")
    per_round = result.bytes_total / max(1, result.rounds_completed)
    print(f"  bytes on the wire: {result.bytes_total:,} ({per_round:,.0f} per round)")
    for key, value in sorted(result.bytes_by_endpoint.items()):
        print(f"    to {key:<10} {value:>14,}")
    if result.phase_seconds:
        print(
            "  time per phase (all rounds): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(result.phase_seconds.items()))
        )


def main_json(result: DemoResult) -> str:
    return json.dumps(result.to_json())
