"""``fedcast bench <name>``: the benchmark subcommands (each prints a table; JSON and plots on request)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from fedcast.cli_common import add_group_args as _add_group_args
from fedcast.cli_common import elgamal_scheme as _elgamal_scheme
from fedcast.cli_common import progress as _progress

__all__ = ["add_bench_commands"]


def _cmd_bench_crypto(args: argparse.Namespace) -> int:
    from fedcast.bench.crypto import JSON_KEYS, TABLE_COLUMNS, CryptoBenchConfig, notes, run_crypto_bench
    from fedcast.bench.report import format_table

    base = CryptoBenchConfig.quick() if args.quick else CryptoBenchConfig()
    config = CryptoBenchConfig(
        n_params=tuple(args.params) if args.params else base.n_params,
        n_clients=tuple(args.clients) if args.clients else base.n_clients,
        modulus_bits=args.modulus_bits,
        paillier_sample=base.paillier_sample,
        table_memory_bytes=args.table_memory_mb * 1024 * 1024,
        seed=args.seed,
    )
    rows = run_crypto_bench(config, progress=_progress(args.json))
    _plot_rows("crypto", rows, args.plot)
    if args.json:
        json.dump([{k: row[k] for k in JSON_KEYS} for row in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(rows, TABLE_COLUMNS))
        for line in notes(config):
            print(f"  * {line}")
    return 0


def _cmd_bench_learning(args: argparse.Namespace) -> int:
    from fedcast.shared.learning.experiments import run_learning_parity

    report = _progress(args.json)
    secure = _elgamal_scheme(args, args.clip)
    report(f"parity run: {args.rounds} rounds, secure scheme {secure.name} |N|={args.modulus_bits}")
    result = run_learning_parity(secure, seed=args.seed, rounds=args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    plain, sec = result["rmse_plaintext"], result["rmse_secure"]
    print(f"synthetic IIoT data, seed {result['seed']}, {result['rounds']} rounds, all clients online")
    print(f"  centralized MF        RMSE {result['rmse_centralized']:.6f}")
    print(f"  plaintext FedMF       RMSE {plain:.6f}  MAE {result['mae_plaintext']:.6f}")
    print(f"  secure FedMF (ElGamal) RMSE {sec:.6f}  MAE {result['mae_secure']:.6f}")
    print(f"  FedMMF (masks)        RMSE {result['rmse_fedmmf']:.6f}  MAE {result['mae_fedmmf']:.6f}")
    print(
        f"  secure vs plaintext: {100 * (sec - plain) / plain:+.4f}% RMSE; "
        f"values clipped over all rounds: {secure.clipped_total}"
    )
    return 0


def _cmd_bench_masks(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from fedcast.shared.learning.loaders import load_movielens_100k
    from fedcast.shared.learning.masks import MaskConfig, compare_fedmf_fedmmf
    from fedcast.shared.learning.mf import MFConfig

    data = load_movielens_100k(args.ml100k) if args.ml100k else None
    mf_config = MFConfig(epochs=args.rounds) if args.rounds is not None else None
    # A diverged run raises TrainingDivergedError: main() prints it and exits 2, never a NaN table.
    result = compare_fedmf_fedmmf(
        seeds=tuple(args.seeds), data=data, mf_config=mf_config, mask_config=MaskConfig(order=args.order)
    )
    rows = asdict(result)
    if args.json:
        payload = {**rows, "data": "ml-100k" if data else "synthetic", "order": args.order}
        print(json.dumps(_json_safe(payload), allow_nan=False))  # strict JSON: NaN/inf become null
        return 0
    source = f"MovieLens 100K ({args.ml100k})" if data else "synthetic IIoT data (one data set per seed)"
    print(f"{source}; seeds {list(result.seeds)}; mean +- std of test metrics (FedMMF Table 4 style)")
    print(f"  {'method':<22}{'RMSE':>20}{'MAE':>20}")
    for label, prefix in (
        ("FedMF", "fedmf"),
        (f"Local{'LR' if args.order == 1 else 'FM'} (masks only)", "local"),
        (f"FedMMF order {args.order}", "fedmmf"),
    ):
        r, m = rows[f"{prefix}_rmse"], rows[f"{prefix}_mae"]
        print(f"  {label:<22}{r['mean']:>12.4f} +- {r['std']:.4f}{m['mean']:>12.4f} +- {m['std']:.4f}")
    return 0


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _add_plot_arg(parser: argparse.ArgumentParser) -> None:
    """``--plot DIR``, shared by the benches that draw PNG plots (matplotlib, the ``bench`` extra)."""
    parser.add_argument("--plot", metavar="DIR", help="write PNG plots to DIR (pip install 'fedcast[bench]')")


def _plot_rows(name: str, rows: Any, directory: str | None) -> None:
    if directory:
        from fedcast.bench.plots import plot_bench

        _require_plots(directory)  # a clear error before anything else is written
        for path in plot_bench(name, rows, directory):
            print(f"plot: {path}", file=sys.stderr)


def _write_rows(rows: Any, path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1, default=str)
            handle.write("\n")
        print(f"rows: {path}", file=sys.stderr)


def _show(rows: Any) -> list[dict[str, Any]]:
    """Rows for the text table: missing values as '-'."""
    return [{k: "-" if v is None else v for k, v in row.items()} for row in rows]


def _cmd_bench_fedmf(args: argparse.Namespace) -> int:
    from fedcast.bench.fedmf import TABLE_COLUMNS, FedMFBenchConfig, fedmf_notes, run_fedmf_bench

    changes = _overrides(
        args,
        ("n_users", "latent_dim", "iterations", "paillier_budget_s", "movielens", "modulus_bits"),
        items="item_counts",
        paillier_bits="paillier_bits",
        texts="paillier_texts",
    )
    base = (
        FedMFBenchConfig.small()
        if args.small
        else FedMFBenchConfig.quick()
        if args.quick
        else FedMFBenchConfig()
    )
    config = replace(base, **changes)
    _require_plots(args.plot)
    rows = run_fedmf_bench(config, progress=_progress(args.quiet))
    _emit("fedmf", rows, TABLE_COLUMNS, fedmf_notes(config, rows), json_path=args.json, plot_dir=args.plot)
    return 0


def _cmd_bench_scale(args: argparse.Namespace) -> int:
    from fedcast.bench.scale import TABLE_COLUMNS, ScaleBenchConfig, run_scale_bench, scale_notes

    changes = _overrides(
        args,
        ("cell_budget_s", "modulus_bits", "pi_params", "pi_address_space_mb", "challenge_members"),
        table_bytes=True,
        clients="n_clients",
        params="n_params",
        pi_table_mb="pi_table_budgets_mb",
    )
    if args.no_pi:
        changes["pi"] = False
    base = (
        ScaleBenchConfig.small()
        if args.small
        else ScaleBenchConfig.quick()
        if args.quick
        else ScaleBenchConfig()
    )
    config = replace(base, **changes)
    _require_plots(args.plot)
    rows = run_scale_bench(config, progress=_progress(args.quiet))
    _emit("scale", rows, TABLE_COLUMNS, scale_notes(config), json_path=args.json, plot_dir=args.plot)
    for row in rows:
        if row["detail"] and row["status"] != "ok":
            print(
                f"  * {row['kind']} N={row['n_clients']} n={row['n_params']:,}: "
                f"{row['status']}: {row['detail']}"
            )
    return 0


def _cmd_bench_e2e(args: argparse.Namespace) -> int:
    from fedcast.bench.e2e import JSON_KEYS, TABLE_COLUMNS, E2EBenchConfig, notes, run_e2e_bench

    keys = ("rounds", "n_items", "latent_dim", "table_memory_mb", "amqp_url", "modulus_bits")
    changes = _overrides(args, (*keys, "cell_timeout_s"), clients="n_clients", schemes="schemes")
    config = replace(E2EBenchConfig.quick() if args.quick else E2EBenchConfig(), **changes)
    rows = run_e2e_bench(config, progress=_progress(args.quiet))
    _emit("e2e", rows, TABLE_COLUMNS, notes(config), json_path=args.json, json_keys=JSON_KEYS)
    return 0


def _cmd_bench_peers(args: argparse.Namespace) -> int:
    from fedcast.bench.peers import JSON_KEYS, TABLE_COLUMNS, PeersBenchConfig, notes, run_peers_bench

    changes = _overrides(
        args,
        ("modulus_bits", "min_online"),
        table_bytes=True,
        clients="n_clients",
        params="n_params",
        settings="settings",
    )
    config = replace(PeersBenchConfig.quick() if args.quick else PeersBenchConfig(), **changes)
    rows = run_peers_bench(config, progress=_progress(args.quiet))
    _emit("peers", rows, TABLE_COLUMNS, notes(config), json_path=args.json, json_keys=JSON_KEYS)
    return 0


def _overrides(
    args: argparse.Namespace, names: Sequence[str], *, table_bytes: bool = False, **lists: str
) -> dict[str, Any]:
    """Config fields the command line sets: ``--seed`` always; ``names`` when given; the
    multi-value options in ``lists`` (option -> field) as tuples when given (an empty
    ``--paillier-bits`` is kept: it means none); with ``table_bytes``, ``--table-memory-mb``
    as ``table_memory_bytes``; ``--insecure-test-group`` where the command has it."""
    changes: dict[str, Any] = {"seed": args.seed}
    changes.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    for option, field in lists.items():
        if getattr(args, option) is not None:
            changes[field] = tuple(getattr(args, option))
    if table_bytes and args.table_memory_mb is not None:
        changes["table_memory_bytes"] = args.table_memory_mb * 1024 * 1024
    if getattr(args, "insecure_test_group", False):
        changes["insecure_group"] = True
    return changes


def _emit(
    name: str,
    rows: list[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    notes: Iterable[str],
    *,
    json_path: str | None,
    json_keys: Sequence[str] | None = None,
    plot_dir: str | None = None,
) -> None:
    """The rows as JSON (``--json PATH``) and PNG plots (``--plot DIR``), then the table and notes."""
    from fedcast.bench.report import format_table

    _write_rows(rows if json_keys is None else [{k: r.get(k) for k in json_keys} for r in rows], json_path)
    _plot_rows(name, rows, plot_dir)
    print(format_table(_show(rows), columns))
    for line in notes:
        print(f"  * {line}")


def _require_plots(directory: str | None) -> None:
    """Fail on a missing matplotlib before a long run, not after it."""
    if directory:
        from fedcast.bench.plots import require_matplotlib

        require_matplotlib()


def _cmd_bench_simulate(args: argparse.Namespace) -> int:
    from fedcast.bench.simulate import TABLE_COLUMNS, SimulateBenchConfig, run_simulate_bench, simulate_notes

    if args.floor:
        return _bench_floor(args)
    config = SimulateBenchConfig(
        clients=args.clients,
        params=args.params,
        rounds=args.rounds,
        workers=args.workers,
        modulus_bits=args.modulus_bits,
        baseline=args.baseline,
        insecure_test_group=args.insecure_test_group,
        seed=args.seed,
    )
    rows = run_simulate_bench(config, progress=_progress(args.quiet))
    _emit_or_print(args.json, "simulate", rows, TABLE_COLUMNS, simulate_notes(config, rows))
    return 0


def _emit_or_print(
    json_arg: str | None,
    name: str,
    rows: list[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    notes: Iterable[str],
) -> None:
    """:func:`_emit`, where ``--json -`` prints the rows on stdout before the table."""
    if json_arg == "-":
        print(json.dumps(rows, default=str))
    _emit(name, rows, columns, notes, json_path=None if json_arg == "-" else json_arg)


def _bench_floor(args: argparse.Namespace) -> int:
    from fedcast.bench.floor import FLOOR_COLUMNS, FloorConfig, floor_notes, run_floor

    config = FloorConfig(
        members=args.clients,
        params=args.params,
        modulus_bits=args.modulus_bits,
        insecure_test_group=args.insecure_test_group,
        cores=args.workers,
    )
    rows = run_floor(config, progress=_progress(args.quiet))
    _emit_or_print(args.json, "simulate --floor", rows, FLOOR_COLUMNS, floor_notes(config, rows))
    return 0


def _cmd_bench_modulus(args: argparse.Namespace) -> int:
    from fedcast.bench.modulus import (
        TABLE_COLUMNS,
        ModulusBenchConfig,
        modulus_notes,
        run_modulus_bench,
        summarize,
    )

    config = ModulusBenchConfig.quick() if args.quick else ModulusBenchConfig()
    if args.runs is not None:
        config = ModulusBenchConfig(config.sizes, tuple(args.runs for _ in config.sizes))
    rows = run_modulus_bench(config, progress=_progress(False))
    _write_rows(rows, args.json)
    from fedcast.bench.report import format_table

    print(format_table(summarize(rows), TABLE_COLUMNS))
    for line in modulus_notes():
        print(f"  * {line}")
    return 0


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from fedcast.bench.docs import run_report

    _require_plots(None if args.no_plots else args.plot_dir)
    sections = run_report(
        quick=args.quick,
        out=args.out,
        plot_dir=args.plot_dir,
        modulus_bits=args.modulus_bits,
        movielens=args.movielens,
        plots=not args.no_plots,
        progress=_progress(False),
        only=args.only.split(",") if args.only else None,
    )
    print(f"wrote {args.out} ({len(sections)} benches; rows and plots under {args.plot_dir})")
    return 0


def add_bench_commands(commands: Any) -> None:
    """Register ``fedcast bench ...`` on the top-level parser's subparsers."""
    bench = commands.add_parser("bench", help="run a benchmark (prints a table, or JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="<benchmark>")
    crypto = benches.add_parser("crypto", help="encryption, wire size, aggregation and decryption costs")
    crypto.add_argument("--quick", action="store_true", help="one small cell (10,000 params, 10 clients)")
    crypto.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    crypto.add_argument("--params", type=int, nargs="+", help="parameter counts (default 10000 100000)")
    crypto.add_argument("--clients", type=int, nargs="+", help="client counts (default 10 100)")
    crypto.add_argument("--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="RSA modulus")
    crypto.add_argument(
        "--table-memory-mb", type=int, default=256, help="client fixed-base table budget (MiB)"
    )
    crypto.add_argument("--seed", type=int, default=0)
    _add_plot_arg(crypto)
    crypto.set_defaults(handler=_cmd_bench_crypto)

    modulus = benches.add_parser("modulus", help="time to generate the federation's RSA modulus (2048, 3072)")
    modulus.add_argument("--quick", action="store_true", help="two 2048-bit runs")
    modulus.add_argument("--runs", type=int, help="runs per size (default 8 at 2048, 4 at 3072)")
    modulus.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    modulus.set_defaults(handler=_cmd_bench_modulus)

    learning = benches.add_parser("learning", help="FedMF parity: centralized, plaintext, secure, FedMMF")
    learning.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    learning.add_argument("--rounds", type=int, default=200)
    learning.add_argument("--clip", type=float, default=8.0, help="clip bound C for the secure run")
    _add_group_args(learning)
    learning.set_defaults(handler=_cmd_bench_learning)

    masks = benches.add_parser("masks", help="FedMF vs FedMMF (personalized masks), mean +- std over seeds")
    masks.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    masks.add_argument("--order", type=int, choices=(1, 2), default=1, help="1: linear, 2: FM masks")
    masks.add_argument("--ml100k", metavar="DIR", help="a MovieLens 100K directory (u.data, u.user, u.item)")
    masks.add_argument(
        "--rounds", type=int, default=None, help="FedMF rounds per run (default: MFConfig's, 100)"
    )
    masks.add_argument("--json", action="store_true")
    masks.set_defaults(handler=_cmd_bench_masks)

    fedmf = benches.add_parser(
        "fedmf", help="the FedMF paper's Table 1: plaintext, Paillier, fedcast ElGamal"
    )
    size = fedmf.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="61 users, 40 items, 1024-bit Paillier only")
    size.add_argument(
        "--small", action="store_true", help="tests: 20 users, 5 items, 4 dims, INSECURE moduli"
    )
    fedmf.add_argument("--items", type=int, nargs="+", help="item counts (default 40 80 160)")
    fedmf.add_argument(
        "--users", dest="n_users", type=int, help="users (default 610; ignored with --movielens)"
    )
    fedmf.add_argument("--dim", dest="latent_dim", type=int, help="latent dimension (default 100)")
    fedmf.add_argument("--iterations", type=int, help="iterations, every user each (default 1)")
    fedmf.add_argument("--paillier-bits", type=int, nargs="*", help="Paillier key sizes (default 1024 2048)")
    fedmf.add_argument(
        "--texts", nargs="+", choices=("full", "part"), help="Paillier settings (default both)"
    )
    fedmf.add_argument(
        "--paillier-budget-s", type=float, help="seconds of whole users measured per Paillier setting (20)"
    )
    fedmf.add_argument("--movielens", metavar="PATH", help="ml-latest-small ratings.csv (default: synthetic)")
    fedmf.add_argument(
        "--modulus-bits", type=int, choices=(2048, 3072), help="RSA modulus |N| of fedcast (default 2048)"
    )
    fedmf.add_argument("--insecure-test-group", action="store_true", help="512-bit INSECURE N (tests)")
    fedmf.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    fedmf.add_argument("--quiet", action="store_true", help="no progress on stderr")
    fedmf.add_argument("--seed", type=int, default=0)
    _add_plot_arg(fedmf)
    fedmf.set_defaults(handler=_cmd_bench_fedmf)

    scale = benches.add_parser("scale", help="aggregator cost vs clients x parameters; a Pi-class client")
    size = scale.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="10 clients x 10,000 params, Pi run at 10,000")
    size.add_argument("--small", action="store_true", help="tests: tiny sizes, INSECURE modulus")
    scale.add_argument("--clients", type=int, nargs="+", help="client counts N (default 10 100 1000)")
    scale.add_argument("--params", type=int, nargs="+", help="parameter counts n (default 1e4 1e5 1e6)")
    scale.add_argument("--cell-budget-s", type=float, help="skip cells whose uploads take longer (600)")
    scale.add_argument("--table-memory-mb", type=int, help="client table budget, MiB (default 256)")
    scale.add_argument(
        "--members", dest="challenge_members", type=int, help="members whose proofs a client checks (100)"
    )
    scale.add_argument("--no-pi", action="store_true", help="skip the Pi-class client run")
    scale.add_argument("--pi-params", type=int, help="Pi run parameters (default 100000)")
    scale.add_argument("--pi-as-mb", dest="pi_address_space_mb", type=int, help="Pi RLIMIT_AS, MiB (512)")
    scale.add_argument("--pi-table-mb", type=int, nargs="+", help="Pi table budgets, MiB (default 64 256)")
    scale.add_argument("--modulus-bits", type=int, choices=(2048, 3072), help="RSA modulus (default 2048)")
    scale.add_argument("--insecure-test-group", action="store_true", help="512-bit INSECURE N (tests)")
    scale.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    scale.add_argument("--quiet", action="store_true", help="no progress on stderr")
    scale.add_argument("--seed", type=int, default=0)
    _add_plot_arg(scale)
    scale.set_defaults(handler=_cmd_bench_scale)

    e2e = benches.add_parser(
        "e2e", help="a federation over RabbitMQ, one process per party: fedcast vs plaintext"
    )
    e2e.add_argument("--quick", action="store_true", help="3 clients, 2,000 params, 2 rounds (a smoke run)")
    e2e.add_argument("--clients", type=int, nargs="+", help="edge client counts (default 8 32)")
    e2e.add_argument("--schemes", nargs="+", choices=("plaintext", "fedcast"), help="default both")
    e2e.add_argument("--rounds", type=int, help="measured rounds per cell, after 1 warm-up (default 5)")
    e2e.add_argument("--items", dest="n_items", type=int, help="FedMF items (default 4000: 20,000 params)")
    e2e.add_argument("--dim", dest="latent_dim", type=int, help="FedMF latent dimension (default 5)")
    e2e.add_argument("--table-memory-mb", type=float, help="FEDCAST_TABLE_MEMORY_MB per edge (default 48)")
    e2e.add_argument(
        "--amqp", dest="amqp_url", help="broker URL (default amqp://guest:guest@127.0.0.1:5672/)"
    )
    e2e.add_argument(
        "--modulus-bits", type=int, choices=(2048, 3072), help="FEDCAST_MODULUS_BITS, key service (2048)"
    )
    e2e.add_argument("--cell-timeout-s", type=float, help="give up on a cell after this long (default 600)")
    e2e.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    e2e.add_argument("--quiet", action="store_true", help="no progress on stderr")
    e2e.add_argument("--seed", type=int, default=0)
    e2e.set_defaults(handler=_cmd_bench_e2e)

    peers = benches.add_parser("peers", help="Flower's SecAgg+ (in-process) next to fedcast's ElGamal sum")
    peers.add_argument("--quick", action="store_true", help="one cell: 10 clients, 10,000 params")
    peers.add_argument("--clients", type=int, nargs="+", help="client counts N (default 10 50 100)")
    peers.add_argument("--params", type=int, nargs="+", help="parameter counts n (default 10000 100000)")
    peers.add_argument(
        "--settings", nargs="+", choices=("flower-3/2", "flower-all/half", "fedcast"), help="default all"
    )
    peers.add_argument(
        "--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="fedcast's RSA modulus |N|"
    )
    peers.add_argument(
        "--min-online",
        type=int,
        help="smallest online set fedcast's clients accept (default 3): bounds the collusion it tolerates",
    )
    peers.add_argument("--table-memory-mb", type=int, help="fedcast client table budget, MiB (default 256)")
    peers.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    peers.add_argument("--quiet", action="store_true", help="no progress on stderr")
    peers.add_argument("--seed", type=int, default=0)
    peers.set_defaults(handler=_cmd_bench_peers)

    sim = benches.add_parser(
        "simulate", help="seconds per round of the whole protocol in one process tree (ProtocolSum)"
    )
    sim.add_argument("--clients", type=int, default=943, help="clients, one user each (default 943)")
    sim.add_argument("--params", type=int, default=8410, help="values per upload (default 8410)")
    sim.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    sim.add_argument("--workers", type=int, help="client worker processes (default: one per CPU)")
    sim.add_argument("--baseline", action="store_true", help="also ElGamalSum (crypto only, one core)")
    sim.add_argument(
        "--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="RSA modulus |N| (2048)"
    )
    sim.add_argument("--insecure-test-group", action="store_true", help="512-bit INSECURE N (tests)")
    sim.add_argument(
        "--floor",
        action="store_true",
        help="instead, time only the crypto every client must do per round, step by step: the "
        "floor under a round of --clients clients on --workers cores (default: every CPU)",
    )
    sim.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH ('-': stdout)")
    sim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(handler=_cmd_bench_simulate)

    report = benches.add_parser("report", help="run every bench and regenerate docs/BENCHMARKS.md")
    report.add_argument("--quick", action="store_true", help="reduced sizes (minutes, not the workloads)")
    report.add_argument(
        "--out", default="docs/BENCHMARKS.md", help="Markdown file (default docs/BENCHMARKS.md)"
    )
    report.add_argument("--plot-dir", default="docs/bench", help="plots and JSON rows (default docs/bench)")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    report.add_argument("--movielens", metavar="PATH", help="ml-latest-small ratings.csv for the fedmf bench")
    report.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated benches to re-run (e.g. fedmf,scale); their sections replace the old ones",
    )
    report.add_argument(
        "--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="RSA modulus |N| of every bench"
    )
    report.set_defaults(handler=_cmd_bench_report)
