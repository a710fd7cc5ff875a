"""``fedcast <subcommand>``: the one command line of the project."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcast",
        description="Privacy-preserving federated learning for Industrial IoT fleets.",
    )
    parser.add_argument("--version", action="version", version=f"fedcast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<subcommand>")

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
    return parser


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
