"""A device's provisioning bundle: everything an edge client needs, in one piece.

``fedcast keyserver add-device ID --bundle DIR`` builds a :class:`DeviceBundle` and
writes it as

* ``<id>.env`` (0600): ``KEY=value`` lines for systemd's ``EnvironmentFile=`` and
  compose's ``env_file:``. Values made of ``[A-Za-z0-9_.:/@%-]`` (tokens, hex keys, ids,
  paths and URLs whose user and password are %-encoded) are written bare, which both
  formats, and ``docker run --env-file``, take verbatim. Anything else is single-quoted:
  both systemd and compose take a single-quoted value literally (no ``$`` interpolation,
  no escapes). A value that no quoting carries the same way through both (a single
  quote, a backslash, anything not printable such as a newline) is refused, and so is
  ``$``, which python-dotenv expands even inside single quotes. The CA is
  never embedded: ``FEDCAST_AMQP_CA_FILE`` names where ``ca.pem`` is installed on the
  device (:data:`DEVICE_CA_PATH`).
* ``ca.pem`` (0644): the broker's CA certificate(s), re-encoded from what was given so
  that nothing but certificates (never a key) reaches a device.
* ``<id>-secret.yaml`` (0600): Secret ``fedcast-device-<id>`` with the same variables,
  the CA as key ``ca.pem``, and the keys the edge DaemonSet in ``k8s/base/edge`` reads:
  ``token``, and ``amqp-username`` and ``amqp-password`` (unencoded) when the bundle has
  a broker login. It leaves out ``FEDCAST_METRICS_HOST``:
  in a pod the kubelet probes the metrics port from outside the pod, and the
  NetworkPolicies keep it from everyone else. A client id that cannot name a Secret
  (upper case, ``_``) gets no Secret: such a device runs under systemd or compose.

Nothing here talks to the network or the registry; the repr masks every secret.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.keystore import write_bytes_atomic
from fedcast.shared.transport.brokeradmin import check_id

__all__ = [
    "CA_FILE_NAME",
    "DEVICE_CA_PATH",
    "DeviceBundle",
    "canonical_ca_pem",
    "check_namespace",
    "env_file_line",
    "secret_name",
]

#: Where the env file tells the device its CA is; install ``ca.pem`` there (a pod mounts the
#: Secret's ``ca.pem`` key there).
DEVICE_CA_PATH = "/etc/fedcast/ca.pem"
CA_FILE_NAME = "ca.pem"

#: Variables the bundle sets itself; ``settings`` may not override them.
_OWN_KEYS = frozenset(
    {
        "FEDCAST_CLIENT_ID",
        "FEDCAST_FEDERATION",
        "FEDCAST_ENROLLMENT_TOKEN",
        "FEDCAST_KEYSERVER_VERIFY_KEY",
        "FEDCAST_AMQP_URL",
        "FEDCAST_AMQP_DECLARE",
        "FEDCAST_AMQP_CA_FILE",
    }
)
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
#: Written bare: the same value under systemd, compose (no ``$``, quote, ``#`` or blank) and docker run.
_BARE = re.compile(r"[A-Za-z0-9_.:/@%-]+")
#: A DNS-1123 subdomain (Secret names) and label (namespaces).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def env_file_line(name: str, value: str) -> str:
    """``NAME=value`` as both systemd's EnvironmentFile and compose's env_file read it back."""
    if not _ENV_NAME.fullmatch(name):
        raise ConfigurationError(f"not an environment variable name: {name!r}")
    if _BARE.fullmatch(value):
        return f"{name}={value}"
    # Printable text (no control, format or line-separator character: systemd refuses U+FEFF)
    # is literal inside '...' in both formats, but for the quote and the backslash, and for $:
    # python-dotenv (which many compose-style tools use) expands ${VAR} even inside '...'.
    if value.isprintable() and not {"'", "\\", "$"} & set(value):
        return f"{name}='{value}'"
    # The value may be a secret: name the variable, never echo the value.
    raise ConfigurationError(
        f"{name} holds a single quote, a backslash, a $ or a character that is not printable, which "
        "systemd and compose env files do not read back alike"
    )


def canonical_ca_pem(pem: bytes) -> bytes:
    """The certificates of ``pem`` re-encoded (PEM, one after another); refuses keys and garbage."""
    if b"PRIVATE KEY" in pem:
        raise ConfigurationError(
            "the CA file holds a private key: give the CA certificate only (ca.pem, not ca-key.pem)"
        )
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigurationError(f"the CA file is not a PEM certificate: {exc}") from None
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def secret_name(client_id: str) -> str:
    """``fedcast-device-<id>``: the device's Secret (the name k8s/overlays/edge/devices use)."""
    return f"fedcast-device-{client_id}"


def check_namespace(namespace: str) -> None:
    """Refuse what cannot name a Kubernetes namespace (a DNS-1123 label)."""
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise ConfigurationError(f"not a Kubernetes namespace name: {namespace!r}")


def _mask_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


def _yaml_string(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar; escape everything outside printable ASCII.
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


@dataclass(frozen=True, repr=False)
class DeviceBundle:
    """What one edge device needs to join: identity, token, pinned key, broker login, CA, settings.

    ``amqp_url`` is the device's own broker login (``amqp(s)://user:password@host:port/``),
    ``None`` when the broker was not provisioned (the operator then sets ``FEDCAST_AMQP_URL``
    on the device). ``settings`` are further ``FEDCAST_*`` variables the federation shares
    (the task, the minimum online set).
    """

    client_id: str
    federation: str
    enrollment_token: str
    keyserver_verify_key: str
    amqp_url: str | None = None
    ca_pem: bytes | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    ca_path: str = DEVICE_CA_PATH

    def __post_init__(self) -> None:
        check_id(self.client_id, "client id")
        check_id(self.federation, "federation")
        if not self.enrollment_token:
            raise ConfigurationError("a device bundle needs the device's enrollment token")
        try:
            key = bytes.fromhex(self.keyserver_verify_key)
        except ValueError:
            raise ConfigurationError("the key service's verify key must be hex") from None
        if len(key) != 32:
            raise ConfigurationError("the key service's verify key must be 32 bytes (64 hex digits)")
        object.__setattr__(self, "keyserver_verify_key", key.hex())
        if self.amqp_url is not None:
            self._check_url(self.amqp_url)
        if self.ca_pem is not None:
            object.__setattr__(self, "ca_pem", canonical_ca_pem(self.ca_pem))
        if not Path(self.ca_path).is_absolute():
            raise ConfigurationError(f"the device's CA path must be absolute: {self.ca_path!r}")
        settings = dict(self.settings)
        for name in settings:
            if not name.startswith("FEDCAST_") or not _ENV_NAME.fullmatch(name):
                raise ConfigurationError(f"a bundle setting must be a FEDCAST_* variable: {name!r}")
            if name in _OWN_KEYS:
                raise ConfigurationError(f"{name} is set by the bundle itself")
        object.__setattr__(self, "settings", MappingProxyType(settings))
        for name, value in self.environment().items():
            env_file_line(name, value)  # refuses, now, what no env file could carry

    def _check_url(self, url: str) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigurationError("the device's broker URL is malformed") from None
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigurationError("the device's broker URL must be amqp(s)://user:password@host:port/")
        if not parts.username or not parts.password:
            raise ConfigurationError("the device's broker URL must carry its user and password")
        # The transport's own rules (shared/transport/amqp.py): amqps pins a CA, amqp takes none.
        if (parts.scheme == "amqps") != (self.ca_pem is not None):
            raise ConfigurationError("amqps:// needs the broker's CA in the bundle, and amqp:// takes none")

    def __repr__(self) -> str:
        url = None if self.amqp_url is None else _mask_url(self.amqp_url)
        ca = None if self.ca_pem is None else f"<{len(self.ca_pem)} bytes>"
        return (
            f"DeviceBundle(client_id={self.client_id!r}, federation={self.federation!r}, "
            f"enrollment_token='<redacted>', keyserver_verify_key={self.keyserver_verify_key!r}, "
            f"amqp_url={url!r}, ca_pem={ca}, settings={sorted(self.settings)!r}, ca_path={self.ca_path!r})"
        )

    __str__ = __repr__

    @property
    def provisioned(self) -> bool:
        """The device has its own broker user: it declares nothing (``FEDCAST_AMQP_DECLARE=0``)."""
        return self.amqp_url is not None

    def environment(self, *, kubernetes: bool = False) -> dict[str, str]:
        """The device's variables, in file order. ``kubernetes``: without FEDCAST_METRICS_HOST."""
        env = {
            "FEDCAST_CLIENT_ID": self.client_id,
            "FEDCAST_FEDERATION": self.federation,
            "FEDCAST_ENROLLMENT_TOKEN": self.enrollment_token,
            "FEDCAST_KEYSERVER_VERIFY_KEY": self.keyserver_verify_key,
        }
        if self.amqp_url is not None:
            env["FEDCAST_AMQP_URL"] = self.amqp_url
            env["FEDCAST_AMQP_DECLARE"] = "0"
        if self.ca_pem is not None:
            env["FEDCAST_AMQP_CA_FILE"] = self.ca_path
        if not kubernetes:
            # A device's metrics stay on the device unless its operator opens them (docs/METRICS.md).
            env["FEDCAST_METRICS_HOST"] = "127.0.0.1"
        env.update(sorted(self.settings.items()))
        return env

    def to_env_file(self) -> str:
        """The env file: systemd ``EnvironmentFile=`` and compose ``env_file:`` read it alike."""
        lines = [
            f"# fedcast device {self.client_id}, federation {self.federation}: SECRET (token, broker login).",
            "# For systemd EnvironmentFile= or compose env_file:, mode 0600.",
        ]
        if self.ca_pem is not None:
            lines.append(f"# Install ca.pem at {self.ca_path}.")
        if self.amqp_url is None:
            lines.append("# No broker login: set FEDCAST_AMQP_URL (fedcast broker add-device makes one).")
        lines += [env_file_line(name, value) for name, value in self.environment().items()]
        return "\n".join(lines) + "\n"

    @property
    def kubernetes_nameable(self) -> bool:
        """Whether ``fedcast-device-<id>`` is a valid Secret name (in k3s the id is a node name: always)."""
        name = secret_name(self.client_id)
        return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None

    def _secret_parts(self, namespace: str) -> tuple[str, dict[str, str], dict[str, str]]:
        if not self.kubernetes_nameable:
            raise ConfigurationError(
                f"client id {self.client_id!r} cannot name a Kubernetes Secret (lower-case letters, "
                "digits, '-' and '.'; in k3s the client id is the node name, which always can)"
            )
        check_namespace(namespace)
        labels = {"app.kubernetes.io/part-of": "fedcast", "app.kubernetes.io/component": "edge"}
        if len(self.client_id) <= 63:
            labels["fedcast.io/device"] = self.client_id
        data = self.environment(kubernetes=True)
        # The keys k8s/base/edge's DaemonSet reads: the token and the device's own broker user
        # (it builds FEDCAST_AMQP_URL from them with AMQP_SCHEME and AMQP_ADDRESS).
        data["token"] = self.enrollment_token
        if self.amqp_url is not None:
            login = urllib.parse.urlsplit(self.amqp_url)
            data["amqp-username"] = urllib.parse.unquote(login.username or "")
            data["amqp-password"] = urllib.parse.unquote(login.password or "")
        if self.ca_pem is not None:
            data[CA_FILE_NAME] = self.ca_pem.decode("ascii")
        return secret_name(self.client_id), labels, data

    def secret_manifest(self, namespace: str = "fedcast") -> dict[str, object]:
        """The device's ``v1 Secret`` as a dict: ``stringData`` holds the variables, ``token``,
        ``amqp-username`` and ``amqp-password`` (with a broker login) and ``ca.pem`` (with a CA)."""
        name, labels, data = self._secret_parts(namespace)
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "stringData": data,
        }

    def to_k8s_secret(self, namespace: str = "fedcast") -> str:
        """The Secret as YAML for ``kubectl apply -f``; the CA as a literal block."""
        name, labels, data = self._secret_parts(namespace)
        lines = [
            f"# fedcast device {self.client_id}: SECRET. kubectl apply -f it, then delete this file.",
            "apiVersion: v1",
            "kind: Secret",
            "metadata:",
            f"  name: {_yaml_string(name)}",
            f"  namespace: {_yaml_string(namespace)}",
            "  labels:",
            *(f"    {_yaml_string(k)}: {_yaml_string(v)}" for k, v in labels.items()),
            "type: Opaque",
            "stringData:",
        ]
        for key, value in data.items():
            if key == CA_FILE_NAME:
                # Canonical PEM (canonical_ca_pem): base64 lines, none blank or indented, one final newline.
                lines.append(f"  {key}: |")
                lines += [f"    {line}" for line in value.splitlines()]
            else:
                lines.append(f"  {_yaml_string(key)}: {_yaml_string(value)}")
        return "\n".join(lines) + "\n"

    def write(self, directory: str | os.PathLike[str], *, namespace: str = "fedcast") -> list[Path]:
        """Write ``<id>.env`` (0600), ``ca.pem`` (0644), ``<id>-secret.yaml`` (0600); return the paths.

        The directory is created 0700 and each file is written atomically. The Secret is
        left out when the client id cannot name one (:attr:`kubernetes_nameable`): such a
        device runs under systemd or compose only.
        """
        check_namespace(namespace)
        target = Path(directory)
        secret = self.to_k8s_secret(namespace) if self.kubernetes_nameable else None
        try:
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the bundle directory {target}: {exc.strerror}") from exc
        env_path = target / f"{self.client_id}.env"
        written = [write_bytes_atomic(env_path, self.to_env_file().encode(), secret=True)]
        if self.ca_pem is not None:
            written.append(write_bytes_atomic(target / CA_FILE_NAME, self.ca_pem, secret=False))
        if secret is not None:
            secret_path = target / f"{self.client_id}-secret.yaml"
            written.append(write_bytes_atomic(secret_path, secret.encode(), secret=True))
        return written
