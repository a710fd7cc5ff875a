"""Helpers shared by the ``fedcast`` subcommands (progress lines, group flags, the ElGamal scheme,
argparse types for integers that must lie in a range)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "add_group_args",
    "elgamal_scheme",
    "int_at_least",
    "int_in_range",
    "non_negative_int",
    "port",
    "positive_int",
    "progress",
]


def int_in_range(low: int, high: int | None = None, *, why: str = "") -> Callable[[str], int]:
    """An argparse ``type``: a whole number in [low, high], refused with a message that says so.

    argparse turns the ArgumentTypeError into ``fedcast <cmd>: error: argument --x: <message>``
    and exit status 2 before anything runs (``--rounds -5`` used to run one round, ``--rounds 0``
    an aggregator forever). ``why`` is appended to the message.
    """

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}{why}, got {value}")
        return value

    parse.__name__ = f"int_in_range({low}, {high})"
    return parse


def int_at_least(low: int, *, why: str = "") -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``low``."""
    return int_in_range(low, why=why)


positive_int = int_at_least(1)
"""Counts such as rounds: 1 or more."""
non_negative_int = int_at_least(0)
"""Seeds: numpy refuses negative ones."""
port = int_in_range(0, 65535, why=" (0 turns it off)")
"""A TCP port to listen on; 0 turns the listener off."""


def progress(quiet: bool) -> Any:
    start = time.perf_counter()

    def report(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    return report


def elgamal_scheme(args: argparse.Namespace, clip: float) -> Any:
    from fedcast.shared.crypto.modulus import generate_group
    from fedcast.shared.encoding import FixedPointEncoding
    from fedcast.shared.params import SystemParams
    from fedcast.shared.schemes import ElGamalSum

    params = SystemParams(generate_group(args.modulus_bits), FixedPointEncoding(args.frac_bits, clip))
    return ElGamalSum(params, seed=args.seed)


def add_group_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modulus-bits", type=int, default=2048, choices=(2048, 3072), help="group size")
    parser.add_argument(
        "--frac-bits", type=int_in_range(0, 32), default=16, help="fixed-point fraction bits (0..32)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
