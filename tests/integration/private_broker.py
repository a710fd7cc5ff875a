"""A private RabbitMQ node for one test: its own config, data dir, node name and free ports.

Tests that restart or kill the broker, or need their own users, TLS or limits, must not
touch the shared broker on 5672 (other tests use it). This starts the machine's
``rabbitmq-server`` as a second node: node name ``fedcast-test-<hex>@localhost``, AMQP
and distribution ports chosen free on 127.0.0.1, ``HOME`` (and so the Erlang cookie),
Mnesia and logs under the test's temporary directory. ``stop()`` halts it; the data
directory survives a ``restart()``, as a real broker's disk does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["PrivateBroker", "rabbitmq_server", "stop_processes"]

_SBIN = ("/usr/lib/rabbitmq/bin", "/usr/sbin")


def rabbitmq_server() -> str | None:
    """Path of the rabbitmq-server script, None if RabbitMQ is not installed here."""
    for directory in _SBIN:
        path = Path(directory) / "rabbitmq-server"
        if path.exists():
            return str(path)
    return shutil.which("rabbitmq-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateBroker:
    """One RabbitMQ node of a test's own; ``url`` reaches it as guest (loopback only)."""

    def __init__(
        self,
        root: Path,
        *,
        config: str = "",
        management: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls`` = (CA, certificate, key) files: the AMQP listener is then TLS only."""
        server = rabbitmq_server()
        if server is None:
            raise RuntimeError("rabbitmq-server is not installed")
        self._server = server
        self._ctl = str(Path(server).with_name("rabbitmqctl"))
        self.root = root
        self.node = f"fedcast-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = _free_port()
        self.dist_port = _free_port()
        self.extra_config = config
        self.management_port = _free_port() if management else None
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        (root / "mnesia").mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return self.url_for("guest", "guest")

    def url_for(self, user: str, password: str, host: str = "127.0.0.1") -> str:
        scheme = "amqp" if self.tls is None else "amqps"
        return f"{scheme}://{user}:{password}@{host}:{self.port}/"

    @property
    def admin_url(self) -> str:
        """The management API as guest (an administrator on a fresh node)."""
        if self.management_port is None:
            raise RuntimeError("this private broker runs without the management plugin")
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
        }

    def start(self, timeout: float = 60.0) -> None:
        if self.tls is None:
            config = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        else:
            ca, cert, key = self.tls
            config = (
                "listeners.tcp = none\n"
                f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
                f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n"
                "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n"
                "ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n"
            )
        config += f"{self.extra_config}\n"
        plugins: list[str] = []
        if self.management_port is not None:
            config += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            plugins.append("rabbitmq_management")
        (self.root / "rabbitmq.conf").write_text(config)
        (self.root / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
        log = (self.root / "server.log").open("ab")
        self._proc = subprocess.Popen([self._server], env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the private broker exited:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.management_port is not None:
                    socket.create_connection(("127.0.0.1", self.management_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the private broker did not listen within {timeout} s:\n{self.log_tail()}")

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node; its output (CalledProcessError if it fails)."""
        done = subprocess.run(
            [self._ctl, "-n", self.node, *args], env=self._env(), capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done.stdout

    def stop(self) -> None:
        """Halt the node (gracefully; killed if it does not go within 30 s). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            self.ctl("stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, chars: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after ``timeout``)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
