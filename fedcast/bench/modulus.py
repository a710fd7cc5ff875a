"""``fedcast bench modulus``: how long the key service takes to generate the federation's modulus N.

Each run is one call of :func:`fedcast.shared.crypto.modulus.generate_group` (two safe primes of
|N|/2 bits from the OS CSPRNG, sieved, tested; only N leaves the function) plus the
validation of the result, on one core. The search is randomized, so the time varies
from run to run: the rows give every run and the table their spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedcast.shared.crypto.modulus import generate_group

__all__ = [
    "JSON_KEYS",
    "TABLE_COLUMNS",
    "ModulusBenchConfig",
    "modulus_notes",
    "run_modulus_bench",
    "summarize",
]

JSON_KEYS = ("modulus_bits", "run", "seconds")
TABLE_COLUMNS = [
    ("modulus_bits", "|N| bits"),
    ("runs", "runs"),
    ("min_s", "min s"),
    ("median_s", "median s"),
    ("max_s", "max s"),
]


@dataclass(frozen=True)
class ModulusBenchConfig:
    sizes: tuple[int, ...] = (2048, 3072)
    runs: tuple[int, ...] = (8, 4)  # per size

    @classmethod
    def quick(cls) -> ModulusBenchConfig:
        return cls(sizes=(2048,), runs=(2,))


def run_modulus_bench(
    config: ModulusBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """One row per generation: the size, the run number and the seconds it took."""
    rows: list[dict[str, Any]] = []
    for bits, runs in zip(config.sizes, config.runs, strict=True):
        for run in range(runs):
            if progress:
                progress(f"modulus |N|={bits} run {run + 1}/{runs}")
            start = time.perf_counter()
            group = generate_group(bits)
            seconds = time.perf_counter() - start
            assert group.modulus_bits == bits
            rows.append({"modulus_bits": bits, "run": run + 1, "seconds": seconds})
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size: runs, min, median and max seconds."""
    out = []
    for bits in sorted({r["modulus_bits"] for r in rows}):
        times = [r["seconds"] for r in rows if r["modulus_bits"] == bits]
        out.append(
            {
                "modulus_bits": bits,
                "runs": len(times),
                "min_s": min(times),
                "median_s": statistics.median(times),
                "max_s": max(times),
            }
        )
    return out


def modulus_notes() -> list[str]:
    return [
        "one run = generate_group(bits): two safe primes P = 2p'+1 of |N|/2 bits (candidates sieved by "
        "every odd prime below 2^16 for p' and P, base-2 tests, then 40 Miller-Rabin rounds each), "
        "N = PQ validated; one core; the key service does it once per federation, logging progress",
    ]
