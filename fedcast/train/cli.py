"""``fedcast train``: a whole federation in one process, on your data, with one command.

Exit status: 0 trained; 2 bad settings or data (one ``fedcast: error:`` line); 3 the training
diverged (a clear message; with ``--json`` the summary says ``"diverged": true``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedcast.train.config import BUILTIN_TASKS, SCHEMES, TrainConfig, load_toml

__all__ = ["EXIT_DIVERGED", "add_train_command", "settings_from"]

EXIT_DIVERGED = 3

# (flag, type, help) of every setting; argparse's default is None so that only the flags given
# override the --config file, and fields left unset keep the library defaults.
_SETTINGS: tuple[tuple[str, Any, str], ...] = (
    ("--rounds", int, "rounds to train (default 100)"),
    ("--seed", int, "seed of the holdout, the partition and every initialization (default 0)"),
    ("--test-fraction", float, "share of each client's data held out for testing (default 0.2)"),
    ("--clients", int, "clients (MF default: one user per client; FedAvg default: 10)"),
    ("--latent-dim", int, "MF: latent dimension d"),
    ("--optimizer", str, "MF: precond (default: per-user ridge solve, curvature-scaled item step) or gd"),
    ("--step-size", float, "MF precond: share of the full step per round, in (0, 1] (default 1)"),
    (
        "--learning-rate",
        float,
        "MF gd: the step gamma; FedAvg: the clients' SGD rate (default: the library's)",
    ),
    ("--reg-user", float, "MF: user regularization lambda"),
    ("--reg-item", float, "MF: item regularization mu"),
    ("--local-steps", int, "MF: user-vector updates per round"),
    ("--init-mean", float, "MF: mean of the initial factors"),
    ("--init-scale", float, "MF: spread of the initial factors"),
    ("--online-fraction", float, "MF: share of clients online each round (default 1)"),
    ("--mask-order", int, "fedmmf: 1 linear masks, 2 factorization-machine masks (default 1)"),
    ("--mask-ridge", float, "fedmmf: ridge of the mask models"),
    ("--hidden", int, "fedavg-mlp: hidden units (default 16)"),
    ("--local-epochs", int, "FedAvg: local epochs per round"),
    ("--batch-size", int, "FedAvg: local mini-batch size"),
    ("--clients-per-round", int, "FedAvg: clients sampled per round (default: all)"),
    ("--dirichlet-alpha", float, "FedAvg: label-skewed partition with this alpha (default: IID)"),
    ("--modulus-bits", int, "secure: RSA modulus size, 2048 or 3072 (default 2048)"),
    ("--frac-bits", int, "secure: fixed-point fraction bits (default 16)"),
    ("--clip", float, "secure: clip bound of the encoding (default: from the first round)"),
    ("--workers", int, "secure: processes for the simulated clients (default: one per core)"),
)


def add_train_command(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a federation in one process on your data (plaintext or the secure protocol)",
        description=(
            "Train FedMF, FedMMF, a FedAvg classifier or your own model (--task package.module:Name) "
            "with every client in this process. --scheme secure runs the real protocol (the same crypto "
            "and every check); only the broker is missing. Every setting is a flag and a key of the "
            "--config TOML file (flags win). See docs/TRAINING.md."
        ),
    )
    train.add_argument(
        "--task",
        default=None,
        help=f"{', '.join(BUILTIN_TASKS)}, or package.module:Name (a NumPyClient; docs/MODELS.md)",
    )
    train.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a MovieLens 100K directory, a MovieLens ratings.csv, a user,item,rating CSV, or for "
        "FedAvg a features .csv (label column) or .npz (x, y); default: built-in synthetic data",
    )
    train.add_argument("--scheme", choices=SCHEMES, default=None, help="plaintext (default) or secure")
    train.add_argument("--config", type=Path, metavar="FILE.toml", help="settings file (flags override it)")
    train.add_argument(
        "--out", default=None, metavar="DIR", help="where the model goes (default ./fedcast-model)"
    )
    for flag, kind, text in _SETTINGS:
        train.add_argument(flag, type=kind, default=None, help=text)
    train.add_argument("--log-json", metavar="PATH", help="one JSON object per round to PATH ('-': stdout)")
    train.add_argument("--plot", type=Path, metavar="FILE.png", help="write the learning curve as a PNG")
    train.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    train.set_defaults(handler=_cmd_train)


def settings_from(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the --config file, then every flag given on the command line."""
    values: dict[str, Any] = load_toml(args.config) if args.config is not None else {}
    for name in ("task", "data", "scheme", "out", *(flag[2:].replace("-", "_") for flag, _, _ in _SETTINGS)):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    return TrainConfig().updated(values)


def _cmd_train(args: argparse.Namespace) -> int:
    from fedcast.train.output import ProgressBar, dumps, json_line_writer, plot_curve, write_model
    from fedcast.train.runner import run_training

    config = settings_from(args)
    bar = ProgressBar(config.rounds, enabled=None if args.log_json != "-" and not args.json else False)
    write_line, close_lines = json_line_writer(args.log_json) if args.log_json else (None, lambda: None)

    def on_round(log: Any) -> None:
        bar.update(log)
        if write_line is not None:
            write_line(log)

    try:
        result = run_training(config, on_round=on_round)
    finally:
        bar.close()
        close_lines()
    summary = result.summary()
    if result.diverged:
        print(f"fedcast: training diverged: {result.divergence}", file=sys.stderr)
    else:
        files = write_model(result, config, config.out)
        if args.plot is not None:
            plot_curve(result, args.plot)
            files.append(args.plot)
        summary["files"] = [str(path) for path in files]
    if args.json:
        print(dumps(summary))
    else:
        _print_summary(summary)
    return EXIT_DIVERGED if result.diverged else 0


def _print_summary(summary: dict[str, Any]) -> None:
    task, scheme = summary["task"], summary["scheme"]
    print(f"task {task}, scheme {scheme}: {summary['rounds']} rounds in {summary['seconds']} s")
    for key in ("rmse_test", "mae_test", "accuracy_test", "loss_test"):
        if key in summary:
            value = summary[key]
            print(f"  {key:14} {'-' if value is None else f'{value:.4f}'}")
    for path in summary.get("files", []):
        print(f"  wrote {path}")
