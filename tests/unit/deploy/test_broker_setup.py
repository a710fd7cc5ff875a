"""The provisioning Job's script (k8s/base/broker-setup/broker_setup.py), without a cluster.

The broker side is fedcast's own provisioning (``provision_services``/``provision_device``,
shown against a real RabbitMQ in tests/integration/test_broker_identities.py); here the
management API is a recording fake, and the Kubernetes API a local HTTP server that checks
what a real API server would need: the bearer token, server-side apply with a field
manager, and a 404 for what does not exist.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedcast.shared.errors import ConfigurationError, TransportError
from tests.unit.deploy.conftest import K8S

SCRIPT = K8S / "base/broker-setup/broker_setup.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fedcast_broker_setup_job", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bs = _load()


class MemoryKube(bs.KubeApi):  # type: ignore[misc,name-defined]
    """The two calls, on a dict."""

    def __init__(self) -> None:
        super().__init__(namespace="fedcast", token="t")
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applies = 0

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def __getitem__(self, key: tuple[str, str]) -> dict[str, Any]:
        return self.objects[key]

    def apply(self, kind: str, name: str, manifest: Any) -> None:
        self.applies += 1
        self.objects[kind, name] = json.loads(json.dumps(manifest))


class Calls(list[tuple[str, str, Any]]):
    """The management API calls a fake BrokerAdmin received: (method, path, body)."""


def _recording_admin(calls: list[tuple[str, str, Any]]) -> Any:
    class Recording(bs.KeepingPasswords):  # type: ignore[misc,name-defined]
        def _call(self, method: str, path: str, body: Any = None) -> Any:
            calls.append((method, path, body))
            return None

    def make(url: str, known: dict[str, str]) -> Any:
        return Recording(url, known=known)

    return make


ENV = {"FEDCAST_BROKER_ADMIN_URL": "http://admin:pw@broker:15672", "FEDCAST_FEDERATION": "plant-7"}


def _passwords(calls: list[tuple[str, str, Any]]) -> dict[str, str]:
    return {
        path.removeprefix("users/"): body["password"]
        for method, path, body in calls
        if method == "PUT" and path.startswith("users/")
    }


def test_first_run_writes_the_services_logins_into_their_secrets() -> None:
    kube, calls = MemoryKube(), Calls()
    written = bs.provision(kube, ENV, _recording_admin(calls))
    assert [line.split()[1] for line in written] == ["fedcast-amqp-keyserver", "fedcast-amqp-aggregator"]
    users = _passwords(calls)
    assert set(users) == {"fedcast.plant-7.keyserver", "fedcast.plant-7.aggregator"}
    for party in ("keyserver", "aggregator"):
        secret = kube["secrets", f"fedcast-amqp-{party}"]
        assert secret["type"] == "Opaque" and secret["metadata"]["namespace"] == "fedcast"
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert data == {"username": f"fedcast.plant-7.{party}", "password": users[data["username"]]}
        assert len(data["password"]) >= 32
    # the topology of `fedcast broker setup` came along: the topic exchange and the grants
    assert any(path == "exchanges/%2F/fedcast.plant-7" and body["type"] == "topic" for _, path, body in calls)
    assert any(path.startswith("topic-permissions/") for _, path, _ in calls)


def test_a_second_run_keeps_every_password() -> None:
    """A re-run (every `kubectl apply` after the Job's TTL) must not cut off running services."""
    kube, first, second = MemoryKube(), Calls(), Calls()
    env = {**ENV, "FEDCAST_SETUP_DEVICES": "sim-0,sim-1", "FEDCAST_SETUP_DEVICES_SECRET": "sims"}
    bs.provision(kube, env, _recording_admin(first))
    before = copy.deepcopy(kube.objects)
    bs.provision(kube, env, _recording_admin(second))
    assert kube.objects == before
    assert _passwords(second) == _passwords(first)  # the broker users are reset to the same passwords
    assert len(_passwords(first)) == 4


def test_a_missing_secret_gets_a_new_password_and_the_other_is_kept() -> None:
    kube, first, second = MemoryKube(), Calls(), Calls()
    bs.provision(kube, ENV, _recording_admin(first))
    del kube.objects["secrets", "fedcast-amqp-aggregator"]  # the operator rotates the aggregator's
    bs.provision(kube, ENV, _recording_admin(second))
    old, new = _passwords(first), _passwords(second)
    assert new["fedcast.plant-7.keyserver"] == old["fedcast.plant-7.keyserver"]
    assert new["fedcast.plant-7.aggregator"] != old["fedcast.plant-7.aggregator"]


def test_simulated_devices_get_one_user_each_in_one_secret() -> None:
    kube, calls = MemoryKube(), Calls()
    env = {**ENV, "FEDCAST_SETUP_DEVICES": "sim-0, sim-1,sim-2", "FEDCAST_SETUP_DEVICES_SECRET": "sims"}
    bs.provision(kube, env, _recording_admin(calls))
    data = {k: base64.b64decode(v).decode() for k, v in kube["secrets", "sims"]["data"].items()}
    assert sorted(data) == sorted(f"sim-{i}.{part}" for i in range(3) for part in ("username", "password"))
    assert {data[f"sim-{i}.username"] for i in range(3)} == {f"fedcast.plant-7.sim-{i}" for i in range(3)}
    assert len({data[f"sim-{i}.password"] for i in range(3)}) == 3
    assert any(path == "queues/%2F/fedcast.plant-7.client.sim-2" for _, path, _ in calls)


def test_the_ca_certificate_goes_into_a_config_map(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    kube = MemoryKube()
    env = {**ENV, "FEDCAST_SETUP_CA_FILE": str(ca), "FEDCAST_SETUP_CA_CONFIGMAP": "fedcast-amqp-ca"}
    bs.provision(kube, env, _recording_admin([]))
    config_map = kube["configmaps", "fedcast-amqp-ca"]
    assert config_map["kind"] == "ConfigMap" and config_map["data"] == {"ca.pem": ca.read_text()}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {**ENV, "FEDCAST_FEDERATION": "no/slash"},
        {**ENV, "FEDCAST_SETUP_DEVICES": "sim-0"},
        {**ENV, "FEDCAST_SETUP_DEVICES": "a b", "FEDCAST_SETUP_DEVICES_SECRET": "s"},
        {**ENV, "FEDCAST_SETUP_CA_FILE": "/x"},
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(env: dict[str, str]) -> None:
    kube = MemoryKube()
    with pytest.raises(ConfigurationError):
        bs.provision(kube, env, _recording_admin([]))
    assert kube.applies == 0


def test_the_admin_url_stays_out_of_the_repr() -> None:
    admin = bs.KeepingPasswords("http://admin:s3cret@broker:15672", known={"u": "p"})
    assert "s3cret" not in repr(admin) and "'p'" not in repr(admin)


def test_main_waits_for_the_broker_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def unreachable(api: Any, env: Any) -> list[str]:
        attempts.append(1)
        raise TransportError("broker management API unreachable: refused")

    monkeypatch.setattr(bs.KubeApi, "in_cluster", classmethod(lambda cls: MemoryKube()))
    monkeypatch.setattr(bs, "provision", unreachable)
    assert bs.main({}, wait_s=0.05, pause_s=0.01) == 1
    assert len(attempts) >= 2  # it retried before giving up

    def refused(api: Any, env: Any) -> list[str]:
        raise ConfigurationError("FEDCAST_BROKER_ADMIN_URL is not set")

    monkeypatch.setattr(bs, "provision", refused)
    assert bs.main({}, wait_s=10, pause_s=0.01) == 2  # a setting no wait can fix: at once

    def conflict(api: Any, env: Any) -> list[str]:
        # what an exchange declared by an older fedcast (direct, not topic) gets
        raise TransportError(
            "broker management API PUT exchanges/%2F/fedcast.default: HTTP 400 inequivalent arg"
        )

    monkeypatch.setattr(bs, "provision", conflict)
    assert bs.main({}, wait_s=10, pause_s=0.01) == 3


# --- the Kubernetes API client against a local server ------------------------------------------


@dataclass
class FakeApiServer:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def api_server() -> Iterator[tuple[FakeApiServer, str]]:
    state = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            state.requests.append({"method": "GET", "path": self.path, "auth": self.headers["Authorization"]})
            found = state.objects.get(self.path)
            self._answer(200 if found else 404, found or {"kind": "Status", "code": 404})

        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            path, _, query = self.path.partition("?")
            state.requests.append(
                {
                    "method": "PATCH",
                    "path": path,
                    "query": query,
                    "type": self.headers["Content-Type"],
                    "auth": self.headers["Authorization"],
                }
            )
            if path.endswith("/forbidden"):
                self._answer(403, {"kind": "Status", "code": 403, "message": "forbidden"})
                return
            state.objects[path] = json.loads(body)
            self._answer(201, state.objects[path])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_kube_api_gets_and_applies_server_side(api_server: tuple[FakeApiServer, str]) -> None:
    state, base = api_server
    api = bs.KubeApi(namespace="fedcast", token="tok", base=base)
    assert bs.secret_data(api, "fedcast-amqp-keyserver") == {}  # 404: not there yet
    bs.apply_secret(api, "fedcast-amqp-keyserver", {"username": "u", "password": "p"})
    assert bs.secret_data(api, "fedcast-amqp-keyserver") == {"username": "u", "password": "p"}
    patch = next(r for r in state.requests if r["method"] == "PATCH")
    assert patch["path"] == "/api/v1/namespaces/fedcast/secrets/fedcast-amqp-keyserver"
    assert patch["type"] == "application/apply-patch+yaml"  # server-side apply: RBAC checks create by name
    assert "fieldManager=fedcast-broker-setup" in patch["query"] and "force=true" in patch["query"]
    assert {r["auth"] for r in state.requests} == {"Bearer tok"}
    with pytest.raises(bs.KubeError, match="HTTP 403"):
        bs.apply_config_map(api, "forbidden", {"ca.pem": "x"})


def test_kube_api_unreachable_is_a_kube_error() -> None:
    api = bs.KubeApi(namespace="fedcast", token="t", base="http://127.0.0.1:9", timeout=1)
    with pytest.raises(bs.KubeError, match="unreachable"):
        api.get("secrets", "x")
