"""InProcessTransport: the delivery semantics of fedcast.shared.transport.base, without a broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from fedcast.shared.errors import ConfigurationError, RequestTimeoutError, TransportError
from fedcast.shared.transport.base import AGGREGATOR, KEYSERVER, Delivery, client_endpoint
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker()


@pytest.fixture
async def transport(broker: InProcessBroker) -> AsyncIterator[InProcessTransport]:
    t = InProcessTransport(broker)
    await t.connect()
    yield t
    await t.close()


class Collector:
    """A handler that records bodies and lets a test wait for a count."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.deliveries: list[Delivery] = []
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.bodies.append(delivery.body)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float = 2.0) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.bodies) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.bodies


async def test_send_then_consume_keeps_order(transport: InProcessTransport) -> None:
    got = Collector()
    await transport.consume(AGGREGATOR, got)
    for i in range(50):
        await transport.send(AGGREGATOR, b"m%d" % i)
    assert await got.wait_for(50) == [b"m%d" % i for i in range(50)]
    assert all(d.endpoint == AGGREGATOR and not d.redelivered for d in got.deliveries)


async def test_messages_sent_before_the_consumer_wait_in_the_queue(
    broker: InProcessBroker, transport: InProcessTransport
) -> None:
    for i in range(3):
        await transport.send(KEYSERVER, b"early%d" % i, correlation_id=f"c{i}")
    assert broker.depth(KEYSERVER) == 3
    consumer = InProcessTransport(broker)  # another service, another "connection"
    await consumer.connect()
    got = Collector()
    await consumer.consume(KEYSERVER, got)
    assert await got.wait_for(3) == [b"early0", b"early1", b"early2"]
    assert [d.correlation_id for d in got.deliveries] == ["c0", "c1", "c2"]
    await consumer.close()


async def test_broadcast_reaches_every_broadcast_consumer_only(transport: InProcessTransport) -> None:
    a, b, direct_only = Collector(), Collector(), Collector()
    await transport.consume(client_endpoint("a"), a, broadcast=True)
    await transport.consume(client_endpoint("b"), b, broadcast=True)
    await transport.consume(AGGREGATOR, direct_only)
    await transport.broadcast(b"round 1")
    await transport.send(client_endpoint("a"), b"just a")
    assert await a.wait_for(2) == [b"round 1", b"just a"]
    assert await b.wait_for(1) == [b"round 1"]
    assert [d.endpoint for d in b.deliveries] == ["client.b"]
    await asyncio.sleep(0.01)
    assert direct_only.bodies == []


async def test_prefetch_bounds_concurrent_handlers(transport: InProcessTransport) -> None:
    running = peak = done = 0
    release = asyncio.Event()

    async def slow(_: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        done += 1

    await transport.consume(AGGREGATOR, slow, prefetch=3)
    for i in range(10):
        await transport.send(AGGREGATOR, b"%d" % i)
    await asyncio.sleep(0.05)
    assert running == 3  # saturated, not more
    release.set()
    async with asyncio.timeout(2):
        while done < 10:
            await asyncio.sleep(0.005)
    assert peak == 3


async def test_failing_handler_is_counted_logged_once_and_not_redelivered(
    transport: InProcessTransport, caplog: pytest.LogCaptureFixture
) -> None:
    got = Collector()

    async def picky(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("cannot parse")
        await got(delivery)

    await transport.consume(AGGREGATOR, picky)
    with caplog.at_level(logging.ERROR, logger="fedcast.shared.transport.inprocess"):
        for body in (b"ok1", b"poison", b"ok2"):
            await transport.send(AGGREGATOR, body)
        assert await got.wait_for(2) == [b"ok1", b"ok2"]
        await asyncio.sleep(0.01)
    assert transport.handler_errors == 1
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


async def test_request_reply(broker: InProcessBroker) -> None:
    server, client = InProcessTransport(broker), InProcessTransport(broker)
    await server.connect()
    await client.connect()

    async def echo(request: Delivery) -> None:
        await server.reply(request, b"re:" + request.body)

    await server.consume(KEYSERVER, echo)
    replies = await asyncio.gather(*(client.request(KEYSERVER, b"q%d" % i, timeout=2) for i in range(5)))
    assert replies == [b"re:q%d" % i for i in range(5)]
    await server.close()
    await client.close()


async def test_request_timeout_and_expired_request_is_not_handled(
    broker: InProcessBroker, transport: InProcessTransport
) -> None:
    with pytest.raises(RequestTimeoutError):
        await transport.request(KEYSERVER, b"anyone?", timeout=0.05)
    # The request expired in the queue: a consumer starting later does not answer it.
    got = Collector()
    await transport.consume(KEYSERVER, got)
    await asyncio.sleep(0.02)
    assert got.bodies == []
    assert broker.depth(KEYSERVER) == 0


async def test_close_twice_requeues_interrupted_messages_and_fails_later_use(broker: InProcessBroker) -> None:
    t = InProcessTransport(broker)
    await t.connect()
    started = asyncio.Event()

    async def stuck(_: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    await t.consume(AGGREGATOR, stuck)
    await t.send(AGGREGATOR, b"interrupted")
    await started.wait()
    await t.close()
    await t.close()
    with pytest.raises(TransportError):
        await t.send(AGGREGATOR, b"after close")
    # Like an unacked AMQP message, the interrupted one is redelivered to the next consumer.
    nxt = InProcessTransport(broker)
    await nxt.connect()
    got = Collector()
    await nxt.consume(AGGREGATOR, got)
    await got.wait_for(1)
    assert got.deliveries[0].redelivered
    await nxt.close()


async def test_pending_request_fails_on_close(transport: InProcessTransport) -> None:
    pending = asyncio.create_task(transport.request(KEYSERVER, b"q", timeout=5))
    await asyncio.sleep(0.01)
    await transport.close()
    with pytest.raises(TransportError):
        await pending


async def test_byte_accounting_hook(broker: InProcessBroker) -> None:
    seen: list[tuple[str, int]] = []
    t = InProcessTransport(broker, on_send=lambda endpoint, n: seen.append((endpoint, n)))
    await t.connect()
    await t.consume(client_endpoint("a"), Collector(), broadcast=True)
    await t.consume(client_endpoint("b"), Collector(), broadcast=True)
    await t.send(AGGREGATOR, b"12345")
    await t.broadcast(b"xyz")
    assert seen == [("aggregator", 5), ("client.a", 3), ("client.b", 3)]
    await t.close()


async def test_misuse_is_reported(broker: InProcessBroker) -> None:
    t = InProcessTransport(broker)
    with pytest.raises(TransportError):
        await t.send(AGGREGATOR, b"not connected")
    await t.connect()
    with pytest.raises(TransportError):
        await t.send("bad endpoint!", b"x")
    with pytest.raises(ConfigurationError):
        await t.consume(AGGREGATOR, Collector(), prefetch=0)
    with pytest.raises(TransportError):
        await t.reply(Delivery(b"x", AGGREGATOR), b"no reply_to")
    await t.close()


async def test_broadcast_before_any_consumer_is_counted_and_logged_once(
    broker: InProcessBroker, transport: InProcessTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="fedcast.shared.transport"):
        await transport.broadcast(b"announce")  # the aggregator's first announcement: nobody bound yet
        await transport.broadcast(b"announce again")
    assert transport.unroutable_broadcasts == 2
    lines = [r for r in caplog.records if "reached no endpoint" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO, logging.DEBUG]
    got = Collector()
    await transport.consume(client_endpoint("a"), got, broadcast=True)
    await transport.broadcast(b"window 3")
    assert await got.wait_for(1) == [b"window 3"]
    assert transport.unroutable_broadcasts == 2


async def test_expired_broadcasts_are_dropped_unread(
    broker: InProcessBroker, transport: InProcessTransport
) -> None:
    broker.bind_broadcast(client_endpoint("a"))  # bound by an earlier life, offline now
    for i in range(3):
        await transport.broadcast(b"announce %d" % i, expiration=0.01)
    await transport.broadcast(b"result")
    await transport.broadcast(b"current announce", expiration=5)
    await asyncio.sleep(0.05)
    got = Collector()
    await transport.consume(client_endpoint("a"), got, broadcast=True)
    assert await got.wait_for(2) == [b"result", b"current announce"]
    await asyncio.sleep(0.01)
    assert got.bodies == [b"result", b"current announce"]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigurationError):
            await transport.broadcast(b"x", expiration=bad)
