"""TLS settings and the development CA: a real handshake accepts our CA only."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from fedcast.cli import main
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.keystore import write_bytes_atomic
from fedcast.shared.tls import IssuedCertificate, TlsSettings, issue, make_ca


def _files(directory: Path, name: str, issued: IssuedCertificate) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    write_bytes_atomic(cert, issued.cert_pem, secret=False)
    write_bytes_atomic(key, issued.key_pem, secret=True)
    return cert, key


def _handshake(server: IssuedCertificate, tmp: Path, client: ssl.SSLContext, *, mutual: bool = False) -> str:
    """Serve one TLS handshake on 127.0.0.1 with ``server``; the client's CN seen, or raise."""
    cert, key = _files(tmp, "server", server)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    if mutual:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.load_verify_locations(cafile=str(tmp / "ca.pem"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                if peer:
                    seen.extend(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"x")
    finally:
        thread.join(timeout=5)
        listener.close()
    return seen[0] if seen else ""


def test_a_certificate_of_our_ca_is_accepted_and_one_of_another_ca_refused(tmp_path: Path) -> None:
    ca = make_ca()
    _files(tmp_path, "ca", ca)
    server = issue(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    x509.load_pem_x509_certificate(server.cert_pem).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca.cert_pem)
    )
    pinned = TlsSettings(tmp_path / "ca.pem").client_context()
    _handshake(server, tmp_path, pinned)

    other_ca = make_ca("someone else's CA")
    stranger = issue(other_ca, "localhost", dns=["localhost"], server=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(stranger, tmp_path, pinned)


def test_the_host_name_is_checked(tmp_path: Path) -> None:
    ca = make_ca()
    _files(tmp_path, "ca", ca)
    elsewhere = issue(ca, "broker.example", dns=["broker.example"], server=True)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match|mismatch"):
        _handshake(elsewhere, tmp_path, TlsSettings(tmp_path / "ca.pem").client_context())


def test_a_client_certificate_is_presented(tmp_path: Path) -> None:
    ca = make_ca()
    _files(tmp_path, "ca", ca)
    server = issue(ca, "localhost", dns=["localhost"], server=True)
    cert, key = _files(tmp_path, "line-7", issue(ca, "line-7", client=True))
    context = TlsSettings(tmp_path / "ca.pem", cert, key).client_context()
    assert _handshake(server, tmp_path, context, mutual=True) == "line-7"


def test_settings_are_validated(tmp_path: Path) -> None:
    ca = make_ca()
    ca_file, ca_key = _files(tmp_path, "ca", ca)
    assert TlsSettings.from_env({}) is None
    with pytest.raises(ConfigurationError, match="both"):
        TlsSettings(ca_file, cert_file=ca_file)
    with pytest.raises(ConfigurationError, match="does not exist"):
        TlsSettings(tmp_path / "missing.pem")
    ca_key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        TlsSettings(ca_file, ca_file, ca_key)
    with pytest.raises(ConfigurationError, match="need FEDCAST_AMQP_CA_FILE"):
        TlsSettings.from_env({"FEDCAST_AMQP_CERT_FILE": str(ca_file)})
    settings = TlsSettings.from_env({"FEDCAST_AMQP_CA_FILE": str(ca_file)})
    assert settings is not None and settings.ca_file == ca_file
    with pytest.raises(ConfigurationError, match="server"):
        issue(ca, "x")
    with pytest.raises(ConfigurationError, match="DNS name or IP"):
        issue(ca, "x", server=True)
    assert "secret" in repr(ca) and "BEGIN" not in repr(ca)


def test_the_certs_command_makes_a_ca_and_leaves_with_private_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "pki")
    assert main(["certs", "init", "--dir", d]) == 0
    assert main(["certs", "issue", "rabbitmq", "--dir", d, "--server", "--dns", "rabbitmq"]) == 0
    assert main(["certs", "issue", "line-1", "--dir", d, "--client"]) == 0
    for name in ("ca", "rabbitmq", "line-1"):
        assert stat.S_IMODE((tmp_path / "pki" / f"{name}-key.pem").stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((tmp_path / "pki" / "rabbitmq.pem").read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.pem").read_bytes()))
    assert main(["certs", "init", "--dir", d]) != 0  # never overwrites a CA by accident
    assert "refusing to overwrite" in capsys.readouterr().err
