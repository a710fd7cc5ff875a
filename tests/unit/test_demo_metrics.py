"""The byte counters agree with what the in-process transport actually queued.

The in-process transport reports a broadcast once per receiving endpoint (it puts one
copy on each bound queue), while the services count it once, as sent: so the bytes
queued for ``client.*`` endpoints are the unicast bytes plus N copies of every broadcast.
The same check over RabbitMQ (a broadcast reported once) runs against a real
Prometheus in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

from collections import Counter

from fedcast.demo import DemoConfig, DemoStatus, run_demo
from fedcast.shared.metrics import MESSAGE_BYTES_RECEIVED, MESSAGE_BYTES_SENT
from fedcast.shared.wire.messages import MessageType

BROADCAST_TYPES = {MessageType.ANNOUNCE.value, MessageType.RESULT.value}  # Outgoing(None, ...)


def _by_service_type(metric: object) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[(sample.labels["service"], sample.labels["type"])] += int(sample.value)
    return totals


async def test_sent_byte_counters_match_the_transport_accounting() -> None:
    n_clients = 3
    sent_before = _by_service_type(MESSAGE_BYTES_SENT)
    received_before = _by_service_type(MESSAGE_BYTES_RECEIVED)
    status = DemoStatus()
    result = await run_demo(
        DemoConfig(n_clients=n_clients, rounds=3, users_per_client=2, n_items=20, insecure_small_group=True),
        status=status,
    )
    assert not status.ready  # cleared on shutdown
    sent = _by_service_type(MESSAGE_BYTES_SENT)
    sent.subtract(sent_before)
    received = _by_service_type(MESSAGE_BYTES_RECEIVED)
    received.subtract(received_before)

    aggregator_broadcast = sum(v for (s, t), v in sent.items() if s == "aggregator" and t in BROADCAST_TYPES)
    aggregator_unicast = sum(
        v for (s, t), v in sent.items() if s == "aggregator" and t not in BROADCAST_TYPES
    )
    edge_sent = sum(v for (s, _), v in sent.items() if s == "edge")
    keyserver_sent = sum(v for (s, _), v in sent.items() if s == "keyserver")
    by_endpoint = result.bytes_by_endpoint

    assert aggregator_broadcast > 0 and aggregator_unicast > 0
    assert by_endpoint["client"] == aggregator_unicast + n_clients * aggregator_broadcast
    assert by_endpoint["aggregator"] == edge_sent
    assert by_endpoint["reply"] == keyserver_sent
    # Key-service requests are counted only on arrival; one sent while the demo stops may be lost.
    keyserver_received = sum(v for (s, _), v in received.items() if s == "keyserver")
    assert 0 < keyserver_received <= by_endpoint["keyserver"]
    assert result.bytes_total == sum(by_endpoint.values())
