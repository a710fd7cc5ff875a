"""The management API over https trusts the pinned CA only (as AMQP clients do), never by default."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcast.shared.errors import ConfigurationError, TransportError
from fedcast.shared.tls import issue, make_ca
from fedcast.shared.transport.brokeradmin import BrokerAdmin, admin_from_env


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_DELETE(self) -> None:  # a user that does not exist: 404, as the management API answers
        self.send_response(404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = make_ca()
    leaf = issue(ca, "localhost", dns=["localhost"], server=True)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], tmp_path / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()


def test_the_pinned_ca_is_trusted(https_server: tuple[int, Path]) -> None:
    port, ca = https_server
    admin = BrokerAdmin(f"https://admin:pw@localhost:{port}", ca_file=str(ca))
    assert admin.delete_user("nobody") is False  # the call went through TLS and got the 404


def test_without_the_pin_the_private_ca_is_refused(https_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = https_server
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        BrokerAdmin(f"https://admin:pw@localhost:{port}").delete_user("nobody")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("another CA").cert_pem)
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        BrokerAdmin(f"https://admin:pw@localhost:{port}", ca_file=str(other)).delete_user("nobody")


def test_admin_from_env_pins_the_amqp_ca_for_https_only(tmp_path: Path) -> None:
    env = {"FEDCAST_BROKER_ADMIN_URL": "https://admin:pw@rabbitmq:15671", "FEDCAST_AMQP_CA_FILE": "/ca.pem"}
    admin = admin_from_env(env)
    assert admin is not None and admin.ca_file == "/ca.pem"
    plain = admin_from_env({**env, "FEDCAST_BROKER_ADMIN_URL": "http://admin:pw@rabbitmq:15672"})
    assert plain is not None and plain.ca_file is None
    assert admin_from_env({}) is None
    with pytest.raises(ConfigurationError, match="needs https"):
        BrokerAdmin("http://admin:pw@rabbitmq:15672", ca_file="/ca.pem")
