"""``fedcast <subcommand>``: the one command line of the project."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fedcast.attacks import SCENARIO_NAMES
from fedcast.bench_cli import add_bench_commands
from fedcast.broker_cli import add_broker_commands
from fedcast.certs_cli import add_certs_commands
from fedcast.cli_common import add_group_args as _add_group_args
from fedcast.cli_common import elgamal_scheme as _elgamal_scheme
from fedcast.cli_common import int_at_least, port, positive_int
from fedcast.cli_common import progress as _progress
from fedcast.services_cli import add_service_commands
from fedcast.shared import __version__
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE
from fedcast.shared.errors import FedcastError
from fedcast.train.cli import add_train_command

__all__ = ["build_parser", "main"]


def _cmd_attack(args: argparse.Namespace) -> int:
    if args.demo:  # the FedMF leakage demo in its original output (--scenario leakage: as findings)
        from fedcast.shared.learning.experiments import run_attack_demo

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
    from fedcast.attacks.context import AttackContext
    from fedcast.attacks.report import render_json, render_text
    from fedcast.attacks.scenarios import run_scenarios

    bits = args.bits or args.modulus_bits
    _progress(args.json)(f"setting up a {bits}-bit modulus and the v1 target group")
    context = AttackContext.create(bits, args.seed)
    findings = run_scenarios(context, [args.scenario])
    print(render_json(findings) if args.json else render_text(findings, context.describe()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from fedcast.demo import DemoConfig, main_json, print_summary, run_demo, run_demo_observed
    from fedcast.services.observability import ObservabilityConfig

    config = DemoConfig(
        n_clients=args.clients,
        rounds=args.rounds,
        amqp_url=args.amqp,
        modulus_bits=args.modulus_bits,
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
    # Every demo client refuses an online set below DEFAULT_MIN_ONLINE members: with fewer clients
    # the aggregator would wait for ever (it used to hang with no message).
    clients = int_at_least(
        DEFAULT_MIN_ONLINE,
        why=f" (every client refuses an online set of fewer than {DEFAULT_MIN_ONLINE} members)",
    )
    demo.add_argument("--clients", type=clients, default=8, help="edge clients (default 8)")
    demo.add_argument("--rounds", type=positive_int, default=100, help="rounds to run (default 100)")
    demo.add_argument("--amqp", metavar="URL", help="run through RabbitMQ instead of in-process")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    demo.add_argument(
        "--metrics-port",
        type=port,
        default=0,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz for the whole federation on PORT (default: off)",
    )
    _add_group_args(demo)
    demo.set_defaults(handler=_cmd_demo)

    add_train_command(commands)
    add_service_commands(commands)
    add_broker_commands(commands)
    add_certs_commands(commands)

    add_bench_commands(commands)

    attack = commands.add_parser(
        "attack",
        help="the crypto note's attacks against the old construction and against v2",
        description=(
            "Run each attack against the construction it breaks (protocol v1, plaintext FedMF, or v2 "
            "without one defense) and, unchanged, against v2; 'recovered' is decided against the true "
            "secret values. Modulus sizes below 2048 bits are INSECURE deterministic test moduli, for speed."
        ),
    )
    mode = attack.add_mutually_exclusive_group()
    mode.add_argument(
        "--scenario",
        choices=(*SCENARIO_NAMES, "all"),
        default="all",
        help="which attack to run (default: all)",
    )
    mode.add_argument(
        "--demo", action="store_true", help="the FedMF leakage demo in its original output format"
    )
    attack.add_argument(
        "--bits",
        type=int,
        choices=(512, 1024, 2048, 3072),
        help="modulus size for the scenarios (default: --modulus-bits); 512, 1024: INSECURE test moduli",
    )
    attack.add_argument(
        "--json", action="store_true", help="a JSON list: one object per scenario and construction"
    )
    _add_group_args(attack)
    attack.set_defaults(handler=_cmd_attack)
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
