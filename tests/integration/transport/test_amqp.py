"""AmqpTransport against the real RabbitMQ: the in-process semantics, topology, and fault injection.

Every test runs in a federation of its own (random id); the ``fed`` fixture closes the
test's transports and deletes its queues and exchanges afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import pytest

from fedcast.shared.errors import ConfigurationError, RequestTimeoutError, TransportError
from fedcast.shared.transport.amqp import AmqpConfig, AmqpTransport, broker_policies
from fedcast.shared.transport.base import AGGREGATOR, KEYSERVER, Delivery, client_endpoint

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Tests use only these endpoints, so the cleanup knows every queue a test can have created.
ENDPOINTS = [KEYSERVER, AGGREGATOR, *(client_endpoint(f"c{i}") for i in range(3))]

pytestmark = pytest.mark.broker


class Fed:
    """One test federation: makes transports and cleans up after them."""

    def __init__(self, url: str = AMQP_URL) -> None:
        self.url = url
        self.id = f"test-{uuid.uuid4().hex[:12]}"
        self.transports: list[AmqpTransport] = []

    async def transport(self, name: str, **overrides: Any) -> AmqpTransport:
        settings: dict[str, Any] = {"reconnect_interval": 0.2, "operation_timeout": 5.0} | overrides
        config = AmqpConfig(self.url, self.id, connection_name=f"fedcast-test-{self.id}-{name}", **settings)
        transport = AmqpTransport.from_config(config)
        self.transports.append(transport)
        await transport.connect()
        return transport

    async def depth(self, endpoint: str) -> int:
        """Ready messages in the endpoint's queue, from a connection of its own."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"fedcast.{self.id}.{endpoint}", passive=True)
            assert queue.declaration_result.message_count is not None
            return queue.declaration_result.message_count
        finally:
            await connection.close()

    async def cleanup(self) -> None:
        for transport in self.transports:
            await transport.close()
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            for endpoint in ENDPOINTS:
                await channel.queue_delete(f"fedcast.{self.id}.{endpoint}")
            await channel.exchange_delete(f"fedcast.{self.id}")
            await channel.exchange_delete(f"fedcast.{self.id}.broadcast")
        finally:
            await connection.close()


@pytest.fixture
async def fed() -> AsyncIterator[Fed]:
    federation = Fed()
    try:
        yield federation
    finally:
        await federation.cleanup()


class Collector:
    """A handler that records deliveries (with their arrival time) and lets a test wait for them."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # seconds of "work" before a delivery counts as handled
        self.deliveries: list[Delivery] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]

    async def __call__(self, delivery: Delivery) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.deliveries.append(delivery)
        self.times.append(time.monotonic())
        self._changed.set()

    async def wait_until(self, done: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[bytes]:
        await self.wait_until(lambda c: len(c.deliveries) >= n, timeout)
        return self.bodies


async def test_send_consume_order_and_queued_before_consume(fed: Fed) -> None:
    producer = await fed.transport("producer")
    for i in range(3):  # no consumer yet: send declares the queue, the messages wait
        await producer.send(KEYSERVER, b"early%d" % i, correlation_id=f"c{i}")
    assert await fed.depth(KEYSERVER) == 3
    consumer = await fed.transport("consumer")
    got = Collector()
    await consumer.consume(KEYSERVER, got)
    for i in range(100):
        await producer.send(KEYSERVER, b"m%03d" % i)
    bodies = await got.wait_for(103)
    assert bodies == [b"early0", b"early1", b"early2"] + [b"m%03d" % i for i in range(100)]
    assert [d.correlation_id for d in got.deliveries[:3]] == ["c0", "c1", "c2"]
    assert all(d.endpoint == KEYSERVER and not d.redelivered for d in got.deliveries)


async def test_broadcast_reaches_broadcast_consumers_only(fed: Fed) -> None:
    t = await fed.transport("t")
    a, b, direct_only = Collector(), Collector(), Collector()
    await t.consume(client_endpoint("c0"), a, broadcast=True)
    await t.consume(client_endpoint("c1"), b, broadcast=True)
    await t.consume(AGGREGATOR, direct_only)
    await t.broadcast(b"round 1")
    await t.send(client_endpoint("c0"), b"only c0")
    assert await a.wait_for(2) == [b"round 1", b"only c0"]
    assert await b.wait_for(1) == [b"round 1"]
    await asyncio.sleep(0.1)
    assert direct_only.bodies == [] and b.bodies == [b"round 1"]


async def test_prefetch_bounds_concurrent_handlers(fed: Fed) -> None:
    t = await fed.transport("t")
    running = peak = done = 0
    release = asyncio.Event()

    async def slow(_: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        done += 1

    await t.consume(AGGREGATOR, slow, prefetch=3)
    for i in range(10):
        await t.send(AGGREGATOR, b"%d" % i)
    await asyncio.sleep(0.3)
    assert running == 3  # the broker holds back the other 7 until acks arrive
    release.set()
    async with asyncio.timeout(5):
        while done < 10:
            await asyncio.sleep(0.01)
    assert peak == 3


async def test_failing_handler_is_acked_counted_and_logged_once(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    t = await fed.transport("t")
    got = Collector()

    async def picky(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("cannot parse")
        await got(delivery)

    with caplog.at_level(logging.ERROR, logger="fedcast.shared.transport.amqp"):
        await t.consume(AGGREGATOR, picky, prefetch=1)
        for body in (b"ok1", b"poison", b"ok2"):
            await t.send(AGGREGATOR, body)
        assert await got.wait_for(2) == [b"ok1", b"ok2"]
        await asyncio.sleep(0.2)  # a redelivery of the poison message would show up here
    assert t.handler_errors == 1
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    assert await fed.depth(AGGREGATOR) == 0


async def test_garbage_and_large_bodies_are_delivered_as_bytes(fed: Fed) -> None:
    t = await fed.transport("t", max_message_bytes=4 * 1024 * 1024)
    got = Collector()
    await t.consume(AGGREGATOR, got)
    garbage, large = b"\xff\x00not msgpack\x80", os.urandom(3 * 1024 * 1024)
    for body in (garbage, b"", large):
        await t.send(AGGREGATOR, body)
    assert await got.wait_for(3) == [garbage, b"", large]
    with pytest.raises(TransportError, match="exceeds"):
        await t.send(AGGREGATOR, bytes(4 * 1024 * 1024 + 1))  # refused before reaching the broker
    await t.send(AGGREGATOR, b"still fine")
    await got.wait_for(4)
    await asyncio.sleep(0.1)
    assert await fed.depth(AGGREGATOR) == 0


async def test_request_reply_and_timeout(fed: Fed) -> None:
    server, client = await fed.transport("server"), await fed.transport("client")

    async def echo(request: Delivery) -> None:
        await server.reply(request, b"re:" + request.body)

    await server.consume(KEYSERVER, echo)
    replies = await asyncio.gather(*(client.request(KEYSERVER, b"q%d" % i, timeout=5) for i in range(5)))
    assert replies == [b"re:q%d" % i for i in range(5)]
    with pytest.raises(RequestTimeoutError):
        await client.request(AGGREGATOR, b"nobody consumes this", timeout=0.3)
    await asyncio.sleep(0.2)
    assert await fed.depth(AGGREGATOR) == 0  # the request expired with its timeout


async def test_client_queues_are_bounded_by_length_and_ttl(fed: Fed) -> None:
    t = await fed.transport("t", client_max_length=2, client_message_ttl=0.3)
    device = await fed.transport("device", client_max_length=2, client_message_ttl=0.3)
    await device.consume(client_endpoint("c0"), Collector(), broadcast=True)
    await device.close()  # the device goes offline; its queue stays bound to the fanout
    for i in range(5):  # an offline device: nobody consumes client.c0; every send is confirmed
        await t.send(client_endpoint("c0"), b"x%d" % i)
    assert 2 <= await fed.depth(client_endpoint("c0")) <= 3  # drop-head: the oldest went first
    await t.broadcast(b"round 2")  # a full queue must not fail the broadcast to everyone else
    await asyncio.sleep(0.5)
    got = Collector()
    await t.consume(client_endpoint("c0"), got)  # same arguments: no PRECONDITION_FAILED
    await asyncio.sleep(0.2)
    assert got.bodies == []  # expired (x-message-ttl)
    await t.send(client_endpoint("c0"), b"fresh")
    assert await got.wait_for(1) == [b"fresh"]


async def test_broadcast_before_any_client_is_counted_not_raised(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    # The aggregator's first announcement at start-up: no client queue is bound to the fanout yet.
    aggregator = await fed.transport("aggregator")
    with caplog.at_level(logging.DEBUG, logger="fedcast.shared.transport"):
        await aggregator.broadcast(b"announce", expiration=10)  # used to raise "unroutable (NO_ROUTE)"
        await aggregator.broadcast(b"announce again", expiration=10)  # the next ready window
    assert aggregator.unroutable_broadcasts == 2
    lines = [r for r in caplog.records if "reached no endpoint" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO, logging.DEBUG]  # said once, then quiet
    device = await fed.transport("device")
    got = Collector()
    await device.consume(client_endpoint("c0"), got, broadcast=True)
    await aggregator.broadcast(b"announce, window 3", expiration=10)  # the channel is fine
    assert await got.wait_for(1) == [b"announce, window 3"]
    assert aggregator.unroutable_broadcasts == 2


async def test_expired_announcements_do_not_pile_up_for_an_offline_client(fed: Fed) -> None:
    aggregator, device = await fed.transport("aggregator"), await fed.transport("device")
    await device.consume(client_endpoint("c0"), Collector(), broadcast=True)
    await device.close()  # offline; its queue stays bound to the fanout
    for i in range(4):  # re-announced every ready window (0.2 s here) while nobody answers
        await aggregator.broadcast(b"announce %d" % i, expiration=0.2)
        await asyncio.sleep(0.25)
    await aggregator.broadcast(b"result")  # no expiration: kept (the queue's 1 h TTL)
    await aggregator.broadcast(b"current announce", expiration=10)
    back = await fed.transport("device-back")
    got = Collector()
    await back.consume(client_endpoint("c0"), got, broadcast=True)
    assert await got.wait_for(2) == [b"result", b"current announce"]
    await asyncio.sleep(0.2)
    assert got.bodies == [b"result", b"current announce"]  # not the four stale copies
    with pytest.raises(ConfigurationError):
        await aggregator.broadcast(b"x", expiration=0)


async def test_close_interrupts_running_handlers_without_failure_logs(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    producer, edge = await fed.transport("producer"), await fed.transport("edge")
    started = asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:  # an edge fetching keys for an envelope
        started.set()
        await edge.request(KEYSERVER, b"get keys", timeout=30)  # nobody answers during the shutdown
        await edge.send(AGGREGATOR, b"upload")
        finished.append(delivery.body)

    # As at an edge's start-up: its reply queue and the aggregator's queue are declared already.
    # (A handler cancelled in the middle of a declaration makes aiormq close that channel with a
    # WARNING of its own; the connection is closed right after anyway.)
    with pytest.raises(RequestTimeoutError):
        await edge.request(KEYSERVER, b"params", timeout=0.2)
    await edge.send(AGGREGATOR, b"ready")
    await edge.consume(client_endpoint("c0"), handler)
    await producer.send(client_endpoint("c0"), b"envelope")
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.DEBUG):
        begun = time.monotonic()
        await edge.close()
        assert time.monotonic() - begun < 3
    assert finished == [] and edge.handler_errors == 0
    # Before: the handler went on with "transport closed while waiting for a reply" or, sending,
    # "transport is closed", which services log at WARNING as if something had failed.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("interrupted by close" in r.getMessage() for r in caplog.records)
    again = await fed.transport("edge-again")  # not lost: the next life gets it again
    got = Collector()
    await again.consume(client_endpoint("c0"), got)
    assert await got.wait_for(1) == [b"envelope"]
    assert got.deliveries[0].redelivered


async def test_send_to_a_deleted_queue_is_reported_then_redeclared(fed: Fed) -> None:
    t = await fed.transport("t")
    await t.send(AGGREGATOR, b"declares the queue")
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.queue_delete(f"fedcast.{fed.id}.{AGGREGATOR}")  # an operator deletes it
    await connection.close()
    with pytest.raises(TransportError, match="unroutable"):
        await t.send(AGGREGATOR, b"lost?")  # mandatory=True: returned, not silently dropped
    await t.send(AGGREGATOR, b"next send declares it again")
    assert await fed.depth(AGGREGATOR) == 1


async def test_lifecycle_errors(fed: Fed) -> None:
    t = await fed.transport("t")
    await t.close()
    await t.close()
    with pytest.raises(TransportError):
        await t.send(AGGREGATOR, b"after close")
    unreachable = AmqpTransport("amqp://guest:guest@127.0.0.1:1/", fed.id)
    with pytest.raises(TransportError):
        await unreachable.connect()
    await unreachable.close()


async def test_connect_to_a_silent_peer_times_out_without_leaving_a_reconnect_task(fed: Fed) -> None:
    # Accepts TCP, never speaks AMQP: the hung first connect must not keep retrying in the background.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = AmqpConfig(f"amqp://guest:guest@127.0.0.1:{port}/", fed.id, connect_timeout=0.5)
    transport = AmqpTransport.from_config(config)
    started = time.monotonic()
    with pytest.raises(TransportError):
        await transport.connect()
    assert time.monotonic() - started < 3
    await asyncio.sleep(0.1)
    leftovers = [t for t in asyncio.all_tasks() if "connection_factory" in repr(t.get_coro())]
    assert leftovers == []
    server.close()
    with pytest.raises(ConfigurationError):
        AmqpConfig(AMQP_URL, "bad federation!")
    with pytest.raises(ConfigurationError):
        AmqpConfig("http://127.0.0.1/", "ok")
    with pytest.raises(ConfigurationError):
        AmqpConfig(AMQP_URL, "ok", max_message_bytes=1 << 30)


# -- fault injection -------------------------------------------------------------------------


async def _rabbitmqctl(*args: str, cleanup: bool = False) -> str:
    """Run rabbitmqctl; skip the test where it cannot run (a cleanup step fails the test instead)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(ctl):
        pytest.skip("rabbitmqctl is not installed")
    process = await asyncio.create_subprocess_exec(
        ctl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        message = f"rabbitmqctl {args[0]} failed: {err.decode(errors='replace')[:200]}"
        if cleanup:
            raise AssertionError(message)
        pytest.skip(message)
    return out.decode()


async def _close_from_broker(connection_name: str) -> None:
    """Close, broker side, the connection whose client_properties carry ``connection_name``."""
    # RabbitMQ 3.10's close_connection takes the connection's Erlang pid, not its "name" column.
    listing = await _rabbitmqctl("list_connections", "-q", "pid", "client_properties")
    pids = [
        line.split("\t")[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    assert len(pids) == 1, listing
    await _rabbitmqctl("close_connection", pids[0], "fedcast fault-injection test")


async def _wait_reconnect(transport: AmqpTransport, count: int) -> None:
    async with asyncio.timeout(10):
        while transport.reconnects < count:
            await asyncio.sleep(0.01)


async def test_consumer_and_sender_recover_from_a_broker_side_close(fed: Fed) -> None:
    producer, consumer = await fed.transport("producer"), await fed.transport("consumer")
    got = Collector(delay=0.005)  # handlers in flight when the connection dies: redelivered
    await consumer.consume(AGGREGATOR, got, prefetch=16)
    total, send_retries = 600, 0

    async def echo(request: Delivery) -> None:
        await consumer.reply(request, b"re:" + request.body)

    await consumer.consume(KEYSERVER, echo)
    assert await producer.request(KEYSERVER, b"before", timeout=5) == b"re:before"  # reply queue exists

    async def stream() -> None:
        nonlocal send_retries
        for i in range(total):
            while True:
                try:
                    await producer.send(AGGREGATOR, b"%05d" % i)
                    break
                except TransportError:  # unconfirmed: retry (at-least-once)
                    send_retries += 1
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.003)

    streaming = asyncio.create_task(stream())
    await got.wait_for(50)
    t_kill = time.monotonic()
    await _close_from_broker(consumer.config.connection_name)
    t_killed = time.monotonic()
    await _wait_reconnect(consumer, 1)
    t_reconnected = time.monotonic()
    assert not streaming.done()  # the connection died in the middle of the stream
    received_before = len(got.deliveries)
    await streaming
    expected = {b"%05d" % i for i in range(total)}
    await got.wait_until(lambda c: expected <= set(c.bodies), timeout=10)
    first_after = next(t for t in got.times if t > t_reconnected)
    stall = max(
        b - a for a, b in zip(got.times, got.times[1:], strict=False)
    )  # the outage, as the consumer saw it
    assert set(got.bodies) == expected  # nothing lost; redeliveries allowed
    duplicates = len(got.bodies) - total
    redelivered = sum(d.redelivered for d in got.deliveries)

    # The sender side: kill the producer's connection; a send after the reconnect succeeds, and
    # its exclusive reply queue (deleted with the old connection) is back under the same name.
    await _close_from_broker(producer.config.connection_name)
    await _wait_reconnect(producer, 1)
    await producer.send(AGGREGATOR, b"after reconnect")
    await got.wait_until(lambda c: b"after reconnect" in c.bodies)
    assert await producer.request(KEYSERVER, b"after", timeout=5) == b"re:after"
    print(
        f"\nfault injection: rabbitmqctl list+close took {t_killed - t_kill:.2f} s; consumer reconnected "
        f"{t_reconnected - t_kill:.2f} s after the kill began; longest gap between deliveries "
        f"{stall:.3f} s; first message {first_after - t_reconnected:.3f} s after the reconnect; "
        f"{total} messages all received ({received_before} before the reconnect), {duplicates} duplicates, "
        f"{redelivered} flagged redelivered, {send_retries} send retries"
    )


# -- broker-side limits (the deployment's policies) ---------------------------------------------


@pytest.fixture
async def private_vhost() -> AsyncIterator[str]:
    """A vhost of the test's own: its policies, queues and exchanges are deleted with it."""
    name = f"fedcast-test-{uuid.uuid4().hex[:12]}"
    await _rabbitmqctl("add_vhost", name)
    try:
        user = urlsplit(AMQP_URL).username or "guest"
        await _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield name
    finally:
        await _rabbitmqctl("delete_vhost", name, cleanup=True)


def _vhost_url(vhost: str) -> str:
    return urlunsplit(urlsplit(AMQP_URL)._replace(path="/" + quote(vhost, safe="")))


async def _wait_for_policies(vhost: str, expected: dict[str, str]) -> None:
    """Until ``rabbitmqctl list_queues`` shows each queue under its expected policy."""
    async with asyncio.timeout(30):
        while True:
            listing = await _rabbitmqctl(
                "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "policy"
            )
            found = dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)
            if all(found.get(queue) == policy for queue, policy in expected.items()):
                return
            await asyncio.sleep(0.5)


async def test_service_queue_over_its_policy_length_refuses_publishes(private_vhost: str) -> None:
    fed = Fed(_vhost_url(private_vhost))
    try:
        flooder = await fed.transport("flooder")
        # The queues exist before the policy, as in a running deployment: a policy reaches them
        # without a redeclaration (x-arguments would not: PRECONDITION_FAILED on redeclaring).
        await flooder.send(AGGREGATOR, b"m0")
        await flooder.send(client_endpoint("c0"), b"for c0")
        for policy in broker_policies(service_max_length=3):
            await _rabbitmqctl(*policy.rabbitmqctl_args(private_vhost))
        await _wait_for_policies(
            private_vhost,
            {
                f"fedcast.{fed.id}.{AGGREGATOR}": "fedcast-service-queues",
                f"fedcast.{fed.id}.{client_endpoint('c0')}": "fedcast-client-queues",
            },
        )
        accepted = 1
        with pytest.raises(TransportError, match="rejected by the broker") as refused:
            async with asyncio.timeout(10):  # a nack, never a hang
                for i in range(1, 50):
                    await flooder.send(AGGREGATOR, b"m%d" % i)
                    accepted += 1
        assert not isinstance(refused.value, RequestTimeoutError)
        assert 3 <= accepted <= 4  # max-length 3; a quorum queue takes one message past it
        with pytest.raises(TransportError, match="rejected by the broker"):
            await flooder.send(AGGREGATOR, b"still full")
        # Nothing crashed: the flooder's channel still publishes elsewhere, the aggregator
        # declares its queue with its usual arguments and drains it, and then it takes more.
        await flooder.send(client_endpoint("c0"), b"still fine")
        aggregator = await fed.transport("aggregator")
        got = Collector()
        await aggregator.consume(AGGREGATOR, got)
        assert await got.wait_for(accepted) == [b"m%d" % i for i in range(accepted)]
        await flooder.send(AGGREGATOR, b"after draining")
        assert (await got.wait_for(accepted + 1))[-1] == b"after draining"
        assert await fed.depth(client_endpoint("c0")) == 2
    finally:
        await fed.cleanup()
