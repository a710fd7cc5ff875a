"""The operator endpoints (/metrics, /healthz, /readyz) and the Pushgateway pusher, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import http.server
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

from fedcast.cli import build_parser
from fedcast.services.observability import (
    MAX_REQUEST_BYTES,
    MetricsServer,
    ObservabilityConfig,
    PushgatewayPusher,
    initialize_series,
)
from fedcast.services_cli import _observed
from fedcast.shared.errors import ConfigurationError

# -- a minimal HTTP client (the server under test speaks HTTP/1.1 with Connection: close) ------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def _raw(port: int, data: bytes) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)  # until the server closes
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Response(int(lines[0].split(" ")[1]), headers, body)


async def _get(port: int, path: str, method: str = "GET") -> Response:
    return await _raw(port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the endpoints ---------------------------------------------------------------------------------


async def test_metrics_endpoint_serves_the_default_registry_in_text_format() -> None:
    initialize_series("aggregator")  # a known labelled series with a sample
    async with MetricsServer(lambda: True, port=0, host="127.0.0.1") as server:
        response = await _get(server.port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert int(response.headers["content-length"]) == len(response.body)
    text = response.body.decode()
    assert "# TYPE fedcast_messages_sent_total counter" in text
    # the registry is process-wide: other tests may have counted retries already
    assert re.search(r'^fedcast_round_retries_total\{service="aggregator"\} \d+\.\d+$', text, re.M)
    assert "fedcast_round_phase_duration_seconds" in text
    assert re.search(r'^fedcast_challenge_resends_total\{service="aggregator"\} \d+\.\d+$', text, re.M)


def test_initialized_series_follow_protocol_v2() -> None:
    """From start-up: re-sent challenges, and dropouts in the three phases members are dropped in."""
    initialize_series("aggregator")
    initialize_series("edge")

    def exported(name: str, **labels: str) -> bool:
        return REGISTRY.get_sample_value(name, labels) is not None

    assert exported("fedcast_challenge_resends_total", service="aggregator")
    # upload: before the challenge; response: a bad proof of r2 found at the response deadline
    # (silence alone re-sends the challenge and drops nobody); decrypt: a wrong share named.
    for phase in ("upload", "response", "decrypt"):
        assert exported("fedcast_dropouts_total", service="aggregator", phase=phase)
    assert not exported("fedcast_challenge_resends_total", service="edge")  # aggregator only
    for reason in ("malformed", "unsupported_version", "bad_signature", "stale"):
        assert exported("fedcast_messages_rejected_total", service="edge", reason=reason)


async def test_healthz_and_readyz_follow_the_ready_callable() -> None:
    state = {"ready": False}
    async with MetricsServer(lambda: state["ready"], port=0, host="127.0.0.1") as server:
        assert (await _get(server.port, "/healthz")).status == 200
        not_ready = await _get(server.port, "/readyz")
        assert (not_ready.status, not_ready.body) == (503, b"not ready\n")
        state["ready"] = True
        ready = await _get(server.port, "/readyz")
        assert (ready.status, ready.body) == (200, b"ready\n")
        state["ready"] = False
        assert (await _get(server.port, "/readyz")).status == 503


async def test_a_failing_readiness_check_is_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async with MetricsServer(broken, port=0, host="127.0.0.1") as server:
        assert (await _get(server.port, "/readyz")).status == 503
        assert (await _get(server.port, "/healthz")).status == 200


async def test_unknown_paths_methods_and_malformed_requests() -> None:
    async with MetricsServer(lambda: True, port=0, host="127.0.0.1") as server:
        assert (await _get(server.port, "/")).status == 404
        assert (await _get(server.port, "/metrics/extra")).status == 404
        assert (await _get(server.port, "/metrics?name[]=x")).status == 200  # query strings are ignored
        post = await _get(server.port, "/metrics", method="POST")
        assert post.status == 405
        assert post.headers["allow"] == "GET, HEAD"
        assert (await _raw(server.port, b"nonsense\r\n\r\n")).status == 400
        huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * (2 * MAX_REQUEST_BYTES) + b"\r\n\r\n"
        assert (await _raw(server.port, huge)).status == 431
        # The server is still fine after all that.
        assert (await _get(server.port, "/healthz")).status == 200


async def test_head_answers_headers_without_a_body() -> None:
    async with MetricsServer(lambda: False, port=0, host="127.0.0.1") as server:
        get = await _get(server.port, "/metrics")
        head = await _get(server.port, "/metrics", method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
        assert (await _get(server.port, "/readyz", method="HEAD")).status == 503
        missing = await _get(server.port, "/nope", method="HEAD")
        assert (missing.status, missing.body) == (404, b"")


async def test_close_is_idempotent_and_stops_listening() -> None:
    server = MetricsServer(lambda: True, port=0, host="127.0.0.1")
    await server.start()
    await server.start()  # idempotent too
    port = server.port
    assert (await _get(port, "/healthz")).status == 200
    await server.close()
    await server.close()
    with pytest.raises(OSError):
        await _get(port, "/healthz")
    with pytest.raises(RuntimeError):
        await server.start()


async def test_a_silent_client_neither_blocks_others_nor_close(caplog: pytest.LogCaptureFixture) -> None:
    server = MetricsServer(lambda: True, port=0, host="127.0.0.1")
    await server.start()
    _, idle = await asyncio.open_connection("127.0.0.1", server.port)  # never sends a byte
    try:
        assert (await _get(server.port, "/healthz")).status == 200
        await server.close()  # drops the idle connection instead of waiting out its read timeout
    finally:
        idle.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_taken_port_is_a_configuration_error() -> None:
    async with MetricsServer(lambda: True, port=0, host="127.0.0.1") as first:
        second = MetricsServer(lambda: True, port=first.port, host="127.0.0.1")
        with pytest.raises(ConfigurationError, match="FEDCAST_METRICS_PORT"):
            await second.start()
        await second.close()


# -- configuration -----------------------------------------------------------------------------------


def test_metrics_port_flags() -> None:
    parser = build_parser()
    assert parser.parse_args(["aggregator", "--metrics-port", "9200"]).metrics_port == 9200
    assert parser.parse_args(["edge", "--metrics-port", "0"]).metrics_port == 0
    assert parser.parse_args(["keyserver", "--metrics-port", "9201"]).metrics_port == 9201
    assert parser.parse_args(["keyserver", "--metrics-port", "9202", "serve"]).metrics_port == 9202
    assert not hasattr(parser.parse_args(["aggregator"]), "metrics_port")  # falls back to the env
    assert parser.parse_args(["demo", "--metrics-port", "9300"]).metrics_port == 9300
    assert parser.parse_args(["demo"]).metrics_port == 0  # the demo serves only when asked


def test_config_from_env_defaults_overrides_and_validation() -> None:
    default = ObservabilityConfig.from_env({})
    assert (default.metrics_port, default.metrics_host) == (9100, "127.0.0.1")  # local unless asked
    assert (default.pushgateway_url, default.push_interval_s) == (None, 15.0)
    env = {
        "FEDCAST_METRICS_PORT": "9200",
        "FEDCAST_METRICS_HOST": "127.0.0.1",
        "FEDCAST_PUSHGATEWAY_URL": "http://127.0.0.1:9091",
        "FEDCAST_PUSH_INTERVAL_S": "30",
    }
    config = ObservabilityConfig.from_env(env)
    assert config == ObservabilityConfig(9200, "127.0.0.1", "http://127.0.0.1:9091", 30.0)
    assert ObservabilityConfig.from_env(env, metrics_port=0).metrics_port == 0  # the flag wins
    assert ObservabilityConfig.from_env(env, metrics_port=None).metrics_port == 9200  # flag not given
    for bad in (
        {"FEDCAST_METRICS_PORT": "70000"},
        {"FEDCAST_METRICS_PORT": "x"},
        {"FEDCAST_PUSHGATEWAY_URL": "pushgateway:9091"},
        {"FEDCAST_PUSH_INTERVAL_S": "0"},
    ):
        with pytest.raises(ConfigurationError):
            ObservabilityConfig.from_env(bad)


# -- a fake Pushgateway --------------------------------------------------------------------------------


@dataclass
class FakeGateway:
    port: int
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    """An HTTP server on 127.0.0.1 that records requests (in its own thread, like a remote peer)."""
    fake = FakeGateway(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            fake.requests.append((self.command, self.path, self.rfile.read(length)))
            self.send_response(fake.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_DELETE = _record

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def _until(condition: object, what: str) -> None:
    """Poll ``condition()`` (bounded; a liveness wait, not a timing assertion)."""
    assert callable(condition)
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


async def test_pusher_puts_the_registry_under_job_and_instance_then_deletes(gateway: FakeGateway) -> None:
    initialize_series("edge")
    pusher = PushgatewayPusher(gateway.url, instance="line-07", interval_s=0.05)
    await pusher.start()
    # the pusher counts a push once the gateway answered: wait for both views to agree
    await _until(lambda: gateway.methods().count("PUT") >= 2 and pusher.pushes >= 2, "two pushes")
    await pusher.close()
    await pusher.close()  # idempotent: one DELETE only
    method, path, body = gateway.requests[0]
    assert (method, path) == ("PUT", "/metrics/job/fedcast-edge/instance/line-07")
    assert b'fedcast_clipped_values_total{service="edge"}' in body
    assert gateway.methods()[-1] == "DELETE"
    assert gateway.methods().count("DELETE") == 1
    assert gateway.requests[-1][1] == "/metrics/job/fedcast-edge/instance/line-07"
    assert pusher.pushes >= 2 and pusher.failures == 0


async def test_pusher_close_without_delete_keeps_the_group(gateway: FakeGateway) -> None:
    pusher = PushgatewayPusher(gateway.url, instance="line-08", interval_s=60)
    await pusher.start()
    await _until(lambda: "PUT" in gateway.methods(), "the first push")
    await pusher.close(delete=False)
    assert "DELETE" not in gateway.methods()


async def test_push_failures_are_never_fatal_and_logged_once_a_minute(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.status = 500
    now = [1000.0]
    pusher = PushgatewayPusher(gateway.url, instance="line-09", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="fedcast.services.observability"):
        assert await pusher.push_once() is False
        now[0] += 10
        assert await pusher.push_once() is False
        assert await pusher.push_once() is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        now[0] += 61
        assert await pusher.push_once() is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "2 more failures" in warnings[1].getMessage()
    assert pusher.failures == 4
    gateway.status = 200
    assert await pusher.push_once() is True


async def test_unreachable_pushgateway_is_not_fatal() -> None:
    pusher = PushgatewayPusher(f"http://127.0.0.1:{_free_port()}", instance="line-10", timeout_s=2)
    await pusher.start()
    await _until(lambda: pusher.failures >= 1, "a failed push")
    await pusher.close()  # the DELETE fails too, quietly
    assert pusher.pushes == 0


def test_pusher_needs_an_instance() -> None:
    with pytest.raises(ConfigurationError):
        PushgatewayPusher("http://127.0.0.1:9091", instance="")


# -- the service runner wiring -------------------------------------------------------------------------


async def test_service_runner_serves_probes_and_deletes_the_push_group_on_clean_stop(
    gateway: FakeGateway,
) -> None:
    port = _free_port()
    config = ObservabilityConfig(port, "127.0.0.1", gateway.url, 1.0)
    ready = asyncio.Event()
    finish = asyncio.Event()

    async def run(stop: asyncio.Event) -> None:
        ready.set()
        await finish.wait()

    runner = asyncio.create_task(_observed("edge", run, ready.is_set, config, push_instance="line-11"))
    await _until(lambda: ready.is_set(), "the service to start")
    assert (await _get(port, "/readyz")).status == 200
    assert (await _get(port, "/healthz")).status == 200
    await _until(lambda: "PUT" in gateway.methods(), "the first push")
    finish.set()
    await runner
    assert gateway.methods()[-1] == "DELETE"
    with pytest.raises(OSError):
        await _get(port, "/healthz")


async def test_service_runner_keeps_the_push_group_after_a_crash(gateway: FakeGateway) -> None:
    config = ObservabilityConfig(0, "127.0.0.1", gateway.url, 1.0)  # port 0: no HTTP server

    async def run(stop: asyncio.Event) -> None:
        await _until(lambda: "PUT" in gateway.methods(), "the first push")
        raise RuntimeError("service crashed")

    with pytest.raises(RuntimeError):
        await _observed("edge", run, lambda: True, config, push_instance="line-12")
    assert "DELETE" not in gateway.methods()
