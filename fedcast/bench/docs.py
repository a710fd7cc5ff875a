"""``fedcast bench report``: run every bench and regenerate ``docs/BENCHMARKS.md``.

Runs crypto, learning, masks, fedmf and scale, plus ``e2e`` and ``peers`` when
their modules exist (imported by name: ``fedcast.bench.e2e.run_e2e_bench``,
``fedcast.bench.peers.run_peers_bench``; a bench that cannot run here, e.g. no
broker or no Flower, gets a section saying why instead of numbers). Writes each
bench's rows to ``<plot dir>/<bench>.json`` and its plots to ``<plot dir>``,
then the Markdown: machine, date, the exact command of every table, every
table, its footnotes, the prose that explains it, and links to the plots.
Every number in the prose is computed from the rows of this run.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import inspect
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcast.shared.crypto.group import DEFAULT_MODULUS_BITS

__all__ = [
    "BASELINE_SCHEME",
    "SAME_RUN_COLUMNS",
    "Section",
    "machine_report",
    "markdown_table",
    "render_markdown",
    "run_report",
    "same_run_ratios",
    "splice_sections",
]

Progress = Callable[[str], None]


@dataclass
class Section:
    """One bench in the report: its command, rows, columns, footnotes, prose and plots."""

    name: str
    title: str
    command: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    error: str | None = None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table of ``rows`` with (key, header) ``columns``."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def _read(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_report() -> dict[str, str]:
    """CPU, cores, memory, OS, Python and the numeric libraries, and the load when the run started."""
    import gmpy2
    import numpy

    memory = _read("/proc/meminfo", "MemTotal")
    if memory and memory.endswith(" kB") and memory[:-3].strip().isdigit():
        memory = f"{int(memory[:-3]) / 1024**2:.1f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": _read("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "memory": memory or "n/a",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": f"gmpy2 {gmpy2.version()}, numpy {numpy.__version__}",
        "load_average_at_start": load,
    }


# -- the benches ------------------------------------------------------------------------------


def _bits_flag(modulus_bits: int) -> str:
    """The ``--modulus-bits`` option of a command line, when it is not the default."""
    return "" if modulus_bits == DEFAULT_MODULUS_BITS else f" --modulus-bits {modulus_bits}"


def _table_count(n_params: int, modulus_bits: int, max_clients: int = 1000) -> int:
    """Comb tables of one client: the key segment's base plus one per data segment (default encoding)."""
    from fedcast.shared.encoding import FixedPointEncoding
    from fedcast.shared.packing import PackingLayout

    layout = PackingLayout.for_sum(
        max_value=FixedPointEncoding().max_encoded, max_clients=max_clients, plaintext_bits=modulus_bits - 1
    )
    return layout.n_segments(n_params) + 1


def _crypto(quick: bool, modulus_bits: int, progress: Progress) -> Section:
    from dataclasses import replace

    from fedcast.bench.crypto import TABLE_COLUMNS, CryptoBenchConfig, notes, run_crypto_bench

    config = replace(CryptoBenchConfig.quick() if quick else CryptoBenchConfig(), modulus_bits=modulus_bits)
    rows = run_crypto_bench(config, progress=progress)
    section = Section(
        "crypto",
        "Crypto core",
        "fedcast bench crypto" + (" --quick" if quick else "") + _bits_flag(modulus_bits),
        rows,
        list(TABLE_COLUMNS),
        list(notes(config)),
    )
    elgamal = [r for r in rows if r["scheme"] == "elgamal"]
    paillier = [r for r in rows if r["scheme"] == "paillier"]
    if elgamal:
        rates = [r["client_params_per_s"] for r in elgamal]
        largest = max(elgamal, key=lambda r: (r["n_params"], r["n_clients"]))
        span = f"{min(rates):,.0f}" if len(rates) == 1 else f"{min(rates):,.0f}-{max(rates):,.0f}"
        section.prose.append(f"Client encryption: {span} parameters/s on one core (target >= 150,000).")
        section.prose.append(
            f"Wire: {largest['bytes_per_param']:.2f} bytes per parameter at {largest['n_params']:,} "
            f"parameters (target <= 8.5), {largest['ratio_to_float32']:.2f}x float32."
        )
        section.prose.append(
            f"Aggregator, {largest['n_clients']} clients x {largest['n_params']:,} parameters: aggregate "
            f"{largest['aggregate_s']:.2f} s + decrypt {largest['decrypt_s']:.2f} s on one core (target "
            "<= 3 s at 100 x 100,000; Flower SecAgg+ needs 1.2 s at 3 shares / threshold 2 and 67 s at "
            "all-to-all sharing, crypto note section 3)."
        )
        section.prose.append(
            "Answering the challenge is a separate client cost (`respond s`): before computing "
            "T_i = (R^2)^sk_i and its equality proof, the client checks that the challenge lists exactly "
            "the online set it encrypted for, with its own A_i unchanged, puts every member's A_j through "
            "the received-element rule (range, Jacobi symbol; only squares are used) and batch-verifies "
            "the proofs of knowledge of r2 of a keyed sample of the members, all of them below about 90 "
            "members (random small exponents, one multi-exponentiation: shared/crypto/proofs.py; the "
            "sample size: docs/SECURITY.md section 6), so it grows linearly with N. The aggregate column "
            "includes screening every upload (ranges, A_i and B_i through the element rule); the "
            "aggregator checks the proofs of knowledge only when a member is silent at the response "
            "deadline (the protocol's default, not counted here), and response proofs only when a "
            "decryption fails, to name the culprit. The decrypt column is one lift for the key "
            "segment, one fixed-base exponentiation per data segment (comb tables of H_j^-1 with the "
            "one exponent s_sum), unpacking and decoding."
        )
        section.prose.append(
            "Client tables are built once per deployment: one comb table for the key segment's base "
            "B = lift(beta^2) and one per data segment's H_j = lift(h_j) "
            f"({_table_count(100_000, config.modulus_bits):,} for 100,000 parameters at "
            f"|N| = {config.modulus_bits}; each lift is one |N|-bit exponentiation mod N^2); "
            "`--table-memory-mb` caps them: the fastest comb shape (h=8 with 4, 2 or 1 columns) whose "
            "tables for every base fit is used, and if none fits, bases beyond the cap use plain powmod. "
            "The aggregator's decryptor holds the same kind of tables for the H_j^-1."
        )
        match = [
            p
            for p in paillier
            if p["n_params"] == largest["n_params"] and p["n_clients"] == largest["n_clients"]
        ]
        if match:
            p = match[0]
            section.prose.append(
                f"Versus Paillier (n of {config.paillier_bits} bits, extrapolated as the notes say), fedcast "
                f"at |N| = {config.modulus_bits} ({largest['n_clients']} x "
                f"{largest['n_params']:,}): {p['client_encrypt_s'] / largest['client_encrypt_s']:,.0f}x "
                f"faster client encryption, {p['bytes_per_param'] / largest['bytes_per_param']:.0f}x fewer "
                f"bytes, {p['aggregate_s'] / largest['aggregate_s']:.0f}x faster aggregation and "
                f"{p['decrypt_s'] / largest['decrypt_s']:,.0f}x faster decryption."
            )
    return section


_LEARNING_COLUMNS = [("run", "run"), ("rmse", "test RMSE"), ("mae", "test MAE")]


def _modulus(quick: bool, progress: Progress) -> Section:
    from fedcast.bench.modulus import (
        TABLE_COLUMNS,
        ModulusBenchConfig,
        modulus_notes,
        run_modulus_bench,
        summarize,
    )

    config = ModulusBenchConfig.quick() if quick else ModulusBenchConfig()
    runs = run_modulus_bench(config, progress=progress)
    rows = summarize(runs)
    section = Section(
        "modulus",
        "Generating the modulus N (key service, once per federation)",
        "fedcast bench modulus" + (" --quick" if quick else ""),
        rows,
        list(TABLE_COLUMNS),
        modulus_notes(),
    )
    for row in rows:
        section.prose.append(
            f"|N| = {row['modulus_bits']}: {row['min_s']:.1f}-{row['max_s']:.1f} s over {row['runs']} runs "
            f"(median {row['median_s']:.1f} s)."
        )
    return section


def _learning(quick: bool, modulus_bits: int, progress: Progress) -> Section:
    from fedcast.shared.crypto.modulus import generate_group
    from fedcast.shared.encoding import FixedPointEncoding
    from fedcast.shared.learning.experiments import run_learning_parity
    from fedcast.shared.params import SystemParams
    from fedcast.shared.schemes import ElGamalSum

    rounds = 20 if quick else 200
    secure = ElGamalSum(SystemParams(generate_group(modulus_bits), FixedPointEncoding(16, 8.0)), seed=0)
    progress(f"learning parity: {rounds} rounds")
    result = run_learning_parity(secure, seed=0, rounds=rounds)
    rows: list[dict[str, Any]] = [
        {"run": "centralized batch-gradient MF", "rmse": result["rmse_centralized"], "mae": None},
        {
            "run": "plaintext FedMF (float32 wire)",
            "rmse": result["rmse_plaintext"],
            "mae": result["mae_plaintext"],
        },
        {
            "run": "secure FedMF (multi-key ElGamal)",
            "rmse": result["rmse_secure"],
            "mae": result["mae_secure"],
        },
        {"run": "FedMMF (one-order masks)", "rmse": result["rmse_fedmmf"], "mae": result["mae_fedmmf"]},
    ]
    plain, sec = result["rmse_plaintext"], result["rmse_secure"]
    section = Section(
        "learning",
        "Learning parity",
        f"fedcast bench learning --rounds {rounds} --clip 8" + _bits_flag(modulus_bits),
        rows,
        _LEARNING_COLUMNS,
        [
            f"synthetic IIoT data (48 production lines x 60 part types, rank 3, 30 ratings per line, "
            f"20% held out per line), latent dimension 5, {rounds} rounds, every client online, seed 0",
            f"secure run: the real multi-key ElGamal scheme (v2) on an RSA modulus |N|={modulus_bits}, "
            "16 fraction bits, clip 8; "
            f"{secure.clipped_total} values clipped over all rounds",
        ],
    )
    section.prose.append(
        f"Secure vs plaintext RMSE: {100 * (sec - plain) / plain:+.5f} % (target within 0.5 %); plaintext "
        f"FedMF vs centralized: {abs(plain - result['rmse_centralized']):.1e} (the float32 wire)."
    )
    for row in rows:  # six decimals: parity is the point of this table
        row["rmse"] = f"{row['rmse']:.6f}"
        row["mae"] = None if row["mae"] is None else f"{row['mae']:.6f}"
    return section


_MASK_COLUMNS = [("method", "method"), ("rmse", "RMSE"), ("mae", "MAE")]


def _masks(quick: bool, progress: Progress) -> Section:
    from dataclasses import asdict

    from fedcast.shared.learning.masks import MaskConfig, compare_fedmf_fedmmf

    seeds = (0,) if quick else (0, 1, 2, 3, 4)
    progress(f"masks: seeds {list(seeds)}")
    result = asdict(compare_fedmf_fedmmf(seeds=seeds, data=None, mask_config=MaskConfig(order=1)))
    rows = []
    for label, prefix in (
        ("FedMF", "fedmf"),
        ("LocalLR (private masks only)", "local"),
        ("FedMMF, one-order masks", "fedmmf"),
    ):
        r, m = result[f"{prefix}_rmse"], result[f"{prefix}_mae"]
        rows.append(
            {
                "method": label,
                "rmse": f"{r['mean']:.4f} +- {r['std']:.4f}",
                "mae": f"{m['mean']:.4f} +- {m['std']:.4f}",
            }
        )
    return Section(
        "masks",
        "FedMF vs FedMMF",
        "fedcast bench masks --seeds " + " ".join(str(s) for s in seeds),
        rows,
        _MASK_COLUMNS,
        [
            f"synthetic data, one data set per seed (seeds {list(seeds)}), one user per client, "
            "mean +- std (population) of test metrics, FedMMF Table 4 style"
        ],
        [
            "MovieLens 100K: `fedcast bench masks --ml100k DIR` reads a local copy; none was available on "
            "the machine that generated this file unless a MovieLens row appears above."
        ],
    )


#: The FedMF section's baseline: this project's own Paillier FullText (the paper's protocol with
#: python-paillier, as the paper measured it) at 1024 bits, measured in the same run on the same data.
BASELINE_SCHEME = "paillier-1024-full"
#: Same-run ratio columns (baseline / row: > 1 means the row is faster or smaller).
SAME_RUN_COLUMNS = [
    ("vs_paillier_iteration", "x P-1024 full iter"),
    ("vs_paillier_single_core", "x P-1024 full 1-core"),
    ("vs_paillier_bytes", "x P-1024 full bytes"),
]
_REFERENCE_COLUMNS = ("speedup_iteration", "speedup_single_core", "bytes_ratio")


def same_run_ratios(rows: Sequence[dict[str, Any]], baseline: str = BASELINE_SCHEME) -> None:
    """Add the ``vs_paillier_*`` ratios to every fedmf row: ``baseline``'s value at the same item
    count of the same run divided by the row's (None where the run has no such baseline row).

    Per iteration (slowest user + server), single-core (every user + server) and bytes per user.
    """
    for row in rows:
        base = next((r for r in rows if r["scheme"] == baseline and r["items"] == row["items"]), None)
        for (key, _), value in zip(
            SAME_RUN_COLUMNS, ("iteration_s", "single_core_s", "upload_bytes"), strict=True
        ):
            mine = row.get(value)
            row[key] = float(base[value]) / float(mine) if base is not None and mine and mine > 0 else None


def _fedmf_columns(columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fedmf table with the same-run ratio columns in place of the ratios to another run's figures."""
    out: list[tuple[str, str]] = []
    for key, header in columns:
        if key == _REFERENCE_COLUMNS[0]:
            out.extend(SAME_RUN_COLUMNS)
        elif key not in _REFERENCE_COLUMNS:
            out.append((key, header))
    if not any(key == SAME_RUN_COLUMNS[0][0] for key, _ in out):
        out.extend(SAME_RUN_COLUMNS)
    return out


def _verdict(ratio: float, goal: float) -> str:
    return f"goal {goal:g}x: {'met' if ratio >= goal else 'not met'}"


def _times(ratio: float, better: str, worse: str) -> str:
    """'12.3x faster' for a ratio above 1, '2.0x slower' below (ratios are baseline / row)."""
    return f"{ratio:,.1f}x {better}" if ratio >= 1 else f"{1 / ratio:,.1f}x {worse}"


def _fedmf_headline(row: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    measured = (
        f"extrapolated from {base['users_measured']} of {base['n_users']} users, as the notes say"
        if base.get("extrapolated")
        else "every user measured"
    )
    return (
        f"**Same run, same data, same machine:** fedcast ({row['scheme']}, {row['n_users']} users, "
        f"{row['items']} items) against this project's own 1024-bit Paillier FullText ({base['scheme']}: "
        f"the paper's protocol with python-paillier; {measured}): "
        f"{_times(row['vs_paillier_iteration'], 'faster', 'slower')} per iteration (slowest user + server: "
        f"{row['iteration_s']:.3g} s vs {base['iteration_s']:.3g} s; "
        f"{_verdict(row['vs_paillier_iteration'], 40)}), "
        f"{_times(row['vs_paillier_single_core'], 'faster', 'slower')} single-core (all users + server: "
        f"{row['single_core_s']:.3g} s vs {base['single_core_s']:.3g} s; "
        f"{_verdict(row['vs_paillier_single_core'], 100)}), "
        f"{_times(row['vs_paillier_bytes'], 'fewer', 'more')} bytes per user "
        f"({row['upload_bytes']:,.0f} B vs {base['upload_bytes']:,.0f} B; "
        f"{_verdict(row['vs_paillier_bytes'], 20)}); fedcast at "
        f"|N| = {row['key_bits']}, Paillier at 1024 bits."
    )


def _fedmf(quick: bool, modulus_bits: int, movielens: str | None, progress: Progress) -> Section:
    from dataclasses import replace

    from fedcast.bench.fedmf import REFERENCE, TABLE_COLUMNS, FedMFBenchConfig, fedmf_notes, run_fedmf_bench

    config = replace(FedMFBenchConfig.quick() if quick else FedMFBenchConfig(), modulus_bits=modulus_bits)
    if movielens:
        config = replace(config, movielens=movielens)
    rows = run_fedmf_bench(config, progress=progress)
    same_run_ratios(rows)
    command = (
        "fedcast bench fedmf"
        + (" --quick" if quick else "")
        + (f" --movielens {movielens}" if movielens else "")
        + _bits_flag(modulus_bits)
    )
    notes = [line for line in fedmf_notes(config, rows) if not line.startswith("x ref:")]
    notes.append(
        f"x P-1024 full: {BASELINE_SCHEME}'s value at the same item count in this run divided by the "
        "row's (iteration, single-core total, bytes per user): > 1 means faster or smaller"
    )
    section = Section(
        "fedmf",
        "FedMF paper Table 1, reproduced",
        command,
        rows,
        _fedmf_columns(TABLE_COLUMNS),
        notes,
    )
    for row in rows:
        if not row["scheme"].startswith("elgamal"):
            continue
        base = next((r for r in rows if r["scheme"] == BASELINE_SCHEME and r["items"] == row["items"]), None)
        if base is None or row.get("vs_paillier_iteration") is None:
            section.prose.append(
                f"{row['scheme']}, {row['items']} items: no {BASELINE_SCHEME} row in this run "
                "(`--paillier-bits 1024 --texts full`), so no same-run ratio."
            )
            continue
        section.prose.append(_fedmf_headline(row, base))
        parts = row["user_breakdown_s"]
        server = row["server_breakdown_s"]
        workers = row.get("fold_workers")
        folding = (
            f" The aggregator folds the uploads' data segments in {workers} helper process(es) "
            "besides its own (services/aggregator/foldpool.py) for 'server s' and 'iteration s'; the "
            f"single-core total counts that folding as done on one core ({row['serial_fold_s']:.3f} s "
            "measured serially on the same uploads)."
            if workers and row.get("serial_fold_s") is not None
            else ""
        )
        section.prose.append(
            "Where fedcast's time goes (per user: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in parts.items())
            + "; per iteration on the server: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in server.items())
            + ")."
            + folding
            + " Nothing is skipped for speed: every received element goes through the received-element "
            "rule (range, Jacobi symbol, then only its square is used); every member re-checks the "
            "registered keys, signs its first component, and answering the challenge checks the proofs "
            "of knowledge of r2 and the Ed25519 signatures of its keyed sample of the members "
            "(docs/SECURITY.md section 6); the aggregator checks the registry and every upload's "
            "signature (check_uploads), and every response carries its equality proof (checked by the "
            "aggregator when a decryption fails). Left out of the totals, as the protocol runs them only "
            "on a fault: the aggregator's check of the N proofs of knowledge when a member is silent at "
            "the deadline (server_proof_check_s in the JSON). What a client pays to check every proof and "
            "signature instead of its sample is client_check_all_s."
        )
    section.prose.append(
        "For reference only, from another run (not this one, so not a same-run comparison): the paper's "
        "own published code (Di-Chai/FedMF, FedMF_Full.py, FullText, 1024-bit Paillier), measured once on "
        f"this project's machine at {REFERENCE['users']:.0f} users and {REFERENCE['items']:.0f} items, took "
        f"{REFERENCE['iteration_s']:g} s per iteration, {REFERENCE['single_core_s']:,.0f} s single-core, "
        f"{REFERENCE['user_s']:g} s per user and {REFERENCE['upload_bytes'] / 1e6:.1f} MB per user."
    )
    if quick:
        section.prose.append(
            "Quick mode: a tenth of the users and 1024-bit Paillier only; run without `--quick` for Table 1."
        )
    return section


def _scale(quick: bool, modulus_bits: int, progress: Progress) -> Section:
    from dataclasses import replace

    from fedcast.bench.scale import TABLE_COLUMNS, ScaleBenchConfig, run_scale_bench, scale_notes

    config = replace(ScaleBenchConfig.quick() if quick else ScaleBenchConfig(), modulus_bits=modulus_bits)
    rows = run_scale_bench(config, progress=progress)
    section = Section(
        "scale",
        "Scale: aggregator cost as the federation grows; Pi-class client",
        "fedcast bench scale" + (" --quick" if quick else "") + _bits_flag(modulus_bits),
        rows,
        list(TABLE_COLUMNS),
        scale_notes(config),
    )
    skipped = [r for r in rows if r["status"] == "skipped"]
    if skipped:
        section.prose.append(
            "Skipped cells: "
            + "; ".join(f"N={r['n_clients']} x n={r['n_params']:,} ({r['detail']})" for r in skipped)
            + "."
        )
    for r in rows:
        if r["kind"] == "pi" and r["status"] == "ok":
            section.prose.append(
                f"Pi-class client ({r['limits']}, tables {r['table_budget_mb']} MB): "
                f"{r['round_s']:.3g} s per round at {r['n_params']:,} parameters, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB. These constraints run on this x86 machine; an ARM Pi core is "
                "slower, so treat the seconds as a lower bound."
            )
        elif r["kind"] == "pi":
            section.prose.append(
                f"Pi-class client with {r['table_budget_mb']} MB tables failed: {r['detail']}."
            )
    return section


def _external(
    name: str, quick: bool, progress: Progress, modulus_bits: int = DEFAULT_MODULUS_BITS
) -> Section | None:
    """e2e / peers from the sibling modules, if present; a section with the error if they cannot run."""
    import dataclasses

    try:
        module = importlib.import_module(f"fedcast.bench.{name}")
    except ImportError:
        return None
    run = getattr(module, f"run_{name}_bench", None)
    if run is None:
        return None
    config_cls = next(
        (v for k, v in vars(module).items() if k.endswith("BenchConfig") and inspect.isclass(v)), None
    )
    command = f"fedcast bench {name}" + (" --quick" if quick else "")
    section = Section(name, f"{name} bench", command)
    try:
        config = None
        if config_cls is not None:
            config = config_cls.quick() if quick and hasattr(config_cls, "quick") else config_cls()
            if dataclasses.is_dataclass(config) and hasattr(config, "modulus_bits"):
                config = dataclasses.replace(config, modulus_bits=modulus_bits)  # type: ignore[type-var]
                section.command += _bits_flag(modulus_bits)
        rows = run(config, progress=progress) if config is not None else run(progress=progress)
    except Exception as exc:  # a sibling bench that cannot run here: report why, keep the rest
        section.error = f"{type(exc).__name__}: {exc}"
        return section
    section.rows = [dict(r) for r in rows]
    columns = getattr(module, "TABLE_COLUMNS", None)
    section.columns = (
        list(columns) if columns else [(k, k) for k in (section.rows[0] if section.rows else {})]
    )
    notes = getattr(module, "notes", None)
    if callable(notes) and config is not None:
        try:
            section.notes = list(notes(config))
        except Exception as exc:  # notes are optional decoration
            section.notes = [f"(notes unavailable: {exc})"]
    return section


# -- the report -------------------------------------------------------------------------------


def run_report(
    *,
    quick: bool = False,
    out: str | Path = "docs/BENCHMARKS.md",
    plot_dir: str | Path = "docs/bench",
    modulus_bits: int = DEFAULT_MODULUS_BITS,
    movielens: str | None = None,
    plots: bool = True,
    progress: Progress | None = None,
    only: Sequence[str] | None = None,
) -> list[Section]:
    """Run every bench, write the rows as JSON and the plots to ``plot_dir``, and the Markdown to ``out``.

    ``only`` runs just the named benches and replaces their sections in an existing ``out``
    (the others, and their numbers, are kept as they were; the header says which were re-run).
    """
    from fedcast.bench.plots import plot_bench

    say = progress or (lambda _message: None)
    machine = machine_report()
    started = _dt.datetime.now(_dt.UTC)
    sections: list[Section] = []
    builders: list[tuple[str, Callable[[], Section | None]]] = [
        ("modulus", lambda: _modulus(quick, say)),
        ("crypto", lambda: _crypto(quick, modulus_bits, say)),
        ("learning", lambda: _learning(quick, modulus_bits, say)),
        ("masks", lambda: _masks(quick, say)),
        ("fedmf", lambda: _fedmf(quick, modulus_bits, movielens, say)),
        ("scale", lambda: _scale(quick, modulus_bits, say)),
        ("e2e", lambda: _external("e2e", quick, say, modulus_bits)),
        ("peers", lambda: _external("peers", quick, say, modulus_bits)),
    ]
    if only is not None:
        unknown = sorted(set(only) - {name for name, _ in builders})
        if unknown:
            raise ValueError(f"no bench named {unknown}; choose from {[name for name, _ in builders]}")
        builders = [(name, build) for name, build in builders if name in only]
    out_path, plot_path = Path(out), Path(plot_dir)
    plot_path.mkdir(parents=True, exist_ok=True)
    for name, build in builders:
        say(f"report: {name}")
        section = build()
        if section is None:
            continue
        if section.rows:
            (plot_path / f"{name}.json").write_text(json.dumps(section.rows, indent=1, default=str) + "\n")
            if plots:
                section.plots = plot_bench(name, section.rows, plot_path)
        sections.append(section)
    finished = _dt.datetime.now(_dt.UTC)
    text = render_markdown(
        sections, machine, started, finished, quick=quick, out=out_path, plot_dir=plot_path
    )
    if only is not None and out_path.exists():
        text = splice_sections(out_path.read_text(), text, [s.name for s in sections], started)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return sections


def _blocks(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The lines before the first section, and each section as (heading title, lines)."""
    head: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append((line[3:].split(": `", 1)[0], [line]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            head.append(line)
    return head, blocks


def splice_sections(existing: str, fresh: str, names: Sequence[str], started: _dt.datetime) -> str:
    """``existing`` with the sections ``fresh`` renders put in place of the ones with their titles."""
    head, old_blocks = _blocks(existing)
    _, new_blocks = _blocks(fresh)
    replacement = dict(new_blocks)
    out = list(head)
    while out and not out[-1]:
        out.pop()
    out += [
        f"Re-run {started:%Y-%m-%d %H:%M} UTC: {', '.join(names)} only "
        f"(`fedcast bench report --only {','.join(names)}`); the other sections are from the run above.",
        "",
    ]
    seen: set[str] = set()
    for title, lines in old_blocks:
        if title in replacement:
            seen.add(title)
            out += replacement[title]
        else:
            out += lines
    for title, lines in new_blocks:
        if title not in seen:
            out += lines
    return "\n".join(out).rstrip() + "\n"


def render_markdown(
    sections: Sequence[Section],
    machine: Mapping[str, str],
    started: _dt.datetime,
    finished: _dt.datetime,
    *,
    quick: bool,
    out: Path,
    plot_dir: Path,
) -> str:
    """The BENCHMARKS.md text (generated; edit the generator, not the file)."""
    minutes = (finished - started).total_seconds() / 60
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `fedcast bench report`; edit fedcast/bench/docs.py, not this file. -->",
        "",
        f"Generated {started:%Y-%m-%d %H:%M} UTC in {minutes:.1f} minutes by "
        f"`fedcast bench report{' --quick' if quick else ''} --out {out}`"
        + (" (QUICK: reduced sizes, not the published workloads)." if quick else "."),
        "",
        "Machine: "
        + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in machine.items())
        + ". Every party runs on one core unless a table says otherwise; each bench prints a table, "
        "writes its rows with `--json PATH` (`bench crypto`: `--json` prints them) and draws PNG plots "
        "with `--plot DIR` (needs `pip install 'fedcast[bench]'`).",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}: `{section.command}`", ""]
        if section.error:
            lines += [f"Not run on this machine: {section.error}", ""]
            continue
        lines += [markdown_table(section.rows, section.columns), ""]
        lines += [f"* {note}" for note in section.notes]
        if section.notes:
            lines.append("")
        for paragraph in section.prose:
            lines += [paragraph, ""]
        for plot in section.plots:
            try:
                link = os.path.relpath(plot, out.parent)
            except ValueError:
                link = str(plot)
            lines += [f"![{section.name}: {plot.stem}]({link})", ""]
        rel = os.path.relpath(plot_dir / f"{section.name}.json", out.parent)
        lines += [f"Rows as JSON: [{rel}]({rel}).", ""]
    return "\n".join(lines).rstrip() + "\n"
