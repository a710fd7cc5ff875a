"""``fedcast keyserver | aggregator | edge``: run a service, configured by ``FEDCAST_*`` variables.

Each service runs until SIGTERM or SIGINT, then stops consuming, finishes the
step in progress, closes its broker connection and exits 0. Flags override the
environment for the few settings an operator types by hand.

Every service also serves ``/metrics``, ``/healthz`` and ``/readyz`` on
``FEDCAST_METRICS_PORT`` (``--metrics-port``; 9100, 0 disables) from before it
connects to the broker, so liveness holds during a slow start while readiness
waits for the service; an edge client with ``FEDCAST_PUSHGATEWAY_URL`` set also
pushes its metrics (see :mod:`fedcast.services.observability` and docs/METRICS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcast.broker_cli import provision_device, remove_device
from fedcast.bundle import DEVICE_CA_PATH, DeviceBundle, canonical_ca_pem, check_namespace, secret_name
from fedcast.cli_common import port, positive_int
from fedcast.services.aggregator.export import export_model
from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.edge_client.service import EdgeClientService, EdgeConfig
from fedcast.services.envconfig import env_path, env_str, task_from_env
from fedcast.services.keyserver.service import VERIFY_KEY_FILE, KeyServer, KeyServerConfig
from fedcast.services.keyserver.store import DeviceRecord, RegistryStore
from fedcast.services.lifecycle import run_until_stopped
from fedcast.services.observability import (
    MetricsServer,
    ObservabilityConfig,
    PushgatewayPusher,
    initialize_series,
)
from fedcast.services.runtime import (
    configure_logging,
    install_stop_signals,
    make_transport,
    retry_while_unreachable,
)
from fedcast.shared.errors import ConfigurationError, FedcastError, KeyStorageError
from fedcast.shared.keystore import read_json
from fedcast.shared.transport.base import client_endpoint
from fedcast.shared.transport.brokeradmin import admin_from_env

__all__ = ["add_service_commands"]


def _amqp_url(args: argparse.Namespace) -> str:
    url: str = args.amqp or os.environ.get("FEDCAST_AMQP_URL", "")
    if not url:
        raise ConfigurationError("set FEDCAST_AMQP_URL (or --amqp): services talk through RabbitMQ")
    return url


def _observability(args: argparse.Namespace) -> ObservabilityConfig:
    return ObservabilityConfig.from_env(metrics_port=getattr(args, "metrics_port", None))


async def _observed(
    service: str,
    run: Callable[[asyncio.Event], Awaitable[None]],
    ready: Callable[[], bool],
    observability: ObservabilityConfig,
    *,
    push_instance: str | None = None,
) -> None:
    """Run ``run(stop)`` until SIGTERM/SIGINT with the metrics endpoints (and pusher) around it."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    initialize_series(service)
    server: MetricsServer | None = None
    if observability.metrics_port:
        # Not ready once stopping: Kubernetes takes the pod out of rotation while it drains.
        server = MetricsServer(
            lambda: ready() and not stop.is_set(),
            port=observability.metrics_port,
            host=observability.metrics_host,
        )
    pusher: PushgatewayPusher | None = None
    if observability.pushgateway_url and push_instance:
        pusher = PushgatewayPusher(
            observability.pushgateway_url, instance=push_instance, interval_s=observability.push_interval_s
        )
    clean = False
    try:
        if server is not None:
            await server.start()
        if pusher is not None:
            await pusher.start()
        # Bounded: a service still starting (waiting for the key service or the broker)
        # is cancelled after the grace period instead of ignoring SIGTERM.
        await run_until_stopped(run, stop, name=service)
        clean = True
    finally:
        if pusher is not None:
            # Clean stop: remove the group so a retired device leaves the dashboards. After a crash
            # keep its last push, whose push_time_seconds shows operators when it went silent.
            await pusher.close(delete=clean)
        if server is not None:
            await server.close()


async def _serve_keyserver(config: KeyServerConfig, url: str, observability: ObservabilityConfig) -> None:
    transport = make_transport(url, config.federation, service="keyserver", identity="keyserver")
    keyserver = KeyServer(config, transport)

    async def run(stop: asyncio.Event) -> None:
        await retry_while_unreachable(transport.connect, what="broker")
        try:
            await keyserver.run(stop)
        finally:
            await transport.close()

    await _observed("keyserver", run, lambda: keyserver.is_ready, observability)


def _keyserver_config(args: argparse.Namespace) -> KeyServerConfig:
    config = KeyServerConfig.from_env()
    if args.state_dir:
        config = KeyServerConfig(**{**config.__dict__, "state_dir": Path(args.state_dir)})
    return config


def _utc(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC to the second: the same text wherever the operator's shell runs."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _device_rows(devices: Sequence[DeviceRecord]) -> list[dict[str, str | None]]:
    return [
        {
            "client_id": d.client_id,
            "status": d.status.value,
            "provisioned_at": _utc(d.provisioned_at),
            "enrolled_at": _utc(d.enrolled_at),
            "revoked_at": _utc(d.revoked_at),
        }
        for d in devices
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _list_devices(config: KeyServerConfig, *, as_json: bool) -> str:
    """``keyserver list``: every device of the registry, as a table or a JSON list."""
    if not config.registry_path.is_file():
        # Opening would create an empty registry: a mistyped --state-dir would then list nothing, silently.
        raise ConfigurationError(
            f"no registry at {config.registry_path}: set FEDCAST_STATE_DIR (or --state-dir) to the key "
            "service's state directory"
        )
    with RegistryStore(config.registry_path) as store:
        store.bind_federation(config.federation)
        rows = _device_rows(store.list_devices())
    if as_json:
        return json.dumps(rows, indent=2)
    columns = ("client_id", "status", "provisioned_at", "enrolled_at", "revoked_at")
    header = ("DEVICE", "STATUS", "PROVISIONED", "ENROLLED", "REVOKED")
    return _table(header, [[row[c] or "-" for c in columns] for row in rows])


def _provision_token(args: argparse.Namespace, config: KeyServerConfig) -> str:
    with RegistryStore(config.registry_path) as store:
        store.bind_federation(config.federation)
        return store.provision_device(
            args.client_id, reprovision=args.reprovision, force_active=args.force_active
        )


def _add_device(args: argparse.Namespace, config: KeyServerConfig) -> int:
    """``keyserver add-device``: print the token, or with ``--bundle`` write the device's bundle."""
    if args.bundle is None:
        given = [
            flag
            for flag, value in (
                ("--amqp-host", args.amqp_host),
                ("--ca-file", args.ca_file),
                ("--namespace", args.namespace),
            )
            if value is not None
        ]
        if given:
            raise ConfigurationError(f"{', '.join(given)} only apply with --bundle DIR")
        print(_provision_token(args, config))
        return 0
    return _add_device_with_bundle(args, config)


def _verify_key_hex(config: KeyServerConfig) -> str:
    path = config.state_dir / VERIFY_KEY_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"no verify key at {path}: the key service has never started with this state directory "
            "(FEDCAST_STATE_DIR or --state-dir); start it once, then add the device"
        )
    verify_key = read_json(path).get("verify_key")
    if not isinstance(verify_key, str):
        raise ConfigurationError(f"{path} holds no verify key")
    return verify_key


def _amqp_address(value: str, *, tls: bool) -> str:
    """``--amqp-host HOST[:PORT]`` as ``host:port`` (5671 for amqps, 5672 for amqp by default)."""
    try:
        parts = urllib.parse.urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"--amqp-host must be HOST:PORT, got {value!r}") from None
    if (
        not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(f"--amqp-host must be HOST:PORT (no user, password or path), got {value!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port or (5671 if tls else 5672)}"


def _device_amqp_url(address: str, login: dict[str, str], *, tls: bool) -> str:
    user, password = (urllib.parse.quote(login[k], safe="") for k in ("user", "password"))
    return f"{'amqps' if tls else 'amqp'}://{user}:{password}@{address}/"


def _federation_settings(config: KeyServerConfig) -> dict[str, str]:
    """What the device must agree on with the federation besides its id: min online set, task."""
    settings = {"FEDCAST_MIN_ONLINE": str(config.min_online)}
    for name, value in os.environ.items():
        if (name == "FEDCAST_TASK" or name.startswith("FEDCAST_TASK_")) and value.strip():
            settings[name] = value.strip()
    return settings


def _add_device_with_bundle(args: argparse.Namespace, config: KeyServerConfig) -> int:
    """Token, and broker user when FEDCAST_BROKER_ADMIN_URL is set, written as the device's bundle.

    Everything that can be checked is checked before the token is issued (it exists only
    in the bundle), and a broker that fails after it still gets the token written.
    """
    verify_key = _verify_key_hex(config)
    tls = args.ca_file is not None
    ca_pem: bytes | None = None
    if args.ca_file is not None:
        try:
            ca_pem = canonical_ca_pem(Path(args.ca_file).read_bytes())
        except OSError as exc:
            raise ConfigurationError(f"cannot read --ca-file {args.ca_file}: {exc.strerror}") from exc
    namespace = args.namespace or "fedcast"
    check_namespace(namespace)
    admin = admin_from_env(os.environ)
    address: str | None = None
    if admin is not None:
        if not args.amqp_host:
            raise ConfigurationError(
                "give --amqp-host HOST:PORT, the broker address the device dials: FEDCAST_BROKER_ADMIN_URL "
                "is set, so the bundle carries the device's broker login"
            )
        address = _amqp_address(args.amqp_host, tls=tls)
        if not tls:
            print(
                "fedcast: warning: no --ca-file: the device's broker login goes over plaintext amqp://; "
                "for development only",
                file=sys.stderr,
            )
    else:
        unused = " (--amqp-host is unused)" if args.amqp_host else ""
        print(
            "fedcast: note: FEDCAST_BROKER_ADMIN_URL is not set: the bundle carries no broker login; "
            f"set FEDCAST_AMQP_URL on the device{unused}",
            file=sys.stderr,
        )
    settings = _federation_settings(config)
    placeholder = "amqps" if tls else "amqp"
    DeviceBundle(  # refuses, before the token exists, what the bundle could not carry
        args.client_id,
        config.federation,
        "not-yet-issued",
        verify_key,
        amqp_url=None if address is None else f"{placeholder}://user:password@{address}/",
        ca_pem=ca_pem,
        settings=settings,
    )
    directory = Path(args.bundle)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the bundle directory {directory}: {exc.strerror}") from exc

    token = _provision_token(args, config)
    amqp_url: str | None = None
    broker_error: FedcastError | None = None
    if admin is not None and address is not None:
        try:
            amqp_url = _device_amqp_url(
                address, provision_device(admin, config.federation, args.client_id), tls=tls
            )
        except FedcastError as exc:
            broker_error = exc
    bundle = DeviceBundle(
        args.client_id,
        config.federation,
        token,
        verify_key,
        amqp_url=amqp_url,
        ca_pem=ca_pem,
        settings=settings,
    )
    try:
        paths = bundle.write(directory, namespace=namespace)
    except KeyStorageError as exc:
        raise KeyStorageError(
            f"{exc}; the token of {args.client_id} was issued but not saved: add the device again with "
            "--reprovision --force-active"
        ) from exc
    uses = {
        f"{args.client_id}.env": "env file: systemd EnvironmentFile= or compose env_file:",
        "ca.pem": f"the broker's CA: install it at {DEVICE_CA_PATH} on the device",
        f"{args.client_id}-secret.yaml": f"Secret {namespace}/{secret_name(args.client_id)}: kubectl apply",
    }
    print(f"device {args.client_id}: bundle written (it holds secrets; delete it once installed)")
    for path in paths:
        print(f"  {path}  ({path.stat().st_mode & 0o777:04o})  {uses[path.name]}")
    if not bundle.kubernetes_nameable:
        print(
            f"fedcast: note: no Kubernetes Secret: client id {args.client_id!r} cannot name one "
            "(lower-case letters, digits, '-' and '.')",
            file=sys.stderr,
        )
    if broker_error is not None:
        print(
            f"fedcast: error: the broker user of {args.client_id} was not created ({broker_error}); "
            "the bundle holds the token but no broker login: run "
            f"`fedcast broker add-device {args.client_id}` and set FEDCAST_AMQP_URL on the device",
            file=sys.stderr,
        )
        return 2
    return 0


def _cmd_keyserver(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = _keyserver_config(args)
    if args.action in ("add-device", "revoke"):
        # The operator may provision devices before the first start created the state dir.
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.action == "serve":
        asyncio.run(_serve_keyserver(config, _amqp_url(args), _observability(args)))
    elif args.action == "add-device":
        return _add_device(args, config)
    elif args.action == "revoke":
        with RegistryStore(config.registry_path) as store:
            store.bind_federation(config.federation)
            store.revoke(args.client_id)
        admin = admin_from_env(os.environ)
        if admin is not None:  # the broker user goes too: the broker closes the device's connections at once
            removed = remove_device(admin, config.federation, args.client_id)
            print(f"broker user of {args.client_id} {'deleted' if removed else 'did not exist'}")
    elif args.action == "list":
        print(_list_devices(config, as_json=args.json))
    elif args.action == "verify-key":
        print(read_json(config.state_dir / "verify-key.json")["verify_key"])
    return 0


def _task_override(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """``--task NAME`` replaces FEDCAST_TASK (the FEDCAST_TASK_* settings still apply)."""
    if getattr(args, "task", None):
        overrides["task"] = dataclasses.replace(task_from_env(os.environ), name=args.task)


def _task_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        metavar="NAME",
        help="fedmf, fedavg-logreg, fedavg-mlp or a model plugin package.module:Name (a fedcast.api "
        "NumPyClient factory on PYTHONPATH); default FEDCAST_TASK; aggregator and edges must agree",
    )


def _cmd_aggregator(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    overrides: dict[str, Any] = {"amqp_url": _amqp_url(args)}
    _task_override(args, overrides)
    if args.state_dir:
        overrides["state_dir"] = Path(args.state_dir)
    if args.rounds:
        overrides["max_rounds"] = args.rounds
    config = AggregatorConfig.from_env(**overrides)
    transport = make_transport(
        config.amqp_url, config.federation, service="aggregator", identity="aggregator"
    )
    aggregator = AggregatorService(config, transport)
    asyncio.run(_observed("aggregator", aggregator.run, lambda: aggregator.is_ready, _observability(args)))
    return 0


def _cmd_aggregator_export(args: argparse.Namespace) -> int:
    """``aggregator export --out FILE``: the newest good checkpoint as npz + JSON sidecar (0600)."""
    configure_logging(args.log_level)
    env = os.environ  # as the aggregator reads them; no token needed: nothing is registered
    given: str | None = getattr(args, "state_dir", None)
    default = Path("/var/lib/fedcast/aggregator")
    state_dir = Path(given) if given else env_path(env, "FEDCAST_STATE_DIR", default) or default
    task: dict[str, Any] = {"task": task_from_env(env)}
    _task_override(args, task)  # --task, as for the aggregator
    info = export_model(
        state_dir,
        Path(args.out),
        task["task"],
        federation=env_str(env, "FEDCAST_FEDERATION", "default"),
    )
    for name in info.skipped:
        print(f"fedcast: warning: {name} is damaged: exported the previous good checkpoint", file=sys.stderr)
    if args.json:
        print(json.dumps({**info.metadata, "out": str(info.out_path), "metadata": str(info.metadata_path)}))
    else:
        print(
            f"round {info.round} ({info.task}, {info.array} {'x'.join(map(str, info.shape))}) from "
            f"{info.checkpoint_file} (sha256 {info.checkpoint_sha256})\n"
            f"  {info.out_path}  (0600)\n  {info.metadata_path}  (0600)"
        )
    return 0


def _cmd_edge(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    overrides: dict[str, Any] = {"amqp_url": _amqp_url(args)}
    _task_override(args, overrides)
    if args.state_dir:
        overrides["state_dir"] = Path(args.state_dir)
    if args.client_id:
        overrides["client_id"] = args.client_id
    config = EdgeConfig.from_env(**overrides)
    transport = make_transport(
        config.amqp_url,
        config.federation,
        service=config.client_id,
        identity=client_endpoint(config.client_id),
    )
    edge = EdgeClientService(config, transport)
    observability = _observability(args)
    asyncio.run(
        _observed("edge", edge.run, lambda: edge.is_ready, observability, push_instance=config.client_id)
    )
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp", metavar="URL", help="RabbitMQ URL (default: FEDCAST_AMQP_URL)")
    parser.add_argument("--state-dir", help="state directory (default: FEDCAST_STATE_DIR)")
    parser.add_argument("--log-level", default=os.environ.get("FEDCAST_LOG_LEVEL", "INFO"))
    # SUPPRESS: a subcommand's parser must not reset a value given before the subcommand.
    parser.add_argument(
        "--metrics-port",
        type=port,
        default=argparse.SUPPRESS,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on PORT (default: FEDCAST_METRICS_PORT or 9100; 0: off)",
    )


def add_service_commands(commands: Any) -> None:
    """Register the three service subcommands on the top-level parser's subparsers."""
    keyserver = commands.add_parser("keyserver", help="run or administer the key service")
    actions = keyserver.add_subparsers(dest="action", metavar="<action>")
    actions.required = False
    keyserver.set_defaults(action="serve", handler=_cmd_keyserver)
    _common(keyserver)
    serve = actions.add_parser("serve", help="serve the registry over RabbitMQ (the default)")
    _common(serve)
    add = actions.add_parser(
        "add-device",
        help="provision a device; prints its enrollment token once (--bundle: writes the device's bundle)",
    )
    add.add_argument("client_id")
    add.add_argument(
        "--bundle",
        metavar="DIR",
        help="write the device's bundle to DIR instead of printing the token: <id>.env (systemd or compose), "
        "ca.pem, <id>-secret.yaml (Kubernetes); with FEDCAST_BROKER_ADMIN_URL set, also create the device's "
        "broker user and put its login in the bundle",
    )
    add.add_argument(
        "--amqp-host",
        metavar="HOST:PORT",
        help="with --bundle and a broker admin URL: the broker address the device dials "
        "(port default 5671 with --ca-file, else 5672)",
    )
    add.add_argument(
        "--ca-file",
        metavar="PATH",
        help="with --bundle: the broker's CA certificate, pinned by the device, which then uses amqps://",
    )
    add.add_argument(
        "--namespace",
        metavar="NS",
        help="with --bundle: the namespace of the device's Secret (default fedcast)",
    )
    add.add_argument(
        "--reprovision",
        action="store_true",
        help="replace a REVOKED device's token; refused for an active device unless --force-active",
    )
    add.add_argument(
        "--force-active",
        action="store_true",
        help="with --reprovision: also replace the token of a device that is not revoked; this un-enrolls "
        "an active device, which must enroll again with the new token",
    )
    _common(add)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a device; with FEDCAST_BROKER_ADMIN_URL set, also delete its broker user (closing it)",
    )
    revoke.add_argument("client_id")
    _common(revoke)
    listing = actions.add_parser(
        "list", help="list the devices with their state (provisioned, enrolled, revoked) and dates (UTC)"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    _common(listing)
    verify = actions.add_parser("verify-key", help="print the key service's verify key (clients pin it)")
    _common(verify)

    aggregator = commands.add_parser("aggregator", help="run the aggregator")
    _common(aggregator)
    aggregator.add_argument(
        "--rounds", type=positive_int, help="stop after this many rounds (default: run forever)"
    )
    _task_flag(aggregator)
    aggregator.set_defaults(handler=_cmd_aggregator)
    aggregator_actions = aggregator.add_subparsers(dest="action", metavar="<action>")
    aggregator_actions.required = False  # no action (None): run the aggregator, as always
    export = aggregator_actions.add_parser(
        "export",
        help="write the current model (the newest checkpoint that verifies) as an npz plus a JSON sidecar",
        description="Write the newest good checkpoint in the aggregator's state directory as OUT (npz, "
        "arrays only: item_factors for FedMF, params for FedAvg, and the metadata as JSON) and OUT with "
        ".json (task and hyper-parameters from FEDCAST_TASK*, round, shape, federation, version, "
        "checkpoint file and SHA-256). Both files are mode 0600: the model is readable only by the "
        "aggregator by design (docs/SECURITY.md); exporting it is the operator's decision.",
    )
    export.add_argument("--out", required=True, metavar="FILE", help="the npz to write (e.g. model.npz)")
    export.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help="the aggregator's state directory (default: FEDCAST_STATE_DIR)",
    )
    export.add_argument(
        "--task",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="as for the aggregator (default FEDCAST_TASK)",
    )
    export.add_argument("--json", action="store_true", help="print the metadata as JSON")
    export.set_defaults(handler=_cmd_aggregator_export)

    edge = commands.add_parser("edge", help="run an edge client")
    _common(edge)
    edge.add_argument("--client-id", help="this device's id (default: FEDCAST_CLIENT_ID)")
    _task_flag(edge)
    edge.set_defaults(handler=_cmd_edge)
