"""TLS for AMQP: the client's settings, and a small certificate authority for compose and dev.

A fedcast process reaches the broker over ``amqps://`` with the CA it pins (only that CA:
the system's trust store is not used, so a certificate from any other CA, however
public, is refused) and, optionally, a client certificate of its own. Hostname checking
stays on: the broker's certificate must name the host in the URL.

:func:`make_ca` and :func:`issue` build what a compose stack or a developer needs (one
CA, a broker certificate, client certificates) with the ``cryptography`` package: ECDSA
P-256 keys, SHA-256 signatures. A production cluster takes its certificates from
cert-manager instead (docs/DEPLOY.md); nothing here is on a message path.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcast.shared.errors import ConfigurationError

__all__ = [
    "CA_VALIDITY_DAYS",
    "LEAF_VALIDITY_DAYS",
    "IssuedCertificate",
    "TlsSettings",
    "issue",
    "make_ca",
]

#: A development CA lives about as long as a hardware refresh of the line; leaves a year
#: (renewed with the device's bundle), short enough that a lost one ages out.
CA_VALIDITY_DAYS = 5 * 365
LEAF_VALIDITY_DAYS = 365


@dataclass(frozen=True)
class TlsSettings:
    """The CA a process pins for the broker, and its own certificate if it presents one."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    check_key_permissions: bool = True

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigurationError("a client certificate needs both its file and its key file")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(f"TLS file {path} does not exist")
        if self.key_file is not None and self.check_key_permissions:
            mode = stat.S_IMODE(os.stat(self.key_file).st_mode)
            if mode & 0o077:
                raise ConfigurationError(
                    f"{self.key_file} is readable by others (mode {mode:o}); chmod 600 it"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsSettings | None:
        """FEDCAST_AMQP_CA_FILE (and optionally FEDCAST_AMQP_CERT_FILE, FEDCAST_AMQP_KEY_FILE)."""
        ca = env.get("FEDCAST_AMQP_CA_FILE", "")
        cert, key = env.get("FEDCAST_AMQP_CERT_FILE", ""), env.get("FEDCAST_AMQP_KEY_FILE", "")
        if not ca:
            if cert or key:
                raise ConfigurationError("FEDCAST_AMQP_CERT_FILE/KEY_FILE need FEDCAST_AMQP_CA_FILE")
            return None
        return cls(
            Path(ca),
            Path(cert) if cert else None,
            Path(key) if key else None,
            check_key_permissions=env.get("FEDCAST_CHECK_KEY_PERMISSIONS", "1") != "0",
        )

    def client_context(self) -> ssl.SSLContext:
        """TLS 1.2 or newer, the pinned CA only, hostname checked, the client certificate if any."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cafile=str(self.ca_file))
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the TLS files: {exc}") from exc
        return context


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, PEM. The key is a secret: write it 0600."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"IssuedCertificate(cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<secret>)"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(
    common_name: str = "fedcast development CA", *, days: int = CA_VALIDITY_DAYS
) -> IssuedCertificate:
    """A self-signed CA that may sign leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: IssuedCertificate,
    common_name: str,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = LEAF_VALIDITY_DAYS,
) -> IssuedCertificate:
    """A leaf certificate signed by ``ca``: a server's names in ``dns``/``ips``; a client's CN is its id."""
    if not (server or client):
        raise ConfigurationError("a certificate is for a server, a client, or both")
    if server and not (dns or ips):
        raise ConfigurationError("a server certificate needs at least one DNS name or IP address")
    try:
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
        ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ConfigurationError(f"cannot issue the certificate: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("the CA key is not an ECDSA key made by fedcast")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(a) for a in addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
