"""``fedcast <subcommand>``: the one command line of the project."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from fedcast.services_cli import add_service_commands
from shared import __version__
from shared.errors import FedcastError

__all__ = ["build_parser", "main"]


def _progress(quiet: bool) -> Any:
    start = time.perf_counter()

    def report(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    return report


def _cmd_bench_crypto(args: argparse.Namespace) -> int:
    from fedcast.bench.crypto import JSON_KEYS, TABLE_COLUMNS, CryptoBenchConfig, notes, run_crypto_bench
    from fedcast.bench.report import format_table

    base = CryptoBenchConfig.quick() if args.quick else CryptoBenchConfig()
    config = CryptoBenchConfig(
        n_params=tuple(args.params) if args.params else base.n_params,
        n_clients=tuple(args.clients) if args.clients else base.n_clients,
        p_bits=args.p_bits,
        paillier_sample=base.paillier_sample,
        table_memory_bytes=args.table_memory_mb * 1024 * 1024,
        seed=args.seed,
    )
    rows = run_crypto_bench(config, progress=_progress(args.json))
    if args.json:
        json.dump([{k: row[k] for k in JSON_KEYS} for row in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(rows, TABLE_COLUMNS))
        for line in notes(config):
            print(f"  * {line}")
    return 0


def _elgamal_scheme(args: argparse.Namespace, clip: float) -> Any:
    from shared.crypto.group import generate_group
    from shared.encoding import FixedPointEncoding
    from shared.params import SystemParams
    from shared.schemes import ElGamalSum

    params = SystemParams(generate_group(args.p_bits), FixedPointEncoding(args.frac_bits, clip))
    return ElGamalSum(params, seed=args.seed)


def _cmd_bench_learning(args: argparse.Namespace) -> int:
    from shared.learning.experiments import run_learning_parity

    report = _progress(args.json)
    secure = _elgamal_scheme(args, args.clip)
    report(f"parity run: {args.rounds} rounds, secure scheme {secure.name} |p|={args.p_bits}")
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

    from shared.learning.loaders import load_movielens_100k
    from shared.learning.masks import MaskConfig, compare_fedmf_fedmmf

    data = load_movielens_100k(args.ml100k) if args.ml100k else None
    result = compare_fedmf_fedmmf(
        seeds=tuple(args.seeds), data=data, mask_config=MaskConfig(order=args.order)
    )
    rows = asdict(result)
    if args.json:
        print(json.dumps({**rows, "data": "ml-100k" if data else "synthetic", "order": args.order}))
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


def _cmd_attack(args: argparse.Namespace) -> int:
    from shared.learning.experiments import run_attack_demo

    secure = _elgamal_scheme(args, 8.0)
    result = run_attack_demo(args.seed, secure=secure)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"victim: client 0, items {result['items']}")
    print(f"  true ratings      {[round(r, 3) for r in result['true_ratings']]}")
    print(f"  recovered ratings {[round(r, 3) for r in result['recovered_ratings']]}")
    print(result["statement"])
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from fedcast.demo import DemoConfig, main_json, print_summary, run_demo, run_demo_observed
    from services.observability import ObservabilityConfig

    config = DemoConfig(
        n_clients=args.clients,
        rounds=args.rounds,
        amqp_url=args.amqp,
        p_bits=args.p_bits,
        seed=args.seed,
    )
    report = _progress(args.json)
    if args.metrics_port:
        observability = ObservabilityConfig.from_env(metrics_port=args.metrics_port)
        result = asyncio.run(run_demo_observed(config, observability, progress=report))
    else:
        result = asyncio.run(run_demo(config, progress=report))
    if args.json:
        print(main_json(result))
    else:
        print_summary(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcast",
        description="Privacy-preserving federated learning for Industrial IoT fleets.",
    )
    parser.add_argument("--version", action="version", version=f"fedcast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<subcommand>")

    demo = commands.add_parser("demo", help="a whole federation in one process (no broker needed)")
    demo.add_argument("--clients", type=int, default=8, help="edge clients (default 8)")
    demo.add_argument("--rounds", type=int, default=100, help="rounds to run (default 100)")
    demo.add_argument("--amqp", metavar="URL", help="run through RabbitMQ instead of in-process")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    demo.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz for the whole federation on PORT (default: off)",
    )
    _add_group_args(demo)
    demo.set_defaults(handler=_cmd_demo)

    add_service_commands(commands)

    bench = commands.add_parser("bench", help="run a benchmark (prints a table, or JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="<benchmark>")
    crypto = benches.add_parser("crypto", help="encryption, wire size, aggregation and decryption costs")
    crypto.add_argument("--quick", action="store_true", help="one small cell (10,000 params, 10 clients)")
    crypto.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    crypto.add_argument("--params", type=int, nargs="+", help="parameter counts (default 10000 100000)")
    crypto.add_argument("--clients", type=int, nargs="+", help="client counts (default 10 100)")
    crypto.add_argument("--p-bits", type=int, default=2048, choices=(2048, 3072), help="group size")
    crypto.add_argument(
        "--table-memory-mb", type=int, default=256, help="client fixed-base table budget (MiB)"
    )
    crypto.add_argument("--seed", type=int, default=0)
    crypto.set_defaults(handler=_cmd_bench_crypto)

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
    masks.add_argument("--json", action="store_true")
    masks.set_defaults(handler=_cmd_bench_masks)

    attack = commands.add_parser("attack", help="the FedMF gradient-leakage attack, plaintext vs secure")
    attack.add_argument("--demo", action="store_true", required=True, help="run the demonstration")
    attack.add_argument("--json", action="store_true")
    _add_group_args(attack)
    attack.set_defaults(handler=_cmd_attack)
    return parser


def _add_group_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p-bits", type=int, default=2048, choices=(2048, 3072), help="group size")
    parser.add_argument("--frac-bits", type=int, default=16, help="fixed-point fraction bits")
    parser.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except FedcastError as exc:
        print(f"fedcast: error: {exc} [{exc.reason}]", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
