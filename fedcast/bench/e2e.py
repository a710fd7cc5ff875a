"""``fedcast bench e2e``: a whole federation over RabbitMQ, every party its own process.

Two schemes on the same broker, the same task, the same number of edge processes
and the same model size (FedMF on the seeded synthetic data; the item matrix is
``n_items x latent_dim`` = 20,000 parameters by default):

* ``fedcast``: the real services, launched as ``fedcast keyserver``, ``fedcast
  aggregator`` and N x ``fedcast edge`` subprocesses configured by ``FEDCAST_*``
  variables; devices are provisioned with ``fedcast keyserver add-device`` and the
  clients pin the key service's verify key (``fedcast keyserver verify-key``).
  A round is the full protocol: announce, ready, sealed model per member, encrypted
  upload (signed first component), challenge, response, decrypt, checkpoint, result.
* ``plaintext``: a deliberately small FedAvg-style runner in this module
  (``python -m fedcast.bench.e2e plaintext-aggregator|plaintext-edge``) over
  :class:`shared.transport.amqp.AmqpTransport` (same queues, exchanges, quorum
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

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from shared.errors import FedcastError

__all__ = [
    "JSON_KEYS",
    "SCHEMES",
    "TABLE_COLUMNS",
    "E2EBenchConfig",
    "E2EBenchError",
    "main",
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


class E2EBenchError(FedcastError):
    """A cell of the end-to-end bench failed (a process died, a timeout); the message says which."""

    reason = "bench_failed"


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
    p_bits: int = 2048
    table_memory_mb: float = 48.0  # per edge: all ~290 fixed-base tables of 20,000 params (~41 MB)
    users_per_client: int = 6
    cell_timeout_s: float = 600.0
    seed: int = 0
    keep_dir: Path | None = None  # keep every process's log and state here (debugging)

    def __post_init__(self) -> None:
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown:
            raise E2EBenchError(f"unknown schemes {unknown}; choose from {list(SCHEMES)}")
        if not self.n_clients or min(self.n_clients) < 2:
            raise E2EBenchError("every cell needs at least 2 edge clients")
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


# -- the byte counter ----------------------------------------------------------------------------


class _CountingRelay:
    """A TCP relay to the broker that counts bytes in both directions (all connections)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self.published = 0  # processes -> broker
        self.delivered = 0  # broker -> processes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def snapshot(self) -> tuple[int, int]:
        return self.published, self.delivered

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, broker_writer, up=True), self._pump(broker_reader, writer, up=False)
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if up:
                    self.published += len(data)
                else:
                    self.delivered += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- processes -------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the bench process dies (no orphans after a kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path


@dataclass
class _Cell:
    """Everything one cell started, so that it can all be stopped and removed."""

    root: Path
    federation: str
    children: list[_Child] = field(default_factory=list)
    files: list[IO[bytes]] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)  # cancelled after the children stop

    async def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, pipe: str | None = None
    ) -> _Child:
        """Start ``argv``; its output goes to ``<root>/logs/<name>.log`` except the piped stream."""
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        self.files.append(log)
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipe == "stdout" else log,
            stderr=asyncio.subprocess.PIPE if pipe == "stderr" else log,
            start_new_session=True,  # a Ctrl-C reaches the bench, which stops the children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        child = _Child(name, process, log_path)
        self.children.append(child)
        return child

    async def stop(self) -> None:
        """SIGTERM every running child (services shut down cleanly), SIGKILL after 15 s."""
        running = [c for c in self.children if c.process.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        if running:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(c.process.wait()) for c in running], timeout=15
            )
            del done
            for child in running:
                if child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for log in self.files:
            log.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


async def _watch(children: Sequence[_Child]) -> None:
    """Raise as soon as any of ``children`` exits (they should run until stopped)."""
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        child = waits[next(iter(done))]
        raise E2EBenchError(
            f"{child.name} exited early with code {child.process.returncode}; "
            f"last lines of {child.log_path}:\n{_tail(child.log_path)}"
        )
    finally:
        for task in waits:
            task.cancel()


async def _run_cli(argv: Sequence[str], env: dict[str, str]) -> str:
    """Run a short ``fedcast`` command; its stdout, or E2EBenchError with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise E2EBenchError(f"{' '.join(argv[2:])} failed: {err.decode(errors='replace').strip()}")
    return out.decode().strip()


def _base_env() -> dict[str, str]:
    """This environment without any FEDCAST_* variable (each child gets exactly its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDCAST_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _delete_topology(url: str, federation: str, endpoints: Sequence[str]) -> None:
    """Remove the federation's queues and both exchanges from the broker (best effort)."""
    import aio_pika

    try:
        connection = await aio_pika.connect(url, timeout=10)
    except Exception:
        return
    async with connection:
        for name in [f"fedcast.{federation}.{e}" for e in endpoints] + [
            f"fedcast.{federation}.broadcast",
            f"fedcast.{federation}",
        ]:
            try:
                channel = await connection.channel()
                if name.endswith(".broadcast") or name == f"fedcast.{federation}":
                    await channel.exchange_delete(name)
                else:
                    await channel.queue_delete(name)
                await channel.close()
            except Exception:  # noqa: S112 - an absent queue or exchange is fine
                continue


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


def _peak_rss_mb(children: Sequence[_Child]) -> float:
    """The largest VmHWM (peak resident set) among running ``children``, in MiB (0 if unknown)."""
    peak = 0
    for child in children:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{child.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


# -- the fedcast cell ------------------------------------------------------------------------------


def _fedcast_cli() -> list[str]:
    return [sys.executable, "-m", "fedcast.cli"]


def _task_env(config: E2EBenchConfig) -> dict[str, str]:
    return {
        "FEDCAST_TASK": "fedmf",
        "FEDCAST_TASK_N_ITEMS": str(config.n_items),
        "FEDCAST_TASK_LATENT_DIM": str(config.latent_dim),
        "FEDCAST_TASK_SEED": str(config.seed),
    }


async def _fedcast_cell(
    config: E2EBenchConfig, n_clients: int, cell: _Cell, relay: _CountingRelay, url: str, say: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    total_rounds = config.warmup_rounds + config.rounds
    ids = [f"edge-{i:03d}" for i in range(n_clients)]
    cell.endpoints += ["keyserver", "aggregator", *[f"client.{cid}" for cid in ids]]
    common = {
        **_base_env(),
        "FEDCAST_FEDERATION": cell.federation,
        "FEDCAST_AMQP_URL": url,
        "FEDCAST_METRICS_PORT": "0",  # no /metrics endpoint (N processes would share port 9100) ...
        "FEDCAST_METRICS_HOST": "127.0.0.1",
    }
    aggregator_token = secrets.token_urlsafe(32)
    ks_env = {
        **common,
        "FEDCAST_STATE_DIR": str(cell.root / "keyserver"),
        "FEDCAST_P_BITS": str(config.p_bits),
        "FEDCAST_AGGREGATOR_TOKEN": aggregator_token,
        "FEDCAST_LOG_LEVEL": "INFO",
    }
    say(f"fedcast N={n_clients}: key service ({config.p_bits}-bit group)")
    keyserver = await cell.spawn("keyserver", [*_fedcast_cli(), "keyserver"], ks_env)
    verify_file = cell.root / "keyserver" / "verify-key.json"
    deadline = time.monotonic() + 60
    while not verify_file.exists():
        if keyserver.process.returncode is not None or time.monotonic() > deadline:
            raise E2EBenchError(f"the key service did not start:\n{_tail(keyserver.log_path)}")
        await asyncio.sleep(0.2)
    verify_key = await _run_cli([*_fedcast_cli(), "keyserver", "verify-key"], ks_env)
    say(f"fedcast N={n_clients}: provisioning {n_clients} devices (fedcast keyserver add-device)")
    gate = asyncio.Semaphore(2)

    async def provision(cid: str) -> str:
        async with gate:
            return await _run_cli([*_fedcast_cli(), "keyserver", "add-device", cid], ks_env)

    tokens = dict(zip(ids, await asyncio.gather(*(provision(c) for c in ids)), strict=True))
    metrics_port = _free_port()
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
            raise E2EBenchError(f"the aggregator exited after {len(marks)} rounds:\n{_tail(log_file)}")

    reader = asyncio.ensure_future(read_rounds())
    cell.tasks.append(reader)  # follows the log until the aggregator is stopped
    watcher = asyncio.ensure_future(_watch([keyserver, *edges]))
    waiter = asyncio.ensure_future(enough.wait())
    try:
        async with asyncio.timeout(config.cell_timeout_s):
            done, _ = await asyncio.wait({reader, watcher, waiter}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the failure
            rss = _peak_rss_mb(edges)
    except TimeoutError:
        raise E2EBenchError(
            f"fedcast N={n_clients}: timed out after {config.cell_timeout_s:.0f} s with {len(marks)} "
            f"rounds; last lines of the aggregator log:\n{_tail(log_file)}"
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


# -- the plaintext cell and its runner ---------------------------------------------------------------

_HELLO, _ANNOUNCE, _UPLOAD, _RESULT = range(1, 5)
_HEADER = struct.Struct(">4sBIB")  # magic, type, round, sender length; then sender, then payload
_MAGIC = b"FCPT"


def _encode(kind: int, round_id: int, sender: str, payload: bytes = b"") -> bytes:
    name = sender.encode()
    return _HEADER.pack(_MAGIC, kind, round_id, len(name)) + name + payload


def _decode(data: bytes) -> tuple[int, int, str, bytes]:
    magic, kind, round_id, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise E2EBenchError("not a plaintext-runner message")
    start = _HEADER.size
    return kind, round_id, data[start : start + length].decode(), data[start + length :]


async def _plaintext_cell(
    config: E2EBenchConfig, n_clients: int, cell: _Cell, relay: _CountingRelay, url: str, say: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    total_rounds = config.warmup_rounds + config.rounds
    ids = [f"edge-{i:03d}" for i in range(n_clients)]
    cell.endpoints += ["aggregator", *[f"client.{cid}" for cid in ids]]
    runner = [sys.executable, "-m", "fedcast.bench.e2e"]
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
    env = _base_env()
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
                raise E2EBenchError(f"the plaintext aggregator exited:\n{_tail(aggregator.log_path)}")
            published, delivered = relay.snapshot()
            record = json.loads(line)
            marks.append(
                _RoundMark(record["round"], record["members"], record["seconds"], None, published, delivered)
            )
            say(f"plaintext N={n_clients}: round {record['round']} complete")

    reader = asyncio.ensure_future(read_rounds())
    watcher = asyncio.ensure_future(_watch(edges))
    try:
        async with asyncio.timeout(config.cell_timeout_s):
            done, _ = await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            rss = _peak_rss_mb(edges)
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


def _runner_spec(args: argparse.Namespace) -> Any:
    from shared.learning.tasks import TaskSpec

    return TaskSpec(name="fedmf", n_items=args.n_items, latent_dim=args.latent_dim, seed=args.seed)


async def _runner_aggregator(args: argparse.Namespace) -> None:
    """Announce (with the float32 model) -> N float32 uploads -> sum, apply -> result; repeat."""
    from shared.learning.tasks import FedMFServerTask
    from shared.transport.amqp import AmqpTransport
    from shared.transport.base import AGGREGATOR, Delivery

    server = FedMFServerTask(_runner_spec(args))
    model = server.initial_model()
    transport = AmqpTransport(args.amqp, args.federation, connection_name="fedcast-bench-aggregator")
    await transport.connect()
    hello: set[str] = set()
    uploads: dict[str, np.ndarray] = {}
    current = 0
    wake = asyncio.Event()

    async def on_delivery(delivery: Delivery) -> None:
        kind, round_id, sender, payload = _decode(delivery.body)
        if kind == _HELLO:
            hello.add(sender)
        elif kind == _UPLOAD and round_id == current:
            uploads[sender] = np.frombuffer(payload, dtype="<f4")
        wake.set()

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await wake.wait()
            wake.clear()

    try:
        await transport.consume(AGGREGATOR, on_delivery)
        await until(lambda: len(hello) >= args.clients)
        for round_id in range(1, args.rounds + 1):
            current = round_id
            start = time.monotonic()
            await transport.broadcast(
                _encode(_ANNOUNCE, round_id, "aggregator", model.astype("<f4").tobytes())
            )
            await until(lambda: len(uploads) >= args.clients)
            total = np.sum([u.astype(np.float64) for u in uploads.values()], axis=0)
            model = server.apply(model, total, len(uploads))
            seconds = time.monotonic() - start
            members = len(uploads)
            uploads.clear()
            await transport.broadcast(_encode(_RESULT, round_id, "aggregator"))
            print(json.dumps({"round": round_id, "members": members, "seconds": seconds}), flush=True)
    finally:
        await transport.close()


async def _runner_edge(args: argparse.Namespace) -> None:
    """Train the FedMF client task on each announced model; send the float32 update."""
    from services.edge_client.data import DataSource, client_task
    from services.runtime import install_stop_signals
    from shared.transport.amqp import AmqpTransport
    from shared.transport.base import AGGREGATOR, Delivery, client_endpoint

    source = DataSource(
        shard=args.shard, n_shards=args.clients, users_per_client=args.users_per_client, seed=args.seed
    )
    task = await asyncio.to_thread(client_task, _runner_spec(args), source)
    transport = AmqpTransport(args.amqp, args.federation, connection_name=f"fedcast-bench-{args.client_id}")
    await transport.connect()
    stop = asyncio.Event()
    install_stop_signals(stop)
    lock = asyncio.Lock()
    pending: dict[int, Any] = {}

    async def on_delivery(delivery: Delivery) -> None:
        kind, round_id, _, payload = _decode(delivery.body)
        async with lock:
            if kind == _ANNOUNCE:
                model = np.frombuffer(payload, dtype="<f4").astype(np.float64)
                update = await asyncio.to_thread(task.local_update, model)
                pending[round_id] = update.pending
                body = np.asarray(update.vector, dtype="<f4").tobytes()
                await transport.send(AGGREGATOR, _encode(_UPLOAD, round_id, args.client_id, body))
            elif kind == _RESULT and round_id in pending:
                task.commit(pending.pop(round_id))

    try:
        await transport.consume(client_endpoint(args.client_id), on_delivery, broadcast=True, prefetch=4)
        await transport.send(AGGREGATOR, _encode(_HELLO, 0, args.client_id))
        await stop.wait()
    finally:
        await transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedcast.bench.e2e plaintext-aggregator|plaintext-edge ...``: the plaintext runner."""
    parser = argparse.ArgumentParser(prog="python -m fedcast.bench.e2e")
    parser.add_argument("role", choices=("plaintext-aggregator", "plaintext-edge"))
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--federation", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--n-items", type=int, required=True)
    parser.add_argument("--latent-dim", type=int, required=True)
    parser.add_argument("--users-per-client", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client-id", default="")
    parser.add_argument("--shard", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_runner_aggregator(args) if args.role == "plaintext-aggregator" else _runner_edge(args))
    return 0


# -- the bench ----------------------------------------------------------------------------------------


async def _run_cell(config: E2EBenchConfig, scheme: str, n_clients: int, say: Any) -> dict[str, Any]:
    federation = f"bench-{scheme[:5]}-{n_clients}-{uuid.uuid4().hex[:8]}"
    if config.keep_dir is not None:
        root = config.keep_dir / federation
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix=f"fedcast-{federation}-"))
    cell = _Cell(root, federation)
    broker = urlsplit(config.amqp_url)
    relay = _CountingRelay(broker.hostname or "127.0.0.1", broker.port or 5672)
    url = _proxied(config.amqp_url, await relay.start())
    try:
        if scheme == "fedcast":
            return await _fedcast_cell(config, n_clients, cell, relay, url, say)
        return await _plaintext_cell(config, n_clients, cell, relay, url, say)
    finally:
        # Shielded: a Ctrl-C while cleaning up must not leave processes or queues behind.
        await asyncio.shield(_cleanup(cell, relay, config))


async def _cleanup(cell: _Cell, relay: _CountingRelay, config: E2EBenchConfig) -> None:
    await cell.stop()
    await relay.close()
    await _delete_topology(config.amqp_url, cell.federation, cell.endpoints)
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
    return [
        f"FedMF, {config.n_items:,} items x {config.latent_dim} = {config.n_params:,} parameters; "
        f"{config.rounds} measured rounds after {config.warmup_rounds} warm-up; every party its own "
        f"process, one broker ({urlsplit(config.amqp_url).netloc.rpartition('@')[2]})",
        f"fedcast: keyserver + aggregator + N edges (fedcast CLI), |p|={config.p_bits}, "
        f"FEDCAST_TABLE_MEMORY_MB={config.table_memory_mb:g} per edge; full protocol per round",
        "plaintext: N edges + 1 aggregator over AmqpTransport, announce(float32 model) -> float32 upload "
        "-> sum -> result; no signatures, key service, ready phase, sealed model, challenge or checkpoint",
        "latency: aggregator round start to completion, p50/p95 (linear interpolation) over measured "
        "rounds; B/round: all bytes between processes and the broker, both directions (TCP relay)",
    ]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
