"""A real Prometheus scrapes a real federation over RabbitMQ; every dashboard query returns data.

The test starts ``/usr/bin/prometheus`` (Debian's package; .ci/run installs it) with a
temporary config that scrapes the demo's metrics endpoint on 127.0.0.1 every second,
runs ``fedcast demo``'s federation in-process over the real broker, then evaluates
every ``targets[].expr`` of the Grafana dashboard through Prometheus's HTTP API and
checks that each returns at least one finite sample. It also checks that the byte
counters Prometheus scraped agree with the sizes of the messages the transport
actually published (RabbitMQ reports a broadcast once, as the services count it).

One malformed message is published to the aggregator's queue so that the "rejected
by reason" panel has a real rejection to show; counters a healthy run never
increments (dropouts, retries, clipped values) are exported as 0 from start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedcast.demo import DemoConfig, DemoStatus, run_demo
from fedcast.services.observability import MetricsServer, initialize_series
from fedcast.services.runtime import make_transport
from fedcast.shared.metrics import MESSAGE_BYTES_RECEIVED, MESSAGE_BYTES_SENT

pytestmark = pytest.mark.broker

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PROMETHEUS = Path(os.environ.get("FEDCAST_TEST_PROMETHEUS", "/usr/bin/prometheus"))
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "base" / "grafana" / "fedcast-dashboard.json"
JOB = "fedcast-demo"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = self.get("/api/v1/query", **params)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        """The single value of ``expr``; 0 when it has no series (a counter never incremented)."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """Start a private Prometheus scraping ``targets`` every second; killed in the finalizer."""
    if not PROMETHEUS.exists():
        pytest.skip(
            f"{PROMETHEUS} not found: install Debian's prometheus package "
            "(apt-get install -y prometheus; .ci/run does) to run the dashboard-against-Prometheus test"
        )
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        log = tmp_path / "prometheus.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.process.kill()
        prometheus.process.wait(timeout=30)
    shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)


async def _until(check: Callable[[], bool], what: str, prometheus: Prometheus, attempts: int = 120) -> None:
    """Poll ``check`` (in a thread: it does blocking HTTP) about every 0.5 s; a bounded liveness wait."""
    for _ in range(attempts):
        if prometheus.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {prometheus.log.read_text()[-2000:]}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError):
            if await asyncio.to_thread(check):
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}; prometheus log: {prometheus.log.read_text()[-2000:]}")


def _dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                exprs.append((inner["title"], target["expr"]))
    return exprs


def _grafana_to_promql(expr: str, window_s: int) -> str:
    """Replace Grafana's interval variables by a window covering the whole run."""
    replaced = re.sub(r"\$__(rate_interval|range|interval)\b", f"{window_s}s", expr)
    assert "$" not in replaced, f"unhandled Grafana variable in {expr!r}"
    return replaced


def _registry_total(metric: Any, services: set[str]) -> int:
    """Current sum of a labelled counter over ``services``, read in-process."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["service"] in services:
                total += sample.value
    return int(total)


async def _inject_malformed_message(federation: str, status: DemoStatus) -> None:
    """Publish garbage to the aggregator's queue once the federation serves (a real rejection)."""
    while not status.ready:
        await asyncio.sleep(0.05)
    transport = make_transport(AMQP_URL, federation, service="prometheus-test")
    await transport.connect()
    try:
        await transport.send("aggregator", b"this is not a fedcast message")
    finally:
        await transport.close()


async def test_every_dashboard_query_returns_data_and_bytes_match(
    start_prometheus: Callable[[list[str]], Prometheus],
) -> None:
    for service in ("keyserver", "aggregator", "edge"):
        initialize_series(service)  # as every service does before its first scrape (run_demo too)
    status = DemoStatus()
    server = MetricsServer(lambda: status.ready, port=0, host="127.0.0.1")
    await server.start()
    try:
        prometheus = start_prometheus([f"127.0.0.1:{server.port}"])

        def target_up() -> bool:
            return bool(prometheus.query(f'up{{job="{JOB}"}} == 1'))

        await _until(target_up, "the first successful scrape", prometheus)
        readyz = await asyncio.to_thread(prometheus.query, f'up{{job="{JOB}"}}')
        assert readyz and readyz[0]["value"][1] == "1"

        protocol = {"aggregator", "edge"}
        sent_before = _registry_total(MESSAGE_BYTES_SENT, protocol)
        keyserver_sent_before = _registry_total(MESSAGE_BYTES_SENT, {"keyserver"})
        keyserver_received_before = _registry_total(MESSAGE_BYTES_RECEIVED, {"keyserver"})
        federation = f"promtest-{uuid.uuid4().hex[:8]}"
        started = time.time()
        injector = asyncio.create_task(_inject_malformed_message(federation, status))
        # Enough rounds for a few one-second scrapes while they run (3 clients: ~0.15 s a round).
        result = await run_demo(
            DemoConfig(
                n_clients=3,
                rounds=25,
                users_per_client=2,
                n_items=20,
                amqp_url=AMQP_URL,
                insecure_small_group=True,
                federation=federation,
            ),
            status=status,
        )
        await injector
        assert result.rounds_completed >= 25 and result.transport == "amqp"

        # Wait for a scrape taken after the run: the scraped totals equal the final registry totals.
        sent_after = _registry_total(MESSAGE_BYTES_SENT, protocol)
        sent_query = 'sum(fedcast_message_sent_bytes_total{service=~"aggregator|edge"})'
        await _until(
            lambda: prometheus.scalar(sent_query) == sent_after, "a scrape after the run", prometheus
        )

        # 1. Every dashboard expression returns at least one finite sample.
        window = math.ceil(time.time() - started) + 10
        outcomes: list[tuple[str, str, list[float]]] = []
        for title, expr in _dashboard_exprs():
            promql = _grafana_to_promql(expr, window)
            series = await asyncio.to_thread(prometheus.query, promql)
            values = [float(s["value"][1]) for s in series]
            outcomes.append((title, promql, values))
        print(f"\n{len(outcomes)} dashboard expressions, evaluated over the last {window}s:")
        for title, promql, values in outcomes:
            print(f"  [{title}] {promql}\n      -> {[round(v, 6) for v in values]}")
        empty = [(title, promql) for title, promql, values in outcomes if not values]
        no_finite = [
            (title, promql)
            for title, promql, values in outcomes
            if values and not any(map(math.isfinite, values))
        ]
        assert not empty, f"dashboard queries without data: {empty}"
        assert not no_finite, f"dashboard queries with only NaN/Inf: {no_finite}"
        # The injected message counts in increase(): its series was exported as 0 before it came.
        rejected = await asyncio.to_thread(
            prometheus.scalar,
            f'sum(increase(fedcast_messages_rejected_total{{service="aggregator",reason="malformed"}}[{window}s]))',
        )
        assert rejected >= 1

        # 2. Scraped byte counters == bytes the transport published (on_send, once per publish).
        by_endpoint = result.bytes_by_endpoint
        published_protocol = by_endpoint["aggregator"] + by_endpoint["client"] + by_endpoint["broadcast"]
        scraped_protocol = await asyncio.to_thread(prometheus.scalar, sent_query)
        assert int(scraped_protocol) - sent_before == published_protocol
        scraped_keyserver = await asyncio.to_thread(
            prometheus.scalar, 'sum(fedcast_message_sent_bytes_total{service="keyserver"})'
        )
        assert int(scraped_keyserver) - keyserver_sent_before == by_endpoint["reply"]
        # Key-service requests are counted on arrival only (the requesters do not count them); a
        # request sent while the federation stops may never be handled.
        scraped_requests = await asyncio.to_thread(
            prometheus.scalar, 'sum(fedcast_message_received_bytes_total{service="keyserver"})'
        )
        assert 0 < int(scraped_requests) - keyserver_received_before <= by_endpoint["keyserver"]
        assert result.bytes_total == sum(by_endpoint.values())
    finally:
        await server.close()
