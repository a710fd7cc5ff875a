"""``fedcast bench crypto``: client encryption, wire size, aggregation and decryption costs.

Every cell runs the real code paths on a real RSA modulus (2048-bit by default):
N clients each encode, pack and encrypt their own random vector for the same
online set (with the key segment and the proof of knowledge of r2); the
aggregator validates and folds every upload, issues the challenge, folds the N
responses (each client checks the first components and its keyed sample of the
proofs first, and proves its share), decrypts, unpacks and decodes. Nothing is extrapolated for ElGamal or
plaintext. Paillier (one 2048-bit ciphertext per value) is far too slow to run
at these sizes, so it is measured on a subset of values and scaled linearly,
and says so (``extrapolated``).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcast.shared.crypto.elgamal import DEFAULT_TABLE_MEMORY_BYTES
from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS
from fedcast.shared.crypto.modulus import generate_group
from fedcast.shared.crypto.paillier import DEFAULT_PAILLIER_BITS, PaillierKeys
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.params import SystemParams
from fedcast.shared.schemes import ElGamalSum
from fedcast.shared.secure_sum import PlaintextSum, SecureSum

__all__ = [
    "JSON_KEYS",
    "TABLE_COLUMNS",
    "CryptoBenchConfig",
    "machine_description",
    "notes",
    "run_crypto_bench",
]

#: The keys of one JSON row (``--json``), in order; the table shows more.
JSON_KEYS = (
    "scheme",
    "n_params",
    "n_clients",
    "client_encrypt_s",
    "client_params_per_s",
    "bytes_per_param",
    "ratio_to_float32",
    "aggregate_s",
    "decrypt_s",
    "extrapolated",
)

TABLE_COLUMNS = [
    ("scheme", "scheme"),
    ("n_params", "params"),
    ("n_clients", "clients"),
    ("client_encrypt_s", "client enc s"),
    ("client_params_per_s", "params/s"),
    ("client_respond_s", "respond s"),
    ("bytes_per_param", "B/param"),
    ("ratio_to_float32", "x float32"),
    ("aggregate_s", "aggregate s"),
    ("decrypt_s", "decrypt s"),
    ("extrapolated", "extrapolated"),
]


@dataclass(frozen=True)
class CryptoBenchConfig:
    n_params: tuple[int, ...] = (10_000, 100_000)
    n_clients: tuple[int, ...] = (10, 100)
    modulus_bits: int = DEFAULT_MODULUS_BITS
    paillier_bits: int = DEFAULT_PAILLIER_BITS
    paillier_sample: int = 40  # values actually encrypted with Paillier per measurement
    table_memory_bytes: int = DEFAULT_TABLE_MEMORY_BYTES
    seed: int = 0

    @classmethod
    def quick(cls) -> CryptoBenchConfig:
        return cls(n_params=(10_000,), n_clients=(10,), paillier_sample=10)


def _row(scheme: str, n: int, n_clients: int, stats: Any, extrapolated: bool) -> dict[str, Any]:
    client_s = float(np.mean(stats.client_seconds))
    bytes_per_param = float(np.mean(stats.upload_bytes)) / n
    return {
        "scheme": scheme,
        "n_params": n,
        "n_clients": n_clients,
        "client_encrypt_s": client_s,
        "client_params_per_s": n / client_s if client_s > 0 else float("inf"),
        "client_respond_s": float(np.mean(stats.respond_seconds)) if stats.respond_seconds else 0.0,
        "bytes_per_param": bytes_per_param,
        "ratio_to_float32": bytes_per_param / 4.0,
        "aggregate_s": stats.aggregate_seconds,
        "decrypt_s": stats.decrypt_seconds,
        "extrapolated": extrapolated,
    }


def _measure(scheme: SecureSum, n: int, n_clients: int, rng: np.random.Generator) -> Any:
    vectors = [rng.normal(0.0, 0.5, n) for _ in range(n_clients)]
    scheme.sum(vectors)
    return scheme.last_round


@dataclass
class _Extrapolated:
    client_seconds: list[float]
    upload_bytes: list[int]
    aggregate_seconds: float
    decrypt_seconds: float
    respond_seconds: tuple[float, ...] = ()


def _paillier_row(
    keys: PaillierKeys, n: int, n_clients: int, sample: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Measure Paillier on ``sample`` values and scale linearly to n values and N clients.

    Encryption, homomorphic addition and decryption are each one independent
    operation per value, so linear scaling is exact up to timing noise.
    """
    encoding = FixedPointEncoding()
    values = encoding.encode(rng.normal(0.0, 0.5, sample), rng).values.tolist()
    start = time.perf_counter()
    first = keys.encrypt(values)
    encrypt_s = (time.perf_counter() - start) * n / sample
    second = keys.encrypt(values)
    start = time.perf_counter()
    accumulator = list(first)
    for i in range(n_clients - 1):
        keys.add_into(accumulator, second if i % 2 == 0 else first)
    aggregate_s = (time.perf_counter() - start) * n / sample
    start = time.perf_counter()
    keys.decrypt(accumulator)
    decrypt_s = (time.perf_counter() - start) * n / sample
    stats = _Extrapolated([encrypt_s], [n * keys.ciphertext_bytes], aggregate_s, decrypt_s)
    return _row("paillier", n, n_clients, stats, True)


def run_crypto_bench(config: CryptoBenchConfig, *, progress: Any = None) -> list[dict[str, Any]]:
    """Run every (scheme, n, N) cell; returns one row per cell."""
    rng = np.random.default_rng(config.seed)
    group = generate_group(config.modulus_bits)
    params = SystemParams(group, max_clients=max(1000, *config.n_clients))
    elgamal = ElGamalSum(params, table_memory_bytes=config.table_memory_bytes, seed=config.seed)
    plaintext = PlaintextSum()
    paillier = PaillierKeys(config.paillier_bits)
    rows: list[dict[str, Any]] = []
    for n in config.n_params:
        for n_clients in config.n_clients:
            for scheme in ("elgamal", "paillier", "plaintext"):
                if progress:
                    progress(f"{scheme} n={n:,} N={n_clients}")
                if scheme == "elgamal":
                    rows.append(_row(scheme, n, n_clients, _measure(elgamal, n, n_clients, rng), False))
                elif scheme == "plaintext":
                    rows.append(_row(scheme, n, n_clients, _measure(plaintext, n, n_clients, rng), False))
                else:
                    rows.append(_paillier_row(paillier, n, n_clients, config.paillier_sample, rng))
    return rows


def machine_description() -> str:
    impl = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.machine()}, {impl}, {platform.system()}"


def notes(config: CryptoBenchConfig) -> Sequence[str]:
    """Footnotes printed under the table: what was measured, and what was scaled."""
    return [
        f"RSA modulus |N|={config.modulus_bits}, 256-bit exponents; Paillier n={config.paillier_bits} bits; "
        f"one core, {machine_description()}",
        "elgamal/plaintext: every cell fully measured "
        "(N real clients encrypt, aggregate, challenge, decrypt)",
        f"paillier: {config.paillier_sample} values measured per operation, "
        "scaled linearly to n and N (extrapolated)",
        "client enc s: encode + pack + encrypt, per client (ElGamal tables are built once per "
        "deployment and not counted); respond s: check the challenge (the element rule on every "
        "member's first component, the proofs of knowledge of the client's keyed sample, "
        "batch-verified: all of them below ~90 members) and compute T_i with its proof",
        "aggregate s: screen and fold the uploads and responses, one core; the aggregator's own "
        "check of the proofs of knowledge runs only when a member is silent at the response "
        "deadline (the protocol's default) and is not counted",
    ]
