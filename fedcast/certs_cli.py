"""``fedcast certs``: a small CA and leaf certificates for compose and development.

``fedcast certs init --dir D`` makes ``D/ca.pem`` (0644) and ``D/ca-key.pem`` (0600);
``fedcast certs issue NAME --dir D --server --dns rabbitmq`` or ``... --client`` makes
``D/NAME.pem`` and ``D/NAME-key.pem`` (0600). A Kubernetes cluster uses cert-manager
instead (docs/DEPLOY.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.keystore import write_bytes_atomic
from fedcast.shared.tls import CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS, IssuedCertificate, issue, make_ca

__all__ = ["add_certs_commands"]


def _positive_days(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 36500:
        raise argparse.ArgumentTypeError("days must be in 1..36500")
    return value


def _write(directory: Path, name: str, issued: IssuedCertificate, *, force: bool) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise ConfigurationError(f"{path} exists: refusing to overwrite it (--force replaces it)")
    write_bytes_atomic(key_path, issued.key_pem, secret=True)
    write_bytes_atomic(cert_path, issued.cert_pem, secret=False)
    return cert_path, key_path


def _read_ca(directory: Path) -> IssuedCertificate:
    try:
        return IssuedCertificate((directory / "ca.pem").read_bytes(), (directory / "ca-key.pem").read_bytes())
    except OSError as exc:
        raise ConfigurationError(
            f"no CA in {directory} (run `fedcast certs init --dir {directory}`): {exc}"
        ) from exc


def _cmd_certs(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.action == "init":
        cert, key = _write(directory, "ca", make_ca(args.cn, days=args.days), force=args.force)
    else:
        if args.name == "ca":
            raise ConfigurationError("'ca' is the CA's own file name; choose another")
        leaf = issue(
            _read_ca(directory),
            args.name,
            dns=args.dns,
            ips=args.ip,
            server=args.server,
            client=args.client,
            days=args.days,
        )
        cert, key = _write(directory, args.name, leaf, force=args.force)
    print(f"wrote {cert} and {key} (0600)")
    return 0


def add_certs_commands(commands: Any) -> None:
    certs = commands.add_parser("certs", help="a small CA and TLS certificates for compose and development")
    actions = certs.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="make the CA: DIR/ca.pem and DIR/ca-key.pem (0600)")
    init.add_argument("--cn", default="fedcast development CA", help="the CA's common name")
    init.add_argument("--days", type=_positive_days, default=CA_VALIDITY_DAYS)
    leaf = actions.add_parser(
        "issue", help="issue DIR/NAME.pem and DIR/NAME-key.pem (0600), signed by the CA"
    )
    leaf.add_argument("name", help="common name: the broker's host, or the device's id")
    leaf.add_argument("--dns", action="append", default=[], help="a DNS name the server answers as (repeat)")
    leaf.add_argument(
        "--ip", action="append", default=[], help="an IP address the server answers on (repeat)"
    )
    leaf.add_argument("--server", action="store_true", help="a server (broker) certificate")
    leaf.add_argument("--client", action="store_true", help="a client certificate (mutual TLS)")
    leaf.add_argument("--days", type=_positive_days, default=LEAF_VALIDITY_DAYS)
    for parser in (init, leaf):
        parser.add_argument("--dir", required=True, help="where the CA and the certificates live")
        parser.add_argument("--force", action="store_true", help="replace existing files")
        parser.set_defaults(handler=_cmd_certs)
