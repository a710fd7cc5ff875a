"""``fedcast bench simulate``: seconds per round of a whole federation in one process tree.

Runs :class:`fedcast.simulate.ProtocolSum` (the real protocol: state machines, wire messages,
signatures, ledgers, sealed models, every client's checks; clients in worker processes) and,
with ``--baseline``, :class:`fedcast.shared.schemes.ElGamalSum` (the crypto alone, one core) on
the same vectors: ``--clients`` clients (one user each) of ``--params`` values each (default
943 x 8,410: MovieLens-100K's users and 1,682 items x d = 5). The first round of each scheme
includes its one-off set-up (tables, keys) and is reported apart (``setup_s``); every row is one
measured round. Each row records the load average when the round started: the machine may be
shared, so run it more than once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum
from fedcast.shared.secure_sum import FloatArray
from fedcast.simulate import ProtocolSum

__all__ = ["TABLE_COLUMNS", "SimulateBenchConfig", "run_simulate_bench", "simulate_notes"]

TABLE_COLUMNS = (
    ("scheme", "scheme"),
    ("clients", "clients"),
    ("params", "params"),
    ("workers", "workers"),
    ("round", "round"),
    ("round_s", "round s"),
    ("upload_phase_s", "to uploads s"),
    ("response_phase_s", "challenge->responses s"),
    ("decrypt_s", "decrypt s"),
    ("client_upload_ms", "client upload ms"),
    ("client_respond_ms", "client respond ms"),
    ("busiest_worker_cpu_s", "busiest worker cpu s"),
    ("main_cpu_s", "main cpu s"),
    ("load", "load avg"),
)


@dataclass(frozen=True)
class SimulateBenchConfig:
    clients: int = 943
    params: int = 8410
    rounds: int = 3
    workers: int | None = None
    modulus_bits: int = DEFAULT_MODULUS_BITS
    baseline: bool = False
    insecure_test_group: bool = False
    seed: int = 0


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _vectors(config: SimulateBenchConfig, rng: np.random.Generator) -> list[FloatArray]:
    # FedMF-like item gradients: small, mostly zero (a user rates few items), a few large entries.
    out = []
    for _ in range(config.clients):
        v = np.zeros(config.params)
        rated = rng.choice(config.params, size=min(config.params, 100), replace=False)
        v[rated] = rng.normal(0.0, 0.5, rated.size)
        out.append(v)
    return out


def _protocol_rows(
    config: SimulateBenchConfig, params: SystemParams, rounds: Sequence[list[FloatArray]], progress: Any
) -> list[dict[str, Any]]:
    rows = []
    start = time.perf_counter()
    with ProtocolSum(params, n_clients=config.clients, workers=config.workers, seed=config.seed) as secure:
        started = time.perf_counter() - start
        for r, vectors in enumerate(rounds):
            load = _load()
            progress(f"protocol round {r + 1}/{len(rounds)} (load {load})")
            total = secure.sum(vectors)
            error = float(np.max(np.abs(total - np.sum(vectors, axis=0))))
            t, stats = secure.last_timing, secure.last_round
            phases = dict(t.phases)
            setup = phases.pop("setup", 0.0)
            rows.append(
                {
                    "scheme": "protocol",
                    "clients": config.clients,
                    "params": config.params,
                    "workers": secure.workers,
                    "round": r + 1,
                    "round_s": t.total - setup,
                    "setup_s": setup + (started if r == 0 else 0.0),
                    "upload_phase_s": phases.get("uploads_done", 0.0),
                    "response_phase_s": phases.get("challenge_to_last_response", 0.0),
                    "decrypt_s": phases.get("decrypt", 0.0),
                    "main_phases_s": phases,
                    "client_cpu_s": dict(t.worker_seconds),
                    "worker_cpu_s": list(t.worker_cpu),
                    "main_cpu_s": t.main_cpu,
                    "client_upload_ms": 1e3 * float(np.mean(stats.client_seconds)),
                    "client_respond_ms": 1e3 * float(np.mean(stats.respond_seconds)),
                    "aggregate_s": stats.aggregate_seconds,
                    "busiest_worker_cpu_s": max(t.worker_cpu, default=0.0),
                    "attempts": t.attempts,
                    "refusals": len(t.refusals),
                    "clipped": stats.clipped_values,
                    "max_abs_error": error,
                    "load": load,
                }
            )
    return rows


def _baseline_rows(
    config: SimulateBenchConfig, params: SystemParams, rounds: Sequence[list[FloatArray]], progress: Any
) -> list[dict[str, Any]]:
    rows = []
    scheme = ElGamalSum(params, seed=config.seed)
    start = time.perf_counter()
    scheme.sum(rounds[0][:2])  # tables and the first keys: set-up, not a round
    setup = time.perf_counter() - start
    for r, vectors in enumerate(rounds):
        load = _load()
        progress(f"elgamal round {r + 1}/{len(rounds)} (load {load})")
        start = time.perf_counter()
        scheme.sum(vectors)
        stats = scheme.last_round
        rows.append(
            {
                "scheme": "elgamal",
                "clients": config.clients,
                "params": config.params,
                "workers": 1,
                "round": r + 1,
                "round_s": time.perf_counter() - start,
                "setup_s": setup if r == 0 else 0.0,
                "upload_phase_s": float(sum(stats.client_seconds)),
                "response_phase_s": float(sum(stats.respond_seconds)),
                "decrypt_s": stats.decrypt_seconds,
                "client_upload_ms": 1e3 * float(np.mean(stats.client_seconds)),
                "client_respond_ms": 1e3 * float(np.mean(stats.respond_seconds)),
                "aggregate_s": stats.aggregate_seconds,
                "clipped": stats.clipped_values,
                "load": load,
            }
        )
    return rows


def run_simulate_bench(
    config: SimulateBenchConfig, progress: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """Rows: one per measured round and scheme."""
    group = insecure_test_group(512) if config.insecure_test_group else generate_group(config.modulus_bits)
    params = SystemParams(group, FixedPointEncoding(), max_clients=max(2, config.clients))
    rng = np.random.default_rng(config.seed)
    rounds = [_vectors(config, rng) for _ in range(config.rounds)]
    rows = _protocol_rows(config, params, rounds, progress)
    if config.baseline:
        rows += _baseline_rows(config, params, rounds, progress)
    return rows


def simulate_notes(config: SimulateBenchConfig, rows: Sequence[dict[str, Any]]) -> list[str]:
    group = "512-bit INSECURE test modulus" if config.insecure_test_group else f"|N| = {config.modulus_bits}"
    lines = [
        f"{config.clients} clients x {config.params:,} values, {group}, default encoding (16 fraction "
        f"bits, clip 4), max_clients = {config.clients}; cores available: {os.cpu_count()}",
        "protocol: AggregatorMachine in the main process, ClientMachines in worker processes; every "
        "message through the wire codec and Ed25519; each client checks its envelope and challenge "
        "in full (element rule on every first component, proofs and signatures of its keyed sample)",
        "to uploads s: ANNOUNCE to the last upload folded; challenge->responses s: CHALLENGE sent to "
        "the last response folded; client ms: per client, mean (upload = envelope to UPLOAD, "
        "respond = CHALLENGE to RESPONSE, each in its worker), CPU seconds; busiest worker cpu s: "
        "the CPU its clients used in the round (on idle cores the round takes about that plus what "
        "the main process cannot overlap); main cpu s: the aggregator and the message pump",
        "elgamal (--baseline): the crypto alone (ElGamalSum), one core, no wire, no signatures",
    ]
    for scheme in sorted({row["scheme"] for row in rows}):
        times = [row["round_s"] for row in rows if row["scheme"] == scheme]
        lines.append(
            f"{scheme}: {min(times):.1f}-{max(times):.1f} s per round over {len(times)} rounds "
            f"(median {float(np.median(times)):.1f} s)"
        )
    return lines
