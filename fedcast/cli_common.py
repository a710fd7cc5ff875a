"""Helpers shared by the ``fedcast`` subcommands (progress lines, group flags, the ElGamal scheme)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["add_group_args", "elgamal_scheme", "progress"]


def progress(quiet: bool) -> Any:
    start = time.perf_counter()

    def report(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    return report


def elgamal_scheme(args: argparse.Namespace, clip: float) -> Any:
    from shared.crypto.modulus import generate_group
    from shared.encoding import FixedPointEncoding
    from shared.params import SystemParams
    from shared.schemes import ElGamalSum

    params = SystemParams(generate_group(args.modulus_bits), FixedPointEncoding(args.frac_bits, clip))
    return ElGamalSum(params, seed=args.seed)


def add_group_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="group size")
    parser.add_argument("--frac-bits", type=int, default=16, help="fixed-point fraction bits")
    parser.add_argument("--seed", type=int, default=0)
