"""The broker provisioning Job (k8s/base/broker-setup/job.yaml): topology and users into Secrets.

Runs in the fedcast image, as Job ``fedcast-broker-setup``, with the broker administrator's
management-API URL (``FEDCAST_BROKER_ADMIN_URL``, from Secret ``fedcast-amqp``: only this Job
and RabbitMQ itself read that Secret). It does what ``fedcast broker setup`` does
(fedcast/broker_cli.py ``provision_services``: the exchanges, the two services' queues and
bindings, their users and grants) and, instead of printing the two users' credentials,
writes them into Secrets ``fedcast-amqp-keyserver`` and ``fedcast-amqp-aggregator`` (keys
``username``, ``password``), which the key service and the aggregator read.

Idempotent, so that the Job may run again at every ``kubectl apply`` (it is deleted
``ttlSecondsAfterFinished`` after it completes): a user whose Secret exists keeps its
password (the broker user is reset to it, so a broker that lost its data is healed), and
only a missing Secret gets a new one. Running services are therefore never cut off by a
re-run. To rotate the services' passwords, delete their Secrets and run the Job again.

Optional, per overlay (environment):

* ``FEDCAST_SETUP_DEVICES`` (comma-separated client ids) and ``FEDCAST_SETUP_DEVICES_SECRET``:
  what ``fedcast broker add-device`` does, for each id, into one Secret (keys
  ``<id>.username``, ``<id>.password``). The dev overlay's simulated clients only.
* ``FEDCAST_SETUP_CA_FILE`` and ``FEDCAST_SETUP_CA_CONFIGMAP``: copies the broker's CA
  certificate (the file cert-manager wrote beside the broker's certificate) into a
  ConfigMap (key ``ca.pem``) that every client mounts: clients never mount a Secret that
  also holds a private key. The TLS component only.

The Kubernetes API is reached with the Job's own ServiceAccount, whose Role may get, create
and patch exactly the named Secrets (and ConfigMap) above, nothing else. Objects are written
with server-side apply, the one way RBAC can limit *create* to named objects.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcast.broker_cli import provision_device, provision_services
from fedcast.shared.errors import ConfigurationError, TransportError
from fedcast.shared.transport.brokeradmin import BrokerAdmin, check_id

SERVICE_SECRETS = {"keyserver": "fedcast-amqp-keyserver", "aggregator": "fedcast-amqp-aggregator"}
FIELD_MANAGER = "fedcast-broker-setup"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_SERVER = "https://kubernetes.default.svc"
LABELS = {"app.kubernetes.io/part-of": "fedcast", "app.kubernetes.io/managed-by": FIELD_MANAGER}


class KubeError(RuntimeError):
    """The Kubernetes API refused or could not be reached."""


@dataclass
class KubeApi:
    """The few calls of the Kubernetes API this Job makes: get and server-side apply, namespaced."""

    namespace: str
    token: str = field(repr=False)
    context: ssl.SSLContext | None = None
    base: str = API_SERVER
    timeout: float = 10.0

    @classmethod
    def in_cluster(cls) -> KubeApi:
        return cls(
            namespace=(SERVICE_ACCOUNT / "namespace").read_text().strip(),
            token=(SERVICE_ACCOUNT / "token").read_text().strip(),
            context=ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt")),
        )

    def _url(self, kind: str, name: str) -> str:
        ns, n = urllib.parse.quote(self.namespace, safe=""), urllib.parse.quote(name, safe="")
        return f"{self.base}/api/v1/namespaces/{ns}/{kind}/{n}"

    def _request(self, method: str, url: str, body: bytes | None = None, content_type: str = "") -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                return None
            detail = exc.read()[:300].decode(errors="replace")
            raise KubeError(f"Kubernetes API {method} {url}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise KubeError(f"Kubernetes API unreachable: {exc}") from exc

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        found = self._request("GET", self._url(kind, name))
        return found if isinstance(found, dict) else None

    def apply(self, kind: str, name: str, manifest: Mapping[str, Any]) -> None:
        """Server-side apply (creates or updates; RBAC checks create against the name too)."""
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        body = json.dumps(manifest).encode()  # JSON is YAML
        self._request("PATCH", f"{self._url(kind, name)}?{query}", body, "application/apply-patch+yaml")


def secret_data(api: KubeApi, name: str) -> dict[str, str]:
    """A Secret's data, decoded; empty if it does not exist."""
    secret = api.get("secrets", name) or {}
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def apply_secret(api: KubeApi, name: str, data: Mapping[str, str]) -> None:
    api.apply(
        "secrets",
        name,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": api.namespace, "labels": LABELS},
            "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        },
    )


def apply_config_map(api: KubeApi, name: str, data: Mapping[str, str]) -> None:
    api.apply(
        "configmaps",
        name,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": api.namespace, "labels": LABELS},
            "data": dict(data),
        },
    )


@dataclass(repr=False)  # keep BrokerAdmin's own repr: the URL holds the administrator's password
class KeepingPasswords(BrokerAdmin):
    """A BrokerAdmin that resets a user it knows to its known password instead of a new one."""

    known: dict[str, str] = field(default_factory=dict, repr=False)

    def put_user(self, user: str, password: str | None = None) -> str:
        return super().put_user(user, password or self.known.get(user))


def _devices(env: Mapping[str, str]) -> tuple[list[str], str]:
    ids = [
        check_id(d.strip(), "client id") for d in env.get("FEDCAST_SETUP_DEVICES", "").split(",") if d.strip()
    ]
    secret = env.get("FEDCAST_SETUP_DEVICES_SECRET", "")
    if ids and not secret:
        raise ConfigurationError("FEDCAST_SETUP_DEVICES needs FEDCAST_SETUP_DEVICES_SECRET")
    return ids, secret


def provision(
    api: KubeApi,
    env: Mapping[str, str],
    admin_factory: Callable[[str, dict[str, str]], BrokerAdmin] | None = None,
) -> list[str]:
    """Topology, users and Secrets (see the module docstring); returns what was written."""
    url = env.get("FEDCAST_BROKER_ADMIN_URL", "")
    if not url:
        raise ConfigurationError("FEDCAST_BROKER_ADMIN_URL is not set")
    federation = check_id(env.get("FEDCAST_FEDERATION", "default"), "federation")
    device_ids, device_secret = _devices(env)
    ca_file, ca_map = env.get("FEDCAST_SETUP_CA_FILE", ""), env.get("FEDCAST_SETUP_CA_CONFIGMAP", "")
    if bool(ca_file) != bool(ca_map):
        raise ConfigurationError("FEDCAST_SETUP_CA_FILE and FEDCAST_SETUP_CA_CONFIGMAP go together")

    known: dict[str, str] = {}
    for secret in SERVICE_SECRETS.values():
        data = secret_data(api, secret)
        if data.get("username") and data.get("password"):
            known[data["username"]] = data["password"]
    devices_data = secret_data(api, device_secret) if device_ids else {}
    for client_id in device_ids:
        user, password = devices_data.get(f"{client_id}.username"), devices_data.get(f"{client_id}.password")
        if user and password:
            known[user] = password

    make = admin_factory or (lambda admin_url, keep: KeepingPasswords(admin_url, known=keep))
    admin = make(url, known)
    written: list[str] = []
    users = provision_services(admin, federation)
    for party, secret in SERVICE_SECRETS.items():
        apply_secret(api, secret, {"username": users[party]["user"], "password": users[party]["password"]})
        written.append(f"Secret {secret} (broker user {users[party]['user']})")
    if device_ids:
        logins: dict[str, str] = {}
        for client_id in device_ids:
            creds = provision_device(admin, federation, client_id)
            logins[f"{client_id}.username"], logins[f"{client_id}.password"] = (
                creds["user"],
                creds["password"],
            )
        apply_secret(api, device_secret, logins)
        written.append(f"Secret {device_secret} ({len(device_ids)} device users)")
    if ca_file:
        apply_config_map(api, ca_map, {"ca.pem": Path(ca_file).read_text()})
        written.append(f"ConfigMap {ca_map} (the broker's CA certificate)")
    return written


def main(env: Mapping[str, str] | None = None, *, wait_s: float = 600.0, pause_s: float = 5.0) -> int:
    env = os.environ if env is None else env
    api = KubeApi.in_cluster()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            written = provision(api, env)
            break
        except (TransportError, KubeError) as exc:  # the broker (or the API) is not up yet: wait
            if re.search(
                r"HTTP 4\d\d", str(exc)
            ):  # refused (a wrong password, RBAC, a conflict): no wait helps
                print(f"broker setup refused: {exc}", file=sys.stderr)
                return 3
            if time.monotonic() > deadline:
                print(f"broker setup failed: {exc}", file=sys.stderr)
                return 1
            print(f"waiting: {exc}", file=sys.stderr)
            time.sleep(pause_s)
        except ConfigurationError as exc:
            print(f"broker setup: {exc}", file=sys.stderr)
            return 2
    for line in written:
        print(f"wrote {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
