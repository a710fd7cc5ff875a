"""Broker provisioning through RabbitMQ's management HTTP API: topology, users, permissions.

Run by the operator's tooling (``fedcast broker ...``) with the broker's administrator
credentials, never by a running fedcast service: the services and the devices each get a
user of their own that can do its job and nothing else, and declare nothing themselves.

The rights of each party in federation ``F`` (``docs/SECURITY.md``, "Broker permissions"):

==============  ==============================  =========================  ============================
party           read (consume)                  write (publish to)         topic write on ``fedcast.F``
==============  ==============================  =========================  ============================
device ``D``    its queue and its reply queue   ``fedcast.F``              ``aggregator``, ``keyserver``
aggregator      its queue and its reply queue   ``fedcast.F``, broadcast   ``client.*``, ``keyserver``
key service     its queue                       ``fedcast.F``              ``reply.*`` (answers)
==============  ==============================  =========================  ============================

Nobody may configure anything (declare, delete, bind, purge needs read of that queue: only
one's own), and no user has a management tag, so none reaches the management API.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcast.shared.errors import ConfigurationError, TransportError

__all__ = [
    "BrokerAdmin",
    "Grant",
    "admin_from_env",
    "aggregator_grant",
    "check_id",
    "device_grant",
    "device_user",
    "keyserver_grant",
    "reply_key",
]

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def reply_key(endpoint: str) -> str:
    """The routing key (and, after ``fedcast.F.``, the queue name) of ``endpoint``'s RPC replies."""
    return f"reply.{endpoint}"


def device_user(federation: str, client_id: str) -> str:
    """The broker user of one device: one per device and federation."""
    return f"fedcast.{federation}.{client_id}"


@dataclass(frozen=True)
class Grant:
    """One party's rights in a federation (regular expressions, as RabbitMQ takes them)."""

    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str = "^$"


def _q(federation: str, name: str) -> str:
    return re.escape(f"fedcast.{federation}.{name}")


def device_grant(federation: str, client_id: str) -> Grant:
    endpoint = f"client.{client_id}"
    return Grant(
        configure="^$",
        write=f"^{re.escape(f'fedcast.{federation}')}$",
        read=f"^({_q(federation, endpoint)}|{_q(federation, reply_key(endpoint))})$",
        topic_write="^(aggregator|keyserver)$",
    )


def aggregator_grant(federation: str) -> Grant:
    exchange = re.escape(f"fedcast.{federation}")
    return Grant(
        configure="^$",
        write=f"^{exchange}(\\.broadcast)?$",
        read=f"^({_q(federation, 'aggregator')}|{_q(federation, reply_key('aggregator'))})$",
        topic_write="^(client\\..+|keyserver)$",
    )


def keyserver_grant(federation: str) -> Grant:
    return Grant(
        configure="^$",
        write=f"^{re.escape(f'fedcast.{federation}')}$",
        read=f"^{_q(federation, 'keyserver')}$",
        topic_write="^reply\\..+$",
    )


@dataclass
class BrokerAdmin:
    """A client of the management HTTP API (``http(s)://admin:password@host:15672``)."""

    url: str
    vhost: str = "/"
    timeout: float = 10.0
    # For https: trust only this CA (the one AMQP clients pin, FEDCAST_AMQP_CA_FILE), not the
    # system's store; None uses the system's store.
    ca_file: str | None = None
    _auth: str = field(init=False, repr=False)
    _base: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("the broker admin URL must be http(s)://user:password@host:port")
        if not parts.username or parts.password is None:
            raise ConfigurationError("the broker admin URL must carry the administrator's user and password")
        login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password)}"
        self._auth = "Basic " + base64.b64encode(login.encode()).decode()
        port = f":{parts.port}" if parts.port else ""
        self._base = f"{parts.scheme}://{parts.hostname}{port}/api"
        if self.ca_file is not None and parts.scheme != "https":
            raise ConfigurationError("a CA file for the broker admin URL needs https://")

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        try:  # cafile given: only that CA is trusted; hostname checking stays on
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the CA file {self.ca_file}: {exc}") from exc

    def __repr__(self) -> str:  # the URL holds the administrator's password
        return f"BrokerAdmin(base={self._base!r}, vhost={self.vhost!r})"

    def _vhost(self) -> str:
        return urllib.parse.quote(self.vhost, safe="")

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
            f"{self._base}/{path}",
            data=data,
            method=method,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        try:
            context = self._tls_context()
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise TransportError(f"broker management API {method} {path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TransportError(f"broker management API unreachable: {exc}") from exc
        return json.loads(payload) if payload else None

    # -- topology ------------------------------------------------------------------------------

    def declare_exchange(self, name: str, kind: str) -> None:
        self._call(
            "PUT",
            f"exchanges/{self._vhost()}/{urllib.parse.quote(name, safe='')}",
            {
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            },
        )

    def declare_queue(self, name: str, arguments: Mapping[str, Any]) -> None:
        self._call(
            "PUT",
            f"queues/{self._vhost()}/{urllib.parse.quote(name, safe='')}",
            {
                "durable": True,
                "auto_delete": False,
                "arguments": dict(arguments),
            },
        )

    def bind(self, exchange: str, queue: str, routing_key: str) -> None:
        e, q = urllib.parse.quote(exchange, safe=""), urllib.parse.quote(queue, safe="")
        self._call(
            "POST", f"bindings/{self._vhost()}/e/{e}/q/{q}", {"routing_key": routing_key, "arguments": {}}
        )

    def delete_queue(self, name: str) -> None:
        try:
            self._call("DELETE", f"queues/{self._vhost()}/{urllib.parse.quote(name, safe='')}")
        except TransportError as exc:
            if "HTTP 404" not in str(exc):
                raise

    # -- users ---------------------------------------------------------------------------------

    def put_user(self, user: str, password: str | None = None) -> str:
        """Create (or reset) ``user`` with no tags; returns its password (generated if None)."""
        password = password or secrets.token_urlsafe(32)
        self._call("PUT", f"users/{urllib.parse.quote(user, safe='')}", {"password": password, "tags": ""})
        return password

    def grant(self, user: str, exchange: str, grant: Grant) -> None:
        u = urllib.parse.quote(user, safe="")
        self._call(
            "PUT",
            f"permissions/{self._vhost()}/{u}",
            {
                "configure": grant.configure,
                "write": grant.write,
                "read": grant.read,
            },
        )
        self._call(
            "PUT",
            f"topic-permissions/{self._vhost()}/{u}",
            {
                "exchange": exchange,
                "write": grant.topic_write,
                "read": grant.topic_read,
            },
        )

    def delete_user(self, user: str) -> bool:
        """Delete ``user`` (its open connections are closed by the broker); False if it did not exist."""
        try:
            self._call("DELETE", f"users/{urllib.parse.quote(user, safe='')}")
        except TransportError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise
        return True

    def close_connections_of(self, user: str) -> int:
        """Close every open connection of ``user``: deleting a user does not end its sessions."""
        closed = 0
        for conn in self._call("GET", "connections") or []:
            if conn.get("user") == user:
                name = urllib.parse.quote(conn["name"], safe="")
                self._call("DELETE", f"connections/{name}")
                closed += 1
        return closed


def check_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise ConfigurationError(f"{what} must match [A-Za-z0-9._-]{{1,64}}: {value!r}")
    return value


def admin_from_env(env: Mapping[str, str], url: str | None = None, *, vhost: str = "/") -> BrokerAdmin | None:
    """The management client of ``url`` (default FEDCAST_BROKER_ADMIN_URL), or None when unset.

    An ``https`` URL trusts the CA that AMQP clients pin (FEDCAST_AMQP_CA_FILE) when it is set,
    like the AMQP connection does, rather than the system's store.
    """
    url = url or env.get("FEDCAST_BROKER_ADMIN_URL", "")
    if not url:
        return None
    ca_file = env.get("FEDCAST_AMQP_CA_FILE") or None
    return BrokerAdmin(url, vhost=vhost, ca_file=ca_file if url.startswith("https://") else None)
