"""Faults injected into real fedcast processes on the real broker (issue 12).

Every party is its own ``fedcast`` process, as an operator runs them. The aggregator is
killed with SIGKILL at random moments, again and again, and restarted on the same state
directory while the key service and the edges keep running: no start may fail, no
completed round may stay unannounced, and no edge may need a restart. The figures
(kills, rounds, start-up times) go to docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedcast.services.aggregator.checkpoint import CheckpointStore

from .private_broker import PrivateBroker, rabbitmq_server, stop_processes

pytestmark = pytest.mark.broker

KILLS = 20
EDGES = 3
SEED = 20261130
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedcast.cli", *args]


@dataclass
class Federation:
    root: Path
    name: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    aggregator_token: str = "aggregator-token-" + uuid.uuid4().hex
    url: str = AMQP_URL

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FEDCAST_AMQP_URL": self.url,
            "FEDCAST_FEDERATION": self.name,
            "FEDCAST_METRICS_PORT": "0",
            "FEDCAST_LOG_LEVEL": "INFO",
            "FEDCAST_TASK": "fedmf",
            "FEDCAST_TASK_N_ITEMS": "30",
            "FEDCAST_TASK_LATENT_DIM": "3",
            **extra,
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        stop_processes(fed.procs)
        _delete_topology(fed.url, fed.name)


def _delete_topology(url: str, federation: str) -> None:
    """Remove the federation's queues and exchanges from the shared broker (best effort)."""
    import asyncio

    from fedcast.bench.procs import delete_topology

    endpoints = ["keyserver", "aggregator", *[f"client.line-{i}" for i in range(EDGES)]]
    try:
        asyncio.run(delete_topology(url, federation, endpoints))
    except Exception:  # a leftover queue only costs the broker a little memory
        pass


def _wait_for(predicate: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _start_federation(
    fed: Federation, **keyserver_extra: str
) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    ks_env = fed.env(
        FEDCAST_STATE_DIR=str(fed.root / "keyserver"),
        FEDCAST_AGGREGATOR_TOKEN=fed.aggregator_token,
        **keyserver_extra,
    )
    keyserver = fed.spawn("keyserver", _cli("keyserver"), ks_env)
    _wait_for(lambda: (fed.root / "keyserver" / "verify-key.json").exists(), "the key service", 90)
    assert keyserver.poll() is None, fed.log("keyserver")
    verify_key = subprocess.run(
        _cli("keyserver", "verify-key"), env=ks_env, check=True, capture_output=True, text=True
    ).stdout.strip()
    edges = []
    for i in range(EDGES):
        cid = f"line-{i}"
        token = subprocess.run(
            _cli("keyserver", "add-device", cid), env=ks_env, check=True, capture_output=True, text=True
        ).stdout.strip()
        env = fed.env(
            FEDCAST_CLIENT_ID=cid,
            FEDCAST_STATE_DIR=str(fed.root / cid),
            FEDCAST_KEYSERVER_VERIFY_KEY=verify_key,
            FEDCAST_ENROLLMENT_TOKEN=token,
            FEDCAST_SYNTHETIC_SHARD=str(i),
            FEDCAST_SYNTHETIC_SHARDS=str(EDGES),
            FEDCAST_TABLE_MEMORY_MB="16",
        )
        edges.append(fed.spawn(cid, _cli("edge"), env))
    agg_env = fed.env(
        FEDCAST_STATE_DIR=str(fed.root / "aggregator"),
        FEDCAST_AGGREGATOR_TOKEN=fed.aggregator_token,
        FEDCAST_KEYSERVER_VERIFY_KEY=verify_key,
        FEDCAST_EXPECTED_CLIENTS=str(EDGES),
        FEDCAST_READY_WINDOW_S="3",
        FEDCAST_UPLOAD_TIMEOUT_S="5",
        FEDCAST_RESPONSE_TIMEOUT_S="5",
        FEDCAST_TABLE_MEMORY_MB="16",
    )
    return agg_env, edges


def _edge_rounds(fed: Federation) -> list[int]:
    rounds = []
    for i in range(EDGES):
        path = fed.root / f"line-{i}" / "last-round.json"
        rounds.append(json.loads(path.read_text())["last_completed_round"] if path.exists() else 0)
    return rounds


def _checkpointed_round(fed: Federation) -> int:
    loaded = CheckpointStore(fed.root / "aggregator" / "checkpoint").load()
    return 0 if loaded is None else loaded.checkpoint.round


def _completed_rounds(text: str) -> list[int]:
    return [int(line.split("round ")[1].split()[0]) for line in text.splitlines() if "complete with" in line]


def test_kill_9_of_the_aggregator_at_random_moments(federation: Federation) -> None:
    """20 SIGKILLs of the aggregator at random moments (seeded), each followed by a restart.

    Proves: every restarted aggregator starts (none exits by itself, each reaches its loop),
    the federation keeps making progress, the edges are never restarted, and after a last
    aggregator completes two rounds and exits cleanly, every edge has committed exactly the
    last checkpointed round: no completed round was left unannounced.
    """
    fed = federation
    agg_env, edges = _start_federation(fed)
    pids = [e.pid for e in edges]
    rng = random.Random(SEED)
    figures: list[dict[str, float]] = []
    for kill in range(KILLS):
        name = f"aggregator-{kill:02d}"
        started = time.monotonic()
        proc = fed.spawn(name, _cli("aggregator"), agg_env)
        _wait_for(lambda n=name: "serving: round" in fed.log(n), f"{name} to serve", 60)  # type: ignore[misc]
        serving = time.monotonic() - started
        time.sleep(rng.uniform(0.0, 2.5))
        assert proc.poll() is None, f"{name} exited by itself:\n{fed.log(name)[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # results already on the broker reach the edges
        checkpointed = _checkpointed_round(fed)
        behind = sum(r < checkpointed for r in _edge_rounds(fed))
        figures.append(
            {
                "kill": kill,
                "start_s": serving,
                "rounds": len(_completed_rounds(fed.log(name))),
                "edges_behind": behind,
            }
        )
        assert all(e.poll() is None for e in edges), "an edge died"
        if behind:  # the checkpointed round's result never went out: the next start re-sends it
            pending_name = f"aggregator-{kill:02d}-resend"
            resend = fed.spawn(pending_name, _cli("aggregator"), agg_env)
            _wait_for(
                lambda c=checkpointed: min(_edge_rounds(fed)) >= c,  # type: ignore[misc]
                f"every edge to commit round {checkpointed} after the restart",
                30,
            )
            resend.send_signal(signal.SIGKILL)
            resend.wait()

    final_env = {**agg_env, "FEDCAST_ROUNDS": "2"}
    final = fed.spawn("aggregator-final", _cli("aggregator"), final_env)
    try:
        assert final.wait(timeout=180) == 0, fed.log("aggregator-final")[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the last aggregator did not complete 2 rounds:\n{fed.log('aggregator-final')[-3000:]}")
    loaded = CheckpointStore(fed.root / "aggregator" / "checkpoint").load()
    assert loaded is not None and loaded.damaged == ()
    last = loaded.checkpoint.round
    assert [e.pid for e in edges] == pids and all(e.poll() is None for e in edges)  # never restarted

    def committed_last() -> bool:
        rounds = [
            json.loads((fed.root / f"line-{i}" / "last-round.json").read_text())["last_completed_round"]
            for i in range(EDGES)
        ]
        return rounds == [last] * EDGES

    _wait_for(committed_last, f"every edge to commit round {last}", 10)
    killed_rounds = sum(f["rounds"] for f in figures)
    assert last >= 2 + killed_rounds > 2  # progress under the kills, and no round id reused
    summary = {
        "kills": KILLS,
        "kills_with_a_checkpointed_round_not_yet_committed_by_every_edge": sum(
            1 for f in figures if f["edges_behind"]
        ),
        "rounds_completed_between_kills": killed_rounds,
        "last_round": last,
        "start_s_max": max(f["start_s"] for f in figures),
        "start_s_median": sorted(f["start_s"] for f in figures)[KILLS // 2],
    }
    print("FAULTS", json.dumps(summary))


@pytest.mark.skipif(rabbitmq_server() is None, reason="rabbitmq-server is not installed: no private node")
def test_a_broker_restart_mid_round_loses_no_process_and_rounds_resume(federation: Federation) -> None:
    """The federation runs on a private RabbitMQ node, which is stopped and started again
    while rounds run back to back (so mid-round).

    Proves: no fedcast process exits, none is restarted, and rounds complete again after
    the broker is back (robust connections re-declare their consumers; quorum queues kept
    what was in them); prints the time from the broker being back to the next completed round.
    """
    broker = PrivateBroker(federation.root / "broker")
    broker.start()
    try:
        federation.url = broker.url
        agg_env, edges = _start_federation(federation)
        aggregator = federation.spawn("aggregator", _cli("aggregator"), agg_env)
        _wait_for(lambda: len(_completed_rounds(federation.log("aggregator"))) >= 3, "3 rounds", 120)
        down = time.monotonic()
        broker.restart()
        back = time.monotonic()
        before = max(_completed_rounds(federation.log("aggregator")))
        _wait_for(
            lambda: max(_completed_rounds(federation.log("aggregator"))) >= before + 3,
            "3 more rounds after the broker restart",
            120,
        )
        resumed = time.monotonic()
        everyone = [aggregator, *edges, federation.procs[0]]  # the key service first spawned
        assert all(p.poll() is None for p in everyone), "a process exited over the broker restart"
        print(
            "BROKER_RESTART",
            json.dumps(
                {
                    "broker_down_s": back - down,
                    "three_rounds_after_back_s": resumed - back,
                    "round_before": before,
                }
            ),
        )
    finally:
        stop_processes(federation.procs)
        broker.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """The fedcast samples of one /metrics endpoint: {'name{labels}': value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("fedcast_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


@pytest.mark.skipif(rabbitmq_server() is None, reason="rabbitmq-server is not installed: no private node")
def test_floods_cost_bounded_lookups_and_memory_and_rounds_go_on(federation: Federation) -> None:
    """On a private node with the deployment's 4 MiB max_message_size, an attacker with broker
    access floods the aggregator: 10,000 well-formed READY messages from invented senders for
    the current round, 8 garbage messages of 3.9 MB, and one of 50 MB.

    Proves: the key-service lookups the flood causes stay within the gate's budget (1,000 at
    once, then 100 a second), the aggregator's memory stays bounded, rounds keep completing,
    and the broker itself refuses the 50 MB message. Prints the figures (docs/RELIABILITY.md).
    """
    import asyncio

    import aio_pika

    from fedcast.shared.crypto.signing import SigningKeyPair
    from fedcast.shared.wire.messages import Header, MessageType, Ready
    from fedcast.shared.wire.serde import encode

    fed = federation
    keyserver_limit_mb = 256  # the key service's memory limit in k8s/base (256Mi)
    broker = PrivateBroker(fed.root / "broker", config="max_message_size = 4194304")
    broker.start()
    try:
        fed.url = broker.url
        ks_port, agg_port = _free_port(), _free_port()
        agg_env, edges = _start_federation(
            fed, FEDCAST_METRICS_PORT=str(ks_port), FEDCAST_METRICS_HOST="127.0.0.1"
        )
        # One client more than run: every ready window runs its full 2 s, so the aggregator
        # spends most of its time collecting READYs, where invented senders cost lookups.
        agg_env = {
            **agg_env,
            "FEDCAST_EXPECTED_CLIENTS": str(EDGES + 1),
            "FEDCAST_READY_WINDOW_S": "2",
            "FEDCAST_METRICS_PORT": str(agg_port),
            "FEDCAST_METRICS_HOST": "127.0.0.1",
        }
        aggregator = fed.spawn("aggregator", _cli("aggregator"), agg_env)
        _wait_for(lambda: len(_completed_rounds(fed.log("aggregator"))) >= 2, "2 rounds", 120)
        lookups_key = 'fedcast_messages_received_total{service="keyserver",type="get_keys"}'
        before_lookups = _scrape(ks_port).get(lookups_key, 0.0)
        rss_before, _ = _rss_mb(aggregator.pid)
        keyserver = fed.procs[0]  # _start_federation spawns the key service first
        ks_rss_before, _ = _rss_mb(keyserver.pid)
        rounds_before = len(_completed_rounds(fed.log("aggregator")))
        signer = SigningKeyPair.generate()

        async def flood() -> tuple[float, str]:
            connection = await aio_pika.connect(broker.url)
            try:
                channel = await connection.channel(publisher_confirms=False)
                exchange = await channel.get_exchange(f"fedcast.{fed.name}", ensure=False)
                started = time.monotonic()
                for batch in range(10):
                    current = int(_scrape(agg_port)['fedcast_current_round{service="aggregator"}'])
                    for i in range(1000):
                        sender = f"intruder-{batch:02d}{i:04d}"
                        body = encode(
                            Header(MessageType.READY, fed.name, current, 0, sender), Ready(), signer, None
                        )
                        await exchange.publish(aio_pika.Message(body), routing_key="aggregator")
                for _ in range(8):
                    await exchange.publish(aio_pika.Message(os.urandom(3_900_000)), routing_key="aggregator")
                    # the audit's 4 x 50 MB took the key service past its 256Mi limit
                    await exchange.publish(aio_pika.Message(os.urandom(3_900_000)), routing_key="keyserver")
                elapsed = time.monotonic() - started
                refused = ""
                confirm = await connection.channel(publisher_confirms=True)
                big = await confirm.get_exchange(f"fedcast.{fed.name}", ensure=False)
                try:
                    await big.publish(
                        aio_pika.Message(os.urandom(50_000_000)), routing_key="aggregator", timeout=30
                    )
                except Exception as exc:  # the broker closes the channel: PRECONDITION_FAILED
                    refused = f"{type(exc).__name__}: {exc}"
                return elapsed, refused
            finally:
                await connection.close()

        flood_s, refused = asyncio.run(flood())
        _wait_for(
            lambda: len(_completed_rounds(fed.log("aggregator"))) >= rounds_before + 3,
            "3 more rounds after the flood",
            120,
        )
        after = _scrape(agg_port)
        lookups = _scrape(ks_port).get(lookups_key, 0.0) - before_lookups
        rss_after, rss_peak = _rss_mb(aggregator.pid)
        ks_rss_after, ks_rss_peak = _rss_mb(keyserver.pid)
        # Random bytes decode as `malformed` ~97% of the time and as `unsupported_version` when
        # the version slot happens to hold a small integer (~3% each): both are a garbage refusal.
        ks_garbage = sum(
            v
            for k, v in _scrape(ks_port).items()
            if k.startswith("fedcast_messages_rejected_total{")
            and 'service="keyserver"' in k
            and ('reason="malformed"' in k or 'reason="unsupported_version"' in k)
        )
        rejected = {
            re.search(r'reason="([^"]+)"', k).group(1): v  # type: ignore[union-attr]
            for k, v in after.items()
            if k.startswith("fedcast_messages_rejected_total{") and 'service="aggregator"' in k and v
        }
        elapsed = flood_s + 1.0  # the lookups may run a little after the last publish
        assert lookups <= 1000 + 100 * (elapsed + 30), lookups  # the budget, with the drain time
        assert "PRECONDITION_FAILED" in refused and "larger than configured max size" in refused, refused
        assert rejected.get("unknown_sender", 0) + rejected.get("stale", 0) >= 10_000 - 100, rejected
        assert aggregator.poll() is None and all(e.poll() is None for e in edges)
        assert rss_peak - rss_before < 150, (rss_before, rss_peak)
        assert keyserver.poll() is None and ks_garbage >= 8, ks_garbage
        assert ks_rss_peak < keyserver_limit_mb, (ks_rss_before, ks_rss_peak)
        figures = {
            "flood_messages": 10_016,
            "flood_publish_s": round(flood_s, 2),
            "key_service_lookups": lookups,
            "aggregator_rejections": rejected,
            "aggregator_rss_mb_before": round(rss_before, 1),
            "aggregator_rss_mb_after": round(rss_after, 1),
            "aggregator_rss_mb_peak": round(rss_peak, 1),
            "keyserver_garbage_refused": ks_garbage,
            "keyserver_rss_mb_before": round(ks_rss_before, 1),
            "keyserver_rss_mb_after": round(ks_rss_after, 1),
            "keyserver_rss_mb_peak": round(ks_rss_peak, 1),
            "fifty_mb_message": refused[:160],
        }
        print("FLOOD", json.dumps(figures))
    finally:
        stop_processes(fed.procs)
        broker.stop()
