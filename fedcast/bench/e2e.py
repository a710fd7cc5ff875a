"""``fedcast bench e2e``: a whole federation over RabbitMQ, every party its own process.

Two schemes on the same broker, the same task, the same number of edge processes
and the same model size (FedMF on the seeded synthetic data; the item matrix is
``n_items x latent_dim`` = 20,000 parameters by default):

* ``fedcast``: the real services, launched as ``fedcast keyserver``, ``fedcast
  aggregator`` and N x ``fedcast edge`` subprocesses configured by ``FEDCAST_*``
  variables; devices are provisioned with ``fedcast keyserver add-device`` and the
  clients pin the key service's verify key (``fedcast keyserver verify-key``).
  The key service generates the federation's RSA modulus (``FEDCAST_MODULUS_BITS``).
  A round is the full protocol v2: announce, ready, sealed model per member,
  encrypted upload (key segment, data segments, signed first component with its
  proof of knowledge), challenge (every member checks every proof), response with
  its equality proof, decrypt, checkpoint, result. Clients accept no online set
  smaller than ``FEDCAST_MIN_ONLINE`` (3 by default): a cell with fewer edges sets
  it to N on the key service and the edges, and says so in its notes.
* ``plaintext``: a deliberately small FedAvg-style runner (:mod:`fedcast.bench.e2e_plaintext`)
  (``python -m fedcast.bench.e2e_plaintext plaintext-aggregator|plaintext-edge``) over
  :class:`fedcast.shared.transport.amqp.AmqpTransport` (same queues, exchanges, quorum
  queues, publisher confirms): the aggregator broadcasts the float32 model with
  the announcement, each edge trains the same FedMF client task and sends its
  float32 update, the aggregator sums them, applies the same server step and
  broadcasts the result. It has NO signatures, NO key service, NO ready phase,
  NO per-member sealed model, NO challenge round, NO checkpoint: the lower bound
  of a round over this broker, not a secure protocol.

Measured per cell, after ``warmup_rounds`` discarded rounds (the first round
also waits for every edge to start):

* round latency, p50 and p95 over the measured rounds: for fedcast, from the
  aggregator's round start to completion (``fedcast_round_duration_seconds`` from
  its ``/metrics`` endpoint when it exposes one, else the spacing of its
  timestamped ``round N complete`` log lines: round N+1 starts when round N
  completes); for plaintext, the runner aggregator's own clock, announce to sum;
* bytes per round: every byte between the processes and the broker, both
  directions (AMQP framing, acks, key-service RPCs and heartbeats included),
  counted by a TCP relay in this process that all parties connect through;
  ``published`` is what the processes sent to the broker, ``delivered`` what it
  sent them (a broadcast is delivered once per edge).

Every cell uses a fresh federation id; queues, exchanges, state directories and
processes are removed afterwards, also on failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fedcast.bench.procs import (
    Cell,
    CountingRelay,
    E2EBenchError,
    base_env,
    delete_topology,
    free_port,
    peak_rss_mb,
    proxied,
    run_cli,
    tail_log,
    watch_children,
)
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE, MIN_ONLINE

__all__ = [
    "JSON_KEYS",
    "SCHEMES",
    "TABLE_COLUMNS",
    "E2EBenchConfig",
    "E2EBenchError",
    "notes",
    "run_e2e_bench",
]

SCHEMES = ("plaintext", "fedcast")

JSON_KEYS = (
    "scheme",
    "federation",
    "n_clients",
    "n_params",
    "rounds",
    "round_p50_s",
    "round_p95_s",
    "round_mean_s",
    "round_seconds",
    "latency_source",
    "bytes_per_round",
    "published_bytes_per_round",
    "delivered_bytes_per_round",
    "latency_ratio_p50",
    "bytes_ratio",
    "setup_s",
    "cell_s",
    "edge_peak_rss_mb",
)

TABLE_COLUMNS = [
    ("scheme", "scheme"),
    ("n_clients", "clients"),
    ("n_params", "params"),
    ("rounds", "rounds"),
    ("round_p50_s", "p50 s"),
    ("round_p95_s", "p95 s"),
    ("latency_ratio_p50", "p50 x plain"),
    ("bytes_per_round", "B/round"),
    ("bytes_ratio", "B x plain"),
    ("setup_s", "setup s"),
    ("edge_peak_rss_mb", "edge RSS MB"),
    ("latency_source", "latency from"),
]

_COMPLETE = re.compile(r"round (\d+) complete with (\d+) members")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_ROUND_METRIC = "fedcast_round_duration_seconds"


@dataclass(frozen=True)
class E2EBenchConfig:
    """One cell per (client count, scheme); every cell runs its own federation."""

    n_clients: tuple[int, ...] = (8, 32)
    schemes: tuple[str, ...] = SCHEMES
    n_items: int = 4000  # FedMF: n_params = n_items * latent_dim
    latent_dim: int = 5
    rounds: int = 5  # measured rounds per cell
    warmup_rounds: int = 1  # discarded first (round 1 also waits for every edge to start)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    modulus_bits: int = 2048
    table_memory_mb: float = 48.0  # per edge: all ~290 fixed-base tables of 20,000 params (~41 MB)
    users_per_client: int = 6
    cell_timeout_s: float = 600.0
    seed: int = 0
    keep_dir: Path | None = None  # keep every process's log and state here (debugging)

    def __post_init__(self) -> None:
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown:
            raise E2EBenchError(f"unknown schemes {unknown}; choose from {list(SCHEMES)}")
        if not self.n_clients or min(self.n_clients) < MIN_ONLINE:
            raise E2EBenchError(f"every cell needs at least {MIN_ONLINE} edge clients")
        if self.rounds < 1 or self.warmup_rounds < 1:
            # the last warm-up round's completion is where the first measured round starts
            raise E2EBenchError("rounds and warmup_rounds must be >= 1")

    @property
    def n_params(self) -> int:
        return self.n_items * self.latent_dim

    @classmethod
    def quick(cls) -> E2EBenchConfig:
        """3 clients, 2,000 parameters, 2 measured rounds: a smoke run of a minute or so."""
        return cls(n_clients=(3,), n_items=400, rounds=2, table_memory_mb=8.0, cell_timeout_s=300.0)


# -- measurement -------------------------------------------------------------------------------------


@dataclass
class _RoundMark:
    round: int
    members: int
    seconds: float | None  # from the aggregator's metrics or clock (None: use the log stamps)
    stamp: float | None  # the aggregator's log timestamp of the completion (epoch seconds)
    published: int
    delivered: int


def _scrape_round_histogram(port: int) -> tuple[float, float] | None:
    """(sum, count) of the aggregator's round-duration histogram, or None without /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = count = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != _ROUND_METRIC:
            continue
        for sample in family.samples:
            if sample.labels.get("service", "aggregator") != "aggregator":
                continue
            if sample.name.endswith("_sum"):
                total, found = total + sample.value, True
            elif sample.name.endswith("_count"):
                count += sample.value
    return (total, count) if found else None


def _summarize(
    scheme: str, config: E2EBenchConfig, n_clients: int, marks: Sequence[_RoundMark], source: str
) -> dict[str, Any]:
    """Drop the warm-up rounds; per-round latency and bytes between consecutive completions."""
    measured = list(zip(marks[config.warmup_rounds - 1 :], marks[config.warmup_rounds :], strict=False))
    seconds, published, delivered = [], [], []
    for before, after in measured:
        if after.seconds is not None:
            seconds.append(after.seconds)
        elif after.stamp is not None and before.stamp is not None:
            seconds.append(after.stamp - before.stamp)
        published.append(after.published - before.published)
        delivered.append(after.delivered - before.delivered)
        if after.members != n_clients:
            raise E2EBenchError(f"round {after.round} had {after.members} members, expected {n_clients}")
    if not seconds:
        raise E2EBenchError(f"{scheme}: no round latency could be measured")
    return {
        "scheme": scheme,
        "n_clients": n_clients,
        "n_params": config.n_params,
        "rounds": len(seconds),
        "round_p50_s": float(np.percentile(seconds, 50)),
        "round_p95_s": float(np.percentile(seconds, 95)),
        "round_mean_s": float(np.mean(seconds)),
        "round_seconds": [round(s, 6) for s in seconds],
        "latency_source": source,
        "bytes_per_round": float(np.mean(published) + np.mean(delivered)),
        "published_bytes_per_round": float(np.mean(published)),
        "delivered_bytes_per_round": float(np.mean(delivered)),
    }


# -- the fedcast cell ------------------------------------------------------------------------------


def _fedcast_cli() -> list[str]:
    return [sys.executable, "-m", "fedcast.cli"]


def _min_online_env(n_clients: int) -> dict[str, str]:
    """FEDCAST_MIN_ONLINE for the key service and the edges: their default (3) unless N is smaller.

    The clients' minimum |S| is a security setting (it bounds the collusion they tolerate),
    so it is lowered only where the cell could not run otherwise, and then to N.
    """
    return {"FEDCAST_MIN_ONLINE": str(n_clients)} if n_clients < DEFAULT_MIN_ONLINE else {}


def _task_env(config: E2EBenchConfig) -> dict[str, str]:
    return {
        "FEDCAST_TASK": "fedmf",
        "FEDCAST_TASK_N_ITEMS": str(config.n_items),
        "FEDCAST_TASK_LATENT_DIM": str(config.latent_dim),
        "FEDCAST_TASK_SEED": str(config.seed),
    }


async def _fedcast_cell(
    config: E2EBenchConfig, n_clients: int, cell: Cell, relay: CountingRelay, url: str, say: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    total_rounds = config.warmup_rounds + config.rounds
    ids = [f"edge-{i:03d}" for i in range(n_clients)]
    cell.endpoints += ["keyserver", "aggregator", *[f"client.{cid}" for cid in ids]]
    common = {
        **base_env(),
        "FEDCAST_FEDERATION": cell.federation,
        "FEDCAST_AMQP_URL": url,
        "FEDCAST_METRICS_PORT": "0",  # no /metrics endpoint (N processes would share port 9100) ...
        "FEDCAST_METRICS_HOST": "127.0.0.1",
    }
    aggregator_token = secrets.token_urlsafe(32)
    ks_env = {
        **common,
        "FEDCAST_STATE_DIR": str(cell.root / "keyserver"),
        "FEDCAST_MODULUS_BITS": str(config.modulus_bits),
        "FEDCAST_AGGREGATOR_TOKEN": aggregator_token,
        "FEDCAST_LOG_LEVEL": "INFO",
        **_min_online_env(n_clients),
    }
    say(f"fedcast N={n_clients}: key service ({config.modulus_bits}-bit RSA modulus)")
    keyserver = await cell.spawn("keyserver", [*_fedcast_cli(), "keyserver"], ks_env)
    verify_file = cell.root / "keyserver" / "verify-key.json"
    deadline = time.monotonic() + 60
    while not verify_file.exists():
        if keyserver.process.returncode is not None or time.monotonic() > deadline:
            raise E2EBenchError(f"the key service did not start:\n{tail_log(keyserver.log_path)}")
        await asyncio.sleep(0.2)
    verify_key = await run_cli([*_fedcast_cli(), "keyserver", "verify-key"], ks_env)
    say(f"fedcast N={n_clients}: provisioning {n_clients} devices (fedcast keyserver add-device)")
    gate = asyncio.Semaphore(2)

    async def provision(cid: str) -> str:
        async with gate:
            return await run_cli([*_fedcast_cli(), "keyserver", "add-device", cid], ks_env)

    tokens = dict(zip(ids, await asyncio.gather(*(provision(c) for c in ids)), strict=True))
    metrics_port = free_port()
    agg_env = {
        **common,
        **_task_env(config),
        "FEDCAST_STATE_DIR": str(cell.root / "aggregator"),
        "FEDCAST_AGGREGATOR_TOKEN": aggregator_token,
        "FEDCAST_KEYSERVER_VERIFY_KEY": verify_key,
        "FEDCAST_MIN_ONLINE": str(n_clients),  # every round has all N members
        "FEDCAST_EXPECTED_CLIENTS": str(n_clients),  # ... and starts as soon as all are ready
        "FEDCAST_READY_WINDOW_S": "5",  # re-announce every 5 s while edges are still starting
        "FEDCAST_UPLOAD_TIMEOUT_S": str(config.cell_timeout_s),
        "FEDCAST_RESPONSE_TIMEOUT_S": str(config.cell_timeout_s),
        "FEDCAST_ROUNDS": str(total_rounds + 1),  # still serving /metrics when the last one is read
        "FEDCAST_METRICS_PORT": str(metrics_port),  # ... except the aggregator's, scraped per round
        "FEDCAST_LOG_LEVEL": "INFO",
    }
    say(f"fedcast N={n_clients}: aggregator and {n_clients} edge processes")
    aggregator = await cell.spawn("aggregator", [*_fedcast_cli(), "aggregator"], agg_env, pipe="stderr")
    edges = []
    for i, cid in enumerate(ids):
        edge_env = {
            **common,
            **_task_env(config),
            "FEDCAST_CLIENT_ID": cid,
            "FEDCAST_STATE_DIR": str(cell.root / cid),
            "FEDCAST_KEYSERVER_VERIFY_KEY": verify_key,
            "FEDCAST_ENROLLMENT_TOKEN": tokens[cid],
            "FEDCAST_SYNTHETIC_SHARD": str(i),
            "FEDCAST_SYNTHETIC_SHARDS": str(n_clients),
            "FEDCAST_SYNTHETIC_USERS_PER_CLIENT": str(config.users_per_client),
            "FEDCAST_DATA_SEED": str(config.seed),
            "FEDCAST_TABLE_MEMORY_MB": str(config.table_memory_mb),
            "FEDCAST_LOG_LEVEL": "WARNING",
            **_min_online_env(n_clients),
        }
        edges.append(await cell.spawn(cid, [*_fedcast_cli(), "edge"], edge_env))
    setup_s = time.perf_counter() - started
    marks: list[_RoundMark] = []
    last_histogram = (0.0, 0.0)
    enough = asyncio.Event()
    log_file = cell.root / "logs" / "aggregator.log"

    async def read_rounds() -> None:
        """Follow the aggregator's log until it exits (never leave its pipe full)."""
        nonlocal last_histogram
        assert aggregator.process.stderr is not None
        with log_file.open("ab") as log:
            while line := await aggregator.process.stderr.readline():
                log.write(line)
                log.flush()
                text = line.decode(errors="replace")
                match = _COMPLETE.search(text)
                if match is None or enough.is_set():
                    continue
                published, delivered = relay.snapshot()
                stamp_match = _STAMP.match(text)
                stamp = (
                    datetime.strptime(stamp_match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    if stamp_match
                    else None
                )
                seconds = None
                histogram = await asyncio.to_thread(_scrape_round_histogram, metrics_port)
                if histogram is not None:
                    if histogram[1] - last_histogram[1] == 1:  # else: this round from the log stamps
                        seconds = histogram[0] - last_histogram[0]
                    last_histogram = histogram
                round_id, members = int(match.group(1)), int(match.group(2))
                marks.append(_RoundMark(round_id, members, seconds, stamp, published, delivered))
                say(f"fedcast N={n_clients}: round {round_id} complete ({members} members)")
                if len(marks) >= total_rounds:
                    enough.set()
        if not enough.is_set():
            raise E2EBenchError(f"the aggregator exited after {len(marks)} rounds:\n{tail_log(log_file)}")

    reader = asyncio.ensure_future(read_rounds())
    cell.tasks.append(reader)  # follows the log until the aggregator is stopped
    watcher = asyncio.ensure_future(watch_children([keyserver, *edges]))
    waiter = asyncio.ensure_future(enough.wait())
    try:
        async with asyncio.timeout(config.cell_timeout_s):
            done, _ = await asyncio.wait({reader, watcher, waiter}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the failure
            rss = peak_rss_mb(edges)
    except TimeoutError:
        raise E2EBenchError(
            f"fedcast N={n_clients}: timed out after {config.cell_timeout_s:.0f} s with {len(marks)} "
            f"rounds; last lines of the aggregator log:\n{tail_log(log_file)}"
        ) from None
    finally:
        watcher.cancel()
        waiter.cancel()
        await asyncio.gather(watcher, waiter, return_exceptions=True)
    scraped = sum(m.seconds is not None for m in marks[config.warmup_rounds :])
    source = {0: "aggregator log stamps", config.rounds: "aggregator /metrics"}.get(
        scraped, f"aggregator /metrics ({scraped}), log stamps ({config.rounds - scraped})"
    )
    row = _summarize("fedcast", config, n_clients, marks, source)
    row.update(
        federation=cell.federation,
        setup_s=setup_s,
        cell_s=time.perf_counter() - started,
        edge_peak_rss_mb=rss,
    )
    return row


# -- the plaintext cell (its processes: fedcast.bench.e2e_plaintext) ------------------------


async def _plaintext_cell(
    config: E2EBenchConfig, n_clients: int, cell: Cell, relay: CountingRelay, url: str, say: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    total_rounds = config.warmup_rounds + config.rounds
    ids = [f"edge-{i:03d}" for i in range(n_clients)]
    cell.endpoints += ["aggregator", *[f"client.{cid}" for cid in ids]]
    runner = [sys.executable, "-m", "fedcast.bench.e2e_plaintext"]
    shared_args = [
        "--amqp",
        url,
        "--federation",
        cell.federation,
        "--clients",
        str(n_clients),
        "--n-items",
        str(config.n_items),
        "--latent-dim",
        str(config.latent_dim),
        "--users-per-client",
        str(config.users_per_client),
        "--seed",
        str(config.seed),
    ]
    env = base_env()
    say(f"plaintext N={n_clients}: aggregator and {n_clients} edge processes")
    aggregator = await cell.spawn(
        "aggregator",
        [*runner, "plaintext-aggregator", *shared_args, "--rounds", str(total_rounds)],
        env,
        pipe="stdout",
    )
    edges = [
        await cell.spawn(
            cid, [*runner, "plaintext-edge", *shared_args, "--client-id", cid, "--shard", str(i)], env
        )
        for i, cid in enumerate(ids)
    ]
    setup_s = time.perf_counter() - started
    marks: list[_RoundMark] = []

    async def read_rounds() -> None:
        assert aggregator.process.stdout is not None
        while len(marks) < total_rounds:
            line = await aggregator.process.stdout.readline()
            if not line:
                raise E2EBenchError(f"the plaintext aggregator exited:\n{tail_log(aggregator.log_path)}")
            published, delivered = relay.snapshot()
            record = json.loads(line)
            marks.append(
                _RoundMark(record["round"], record["members"], record["seconds"], None, published, delivered)
            )
            say(f"plaintext N={n_clients}: round {record['round']} complete")

    reader = asyncio.ensure_future(read_rounds())
    watcher = asyncio.ensure_future(watch_children(edges))
    try:
        async with asyncio.timeout(config.cell_timeout_s):
            done, _ = await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            rss = peak_rss_mb(edges)
            await asyncio.wait_for(aggregator.process.wait(), timeout=60)
    except TimeoutError:
        raise E2EBenchError(
            f"plaintext N={n_clients}: timed out after {config.cell_timeout_s:.0f} s with {len(marks)} rounds"
        ) from None
    finally:
        watcher.cancel()
        reader.cancel()
        await asyncio.gather(watcher, reader, return_exceptions=True)
    row = _summarize("plaintext", config, n_clients, marks, "runner aggregator clock")
    row.update(
        federation=cell.federation,
        setup_s=setup_s,
        cell_s=time.perf_counter() - started,
        edge_peak_rss_mb=rss,
    )
    return row


# -- the bench ----------------------------------------------------------------------------------------


async def _run_cell(config: E2EBenchConfig, scheme: str, n_clients: int, say: Any) -> dict[str, Any]:
    federation = f"bench-{scheme[:5]}-{n_clients}-{uuid.uuid4().hex[:8]}"
    if config.keep_dir is not None:
        root = config.keep_dir / federation
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix=f"fedcast-{federation}-"))
    cell = Cell(root, federation)
    broker = urlsplit(config.amqp_url)
    relay = CountingRelay(broker.hostname or "127.0.0.1", broker.port or 5672)
    url = proxied(config.amqp_url, await relay.start())
    try:
        if scheme == "fedcast":
            return await _fedcast_cell(config, n_clients, cell, relay, url, say)
        return await _plaintext_cell(config, n_clients, cell, relay, url, say)
    finally:
        # Shielded: a Ctrl-C while cleaning up must not leave processes or queues behind.
        await asyncio.shield(_cleanup(cell, relay, config))


async def _cleanup(cell: Cell, relay: CountingRelay, config: E2EBenchConfig) -> None:
    await cell.stop()
    await relay.close()
    await delete_topology(config.amqp_url, cell.federation, cell.endpoints)
    if config.keep_dir is None:
        shutil.rmtree(cell.root, ignore_errors=True)


async def _run_all(config: E2EBenchConfig, say: Any) -> list[dict[str, Any]]:
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM stops the bench like Ctrl-C: cancel, then clean up
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    rows: list[dict[str, Any]] = []
    for n_clients in config.n_clients:
        by_scheme: dict[str, dict[str, Any]] = {}
        for scheme in config.schemes:
            by_scheme[scheme] = row = await _run_cell(config, scheme, n_clients, say)
            rows.append(row)
        plain = by_scheme.get("plaintext")
        for row in by_scheme.values():
            if plain is not None and plain["round_p50_s"] > 0 and plain["bytes_per_round"] > 0:
                row["latency_ratio_p50"] = row["round_p50_s"] / plain["round_p50_s"]
                row["bytes_ratio"] = row["bytes_per_round"] / plain["bytes_per_round"]
            else:
                row["latency_ratio_p50"] = row["bytes_ratio"] = None
    return rows


def run_e2e_bench(
    config: E2EBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Run every (N, scheme) cell over the broker; one row per cell (see the module docstring)."""
    say = progress or (lambda message: None)
    try:
        return asyncio.run(_run_all(config, say))
    except asyncio.CancelledError:  # SIGTERM (Ctrl-C raises KeyboardInterrupt itself)
        raise KeyboardInterrupt from None


def notes(config: E2EBenchConfig) -> Sequence[str]:
    """Footnotes printed under the table: what each scheme does, and how it was measured."""
    lines = [
        f"FedMF, {config.n_items:,} items x {config.latent_dim} = {config.n_params:,} parameters; "
        f"{config.rounds} measured rounds after {config.warmup_rounds} warm-up; every party its own "
        f"process, one broker ({urlsplit(config.amqp_url).netloc.rpartition('@')[2]})",
        f"fedcast: keyserver + aggregator + N edges (fedcast CLI), protocol v2 on an RSA modulus "
        f"|N|={config.modulus_bits} (FEDCAST_MODULUS_BITS), FEDCAST_TABLE_MEMORY_MB="
        f"{config.table_memory_mb:g} per edge; full protocol per round (proofs included)",
        "plaintext: N edges + 1 aggregator over AmqpTransport, announce(float32 model) -> float32 upload "
        "-> sum -> result; no signatures, key service, ready phase, sealed model, challenge or checkpoint",
        "latency: aggregator round start to completion, p50/p95 (linear interpolation) over measured "
        "rounds; B/round: all bytes between processes and the broker, both directions (TCP relay)",
    ]
    small = sorted(n for n in config.n_clients if n < DEFAULT_MIN_ONLINE)
    if small and "fedcast" in config.schemes:
        lines.append(
            f"N={', '.join(map(str, small))}: below the clients' default minimum online set "
            f"({DEFAULT_MIN_ONLINE}), so FEDCAST_MIN_ONLINE=N on the key service and the edges"
        )
    return lines
