"""``fedcast broker``: provision a federation on RabbitMQ (topology, one user per party).

Run by the operator with the broker administrator's management-API URL
(``--admin-url`` or ``FEDCAST_BROKER_ADMIN_URL``, ``http(s)://admin:password@host:15672``);
the running services never hold it.

* ``setup``: the two exchanges, the aggregator's and the key service's queues and
  bindings, and their users with their grants (shared/transport/brokeradmin.py); prints
  the two users' credentials once, as JSON.
* ``add-device ID``: the device's queue and reply queue with their bindings, and its user;
  prints the device's credentials once, as JSON.
* ``remove-device ID``: deletes the device's user (the broker closes its connections at
  once) and its queues. ``fedcast keyserver revoke`` does the same when the admin URL is set.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.transport.amqp import AmqpConfig
from fedcast.shared.transport.brokeradmin import (
    BrokerAdmin,
    admin_from_env,
    aggregator_grant,
    check_id,
    device_grant,
    device_user,
    keyserver_grant,
    reply_key,
)

__all__ = ["add_broker_commands", "provision_device", "provision_services", "remove_device"]


def _queue_args(federation: str, endpoint: str) -> dict[str, str | int]:
    # The transport's own declaration arguments: a service that declares (dev mode) and the
    # provisioned queue must agree, else the broker refuses the declaration.
    return dict(AmqpConfig("amqp://provisioning/", federation).queue_arguments(endpoint))


def _queue(federation: str, endpoint: str) -> str:
    return f"fedcast.{federation}.{endpoint}"


def provision_services(admin: BrokerAdmin, federation: str) -> dict[str, dict[str, str]]:
    """Exchanges, the services' queues and users; returns {party: {user, password}}."""
    exchange = f"fedcast.{federation}"
    admin.declare_exchange(exchange, "topic")
    admin.declare_exchange(f"{exchange}.broadcast", "fanout")
    for endpoint in ("aggregator", "keyserver", reply_key("aggregator")):
        name = _queue(federation, endpoint)
        admin.declare_queue(name, _queue_args(federation, endpoint))
        admin.bind(exchange, name, endpoint)
    users: dict[str, dict[str, str]] = {}
    for party, grant in (
        ("aggregator", aggregator_grant(federation)),
        ("keyserver", keyserver_grant(federation)),
    ):
        user = f"fedcast.{federation}.{party}"
        users[party] = {"user": user, "password": admin.put_user(user)}
        admin.grant(user, exchange, grant)
    return users


def provision_device(admin: BrokerAdmin, federation: str, client_id: str) -> dict[str, str]:
    """The device's queues, bindings and user; returns {user, password}."""
    check_id(client_id, "client id")
    exchange = f"fedcast.{federation}"
    endpoint = f"client.{client_id}"
    own, replies = _queue(federation, endpoint), _queue(federation, reply_key(endpoint))
    admin.declare_queue(own, _queue_args(federation, endpoint))
    admin.bind(exchange, own, endpoint)
    admin.bind(f"{exchange}.broadcast", own, "")
    admin.declare_queue(replies, _queue_args(federation, reply_key(endpoint)))
    admin.bind(exchange, replies, reply_key(endpoint))
    user = device_user(federation, client_id)
    password = admin.put_user(user)
    admin.grant(user, exchange, device_grant(federation, client_id))
    return {"user": user, "password": password}


def remove_device(admin: BrokerAdmin, federation: str, client_id: str) -> bool:
    """Delete the device's user (closing its connections) and its queues; False if it had no user."""
    check_id(client_id, "client id")
    existed = admin.delete_user(device_user(federation, client_id))
    endpoint = f"client.{client_id}"
    admin.delete_queue(_queue(federation, endpoint))
    admin.delete_queue(_queue(federation, reply_key(endpoint)))
    return existed


def _admin(args: argparse.Namespace) -> BrokerAdmin:
    admin = admin_from_env(os.environ, args.admin_url, vhost=args.vhost)
    if admin is None:
        raise ConfigurationError("set FEDCAST_BROKER_ADMIN_URL (or --admin-url): the management API's URL")
    return admin


def _cmd_broker(args: argparse.Namespace) -> int:
    federation = check_id(args.federation or os.environ.get("FEDCAST_FEDERATION", "default"), "federation")
    admin = _admin(args)
    if args.action == "setup":
        print(json.dumps(provision_services(admin, federation), indent=2))
    elif args.action == "add-device":
        print(json.dumps(provision_device(admin, federation, args.client_id), indent=2))
    else:
        if not remove_device(admin, federation, args.client_id):
            print(f"device {args.client_id} had no broker user")
    return 0


def add_broker_commands(commands: Any) -> None:
    broker = commands.add_parser(
        "broker", help="provision the federation on RabbitMQ: topology and one least-privilege user per party"
    )
    actions = broker.add_subparsers(dest="action", required=True)
    setup = actions.add_parser(
        "setup", help="exchanges, service queues and the services' users (prints them once)"
    )
    add = actions.add_parser(
        "add-device", help="a device's queues and broker user (prints its credentials once)"
    )
    add.add_argument("client_id")
    remove = actions.add_parser(
        "remove-device", help="delete a device's broker user (closing it) and its queues"
    )
    remove.add_argument("client_id")
    for parser in (setup, add, remove):
        parser.add_argument("--admin-url", help="management API URL (default: $FEDCAST_BROKER_ADMIN_URL)")
        parser.add_argument("--federation", help="federation id (default: $FEDCAST_FEDERATION or 'default')")
        parser.add_argument("--vhost", default="/", help="the broker's virtual host (default /)")
        parser.set_defaults(handler=_cmd_broker)
