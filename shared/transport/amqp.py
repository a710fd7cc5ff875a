"""RabbitMQ transport (aio-pika): one robust connection per process.

Topology of federation ``F`` (all names derive from the federation id):

* ``fedcast.F``: durable **direct** exchange, routing key = endpoint;
* ``fedcast.F.broadcast``: durable **fanout** exchange;
* ``fedcast.F.<endpoint>``: durable **quorum** queue per endpoint, bound to ``fedcast.F``
  with the endpoint as routing key, and to the fanout once consumed with ``broadcast=True``.
  ``client.*`` queues also carry ``x-message-ttl`` (default 1 h: round messages are stale
  by then), ``x-max-length`` (default 1,000) and ``x-overflow: drop-head``, so an
  offline device cannot fill the broker: its oldest (stalest) messages go first, and a
  full queue never makes the broker nack a publish, which for a fanout would fail the
  aggregator's broadcast to every other client (a quorum queue holds one message past
  the limit);
* ``fedcast.F.reply.<uuid>``: this process's RPC reply queue, classic, exclusive, auto-delete.

Why a named reply queue rather than direct reply-to (``amq.rabbitmq.reply-to``): the
direct reply-to address embeds the channel, so after a reconnect every in-flight
request's address is dead and the pseudo-queue cannot be redeclared by a robust channel.
A named exclusive queue is redeclared under the *same* name by ``connect_robust``, so a
reply sent after the reconnect still reaches the waiting request.

Channels: one publisher-confirm channel (exchanges, sends, replies) and one channel per
``consume`` call, whose ``basic.qos`` is that consumer's prefetch. ``connect_robust``
restores channels, qos, queues, bindings and consumers after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import aio_pika
import aio_pika.abc
import pamqp.exceptions
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from pamqp.commands import Basic

from shared.errors import ConfigurationError, RequestTimeoutError, TransportError
from shared.transport.base import Delivery, Handler, Transport

__all__ = ["AmqpConfig", "AmqpTransport", "SendHook"]

log = logging.getLogger(__name__)

SendHook = Callable[[str, int], None]
"""``on_send(endpoint, n_bytes)``: called once per published message (a broadcast counts once)."""

_FEDERATION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BROKER_ERRORS = (AMQPError, OSError, pamqp.exceptions.PAMQPException)  # OSError covers TimeoutError
_RABBITMQ_MAX_MESSAGE = 128 * 1024 * 1024  # RabbitMQ's default max_message_size


@dataclass(frozen=True)
class AmqpConfig:
    """Connection and topology settings; validated on construction (:class:`ConfigurationError`)."""

    url: str
    federation: str
    connection_name: str = "fedcast"  # shown by `rabbitmqctl list_connections client_properties`
    prefetch: int = 8  # per consumer, when consume() is not given one
    heartbeat: int = 30  # seconds; a dead peer is noticed within about two of them
    connect_timeout: float = 10.0
    operation_timeout: float = 10.0  # one declare or confirmed publish
    reconnect_interval: float = 1.0
    client_message_ttl: float = 3600.0  # seconds a message waits in a client.* queue
    client_max_length: int = 1000  # messages in a client.* queue before publishes are rejected
    max_message_bytes: int = 64 * 1024 * 1024  # refused before publishing (the broker would kill the channel)

    def __post_init__(self) -> None:
        if not self.url.startswith(("amqp://", "amqps://")):
            raise ConfigurationError("url must start with amqp:// or amqps://")
        if not _FEDERATION.fullmatch(self.federation):
            raise ConfigurationError(f"federation id must match [A-Za-z0-9._-]{{1,64}}: {self.federation!r}")
        if not (0 < len(self.connection_name) <= 255 and self.connection_name.isprintable()):
            raise ConfigurationError("connection_name must be 1-255 printable characters")
        if not 1 <= self.prefetch <= 65535:
            raise ConfigurationError(f"prefetch must be in 1..65535, got {self.prefetch}")
        if not 0 <= self.heartbeat <= 3600:
            raise ConfigurationError(f"heartbeat must be in 0..3600 s, got {self.heartbeat}")
        for name in ("connect_timeout", "operation_timeout", "reconnect_interval"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if not 0.001 <= self.client_message_ttl <= 2**32 / 1000 - 1:
            raise ConfigurationError("client_message_ttl must be in 1 ms..49 days")
        if not 1 <= self.client_max_length <= 10_000_000:
            raise ConfigurationError("client_max_length must be in 1..10,000,000")
        if not 1 <= self.max_message_bytes <= _RABBITMQ_MAX_MESSAGE:
            raise ConfigurationError("max_message_bytes must be in 1..128 MiB (RabbitMQ's limit)")

    @property
    def exchange(self) -> str:
        """The direct exchange."""
        return f"fedcast.{self.federation}"

    @property
    def broadcast_exchange(self) -> str:
        """The fanout exchange."""
        return f"fedcast.{self.federation}.broadcast"

    def queue_name(self, endpoint: str) -> str:
        """The durable queue of ``endpoint``."""
        return f"fedcast.{self.federation}.{endpoint}"

    def queue_arguments(self, endpoint: str) -> dict[str, str | int]:
        """The queue's arguments; every declaration must use exactly these (else PRECONDITION_FAILED)."""
        arguments: dict[str, str | int] = {"x-queue-type": "quorum"}
        if endpoint.startswith("client."):
            arguments["x-message-ttl"] = round(self.client_message_ttl * 1000)
            arguments["x-max-length"] = self.client_max_length
            arguments["x-overflow"] = "drop-head"
        return arguments


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn aio-pika/aiormq/socket errors into TransportError at the module boundary."""
    try:
        yield
    except DeliveryError as exc:
        frame = exc.frame
        if isinstance(frame, Basic.Nack):
            raise TransportError(f"{what}: rejected by the broker (destination queue full?)") from exc
        if isinstance(frame, Basic.Return):
            raise TransportError(f"{what}: unroutable ({frame.reply_text})") from exc
        raise TransportError(f"{what}: not confirmed ({exc})") from exc
    except _BROKER_ERRORS as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from exc


class AmqpTransport(Transport):
    """A :class:`Transport` over RabbitMQ; see the module docstring for the topology."""

    def __init__(
        self,
        url: str,
        federation: str,
        *,
        connection_name: str = "fedcast",
        prefetch: int = 8,
        client_message_ttl: float = 3600.0,
        client_max_length: int = 1000,
        on_send: SendHook | None = None,
    ) -> None:
        """The common settings here; all of them through :meth:`from_config`."""
        self.config = AmqpConfig(
            url,
            federation,
            connection_name=connection_name,
            prefetch=prefetch,
            client_message_ttl=client_message_ttl,
            client_max_length=client_max_length,
        )
        self._on_send = on_send
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._direct: aio_pika.abc.AbstractExchange | None = None
        self._fanout: aio_pika.abc.AbstractExchange | None = None
        self._declared: set[str] = set()  # endpoints whose queue+binding this process declared
        self._reply_queue: str | None = None
        self._reply_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._closed = False
        self.handler_errors = 0
        """Messages whose handler raised (each acked after one log line)."""
        self.reconnects = 0
        """Times the connection was re-established."""

    @classmethod
    def from_config(cls, config: AmqpConfig, *, on_send: SendHook | None = None) -> AmqpTransport:
        """A transport with every setting of ``config``."""
        transport = cls(config.url, config.federation, on_send=on_send)
        transport.config = config
        return transport

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the robust connection and the confirm channel; declare both exchanges."""
        if self._closed:
            raise TransportError("transport is closed")
        if self._connection is not None:
            return
        cfg = self.config
        # Built by hand rather than with connect_robust() so that a failed or timed-out first
        # connect can be closed: otherwise its reconnect task could outlive the error.
        connection = aio_pika.RobustConnection(
            make_url(cfg.url, heartbeat=cfg.heartbeat, reconnect_interval=cfg.reconnect_interval),
            client_properties={"connection_name": cfg.connection_name},
        )
        try:
            with _translated(f"connect to federation {cfg.federation}"):
                async with asyncio.timeout(cfg.connect_timeout):
                    await connection.connect(timeout=cfg.connect_timeout)
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                    self._direct = await channel.declare_exchange(
                        cfg.exchange, aio_pika.ExchangeType.DIRECT, durable=True
                    )
                    self._fanout = await channel.declare_exchange(
                        cfg.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=True
                    )
        except BaseException:
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await connection.close()
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection, self._channel = connection, channel

    async def close(self) -> None:
        """Fail pending requests and close the connection (and with it every consumer); idempotent."""
        if self._closed:
            return
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("transport closed while waiting for a reply"))
        if self._connection is not None:
            with contextlib.suppress(*_BROKER_ERRORS):
                await self._connection.close()

    def _on_reconnect(self, *_: object) -> None:
        self.reconnects += 1
        log.warning("reconnected to the broker (federation %s)", self.config.federation)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, endpoint: str, body: bytes, *, correlation_id: str | None = None) -> None:
        """Publish to ``endpoint``'s queue (declared first if needed); returns once confirmed."""
        await self._publish(endpoint, body, correlation_id=correlation_id)

    async def broadcast(self, body: bytes) -> None:
        """Publish to the fanout; not mandatory (no bound endpoint is not an error).

        Raises :class:`TransportError` if any bound queue rejected it (a full ``client.*`` queue):
        the broker nacks the publish as a whole, although the other queues did get the message.
        """
        channel = self._open_channel()
        assert self._fanout is not None
        self._check_size(body)
        with _translated("broadcast"):
            async with asyncio.timeout(self.config.operation_timeout):
                await channel.ready()
                await self._fanout.publish(self._message(body), routing_key="")
        if self._on_send is not None:
            self._on_send("*", len(body))

    async def reply(self, request: Delivery, body: bytes) -> None:
        """Answer ``request`` through the default exchange; dropped if the requester is gone."""
        channel = self._open_channel()
        if request.reply_to is None:
            raise TransportError("cannot reply to a message without reply_to")
        self._check_size(body)
        message = aio_pika.Message(body, correlation_id=request.correlation_id)
        with _translated(f"reply to {request.reply_to}"):
            async with asyncio.timeout(self.config.operation_timeout):
                await channel.ready()
                await channel.default_exchange.publish(message, routing_key=request.reply_to)
        if self._on_send is not None:
            self._on_send(request.reply_to, len(body))

    async def request(self, endpoint: str, body: bytes, *, timeout: float) -> bytes:
        """RPC with a fresh correlation id; the request expires in the queue after ``timeout`` s."""
        reply_to = await self._ensure_reply_queue()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._publish(
                    endpoint, body, correlation_id=correlation_id, reply_to=reply_to, expiration=timeout
                )
                return await future
        except TimeoutError as exc:
            raise RequestTimeoutError(f"no reply from {endpoint!r} within {timeout} s") from exc
        finally:
            del self._pending[correlation_id]
            if future.done() and not future.cancelled():
                future.exception()  # mark a close()-time failure as seen: no "never retrieved" log

    def _open_channel(self) -> aio_pika.abc.AbstractRobustChannel:
        if self._closed:
            raise TransportError("transport is closed")
        if self._channel is None:
            raise TransportError("transport is not connected")
        return self._channel

    def _check_size(self, body: bytes) -> None:
        if len(body) > self.config.max_message_bytes:
            raise TransportError(f"message of {len(body)} bytes exceeds {self.config.max_message_bytes}")

    def _message(
        self,
        body: bytes,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=expiration,
        )

    async def _publish(
        self,
        endpoint: str,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
    ) -> None:
        channel = self._open_channel()
        assert self._direct is not None
        _check_endpoint(endpoint)
        self._check_size(body)
        with _translated(f"send to {endpoint}"):
            try:
                async with asyncio.timeout(self.config.operation_timeout):
                    await channel.ready()  # during a reconnect: wait, within the timeout
                    if endpoint not in self._declared:
                        # Sends may precede the consumer: create its queue and binding now, with the
                        # consumer's exact arguments; not robust (durable, nothing to restore).
                        queue = await channel.declare_queue(
                            self.config.queue_name(endpoint),
                            durable=True,
                            arguments=self.config.queue_arguments(endpoint),
                            robust=False,
                        )
                        await queue.bind(self._direct, routing_key=endpoint, robust=False)
                        self._declared.add(endpoint)
                    message = self._message(body, correlation_id, reply_to, expiration)
                    await self._direct.publish(message, routing_key=endpoint, mandatory=True)
            except DeliveryError:
                # Returned: someone deleted the queue; declare it again on the next send.
                self._declared.discard(endpoint)
                raise
        if self._on_send is not None:
            self._on_send(endpoint, len(body))

    # -- receiving ---------------------------------------------------------------------------

    async def consume(
        self, endpoint: str, handler: Handler, *, broadcast: bool = False, prefetch: int | None = None
    ) -> None:
        """Declare and bind ``endpoint``'s queue on a channel of its own and start consuming.

        ``prefetch`` defaults to the config's. The channel, its qos, the queue, its bindings
        and the consumer are restored by the robust connection after a reconnect.
        """
        self._open_channel()
        assert self._connection is not None
        _check_endpoint(endpoint)
        prefetch = self.config.prefetch if prefetch is None else prefetch
        if not 1 <= prefetch <= 65535:
            raise ConfigurationError(f"prefetch must be in 1..65535, got {prefetch}")
        cfg = self.config
        channel = self._connection.channel(publisher_confirms=False)
        try:
            with _translated(f"consume {endpoint}"):
                async with asyncio.timeout(cfg.operation_timeout):
                    await channel.initialize()
                    await channel.set_qos(prefetch_count=prefetch)
                    queue = await channel.declare_queue(
                        cfg.queue_name(endpoint), durable=True, arguments=cfg.queue_arguments(endpoint)
                    )
                    await queue.bind(cfg.exchange, routing_key=endpoint)
                    if broadcast:
                        await queue.bind(cfg.broadcast_exchange, routing_key="")
                    await queue.consume(partial(self._on_message, endpoint, handler))
        except BaseException:
            # A half-set-up channel would otherwise be "restored" on every reconnect.
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await channel.close()
            raise
        self._declared.add(endpoint)

    async def _on_message(
        self, endpoint: str, handler: Handler, message: aio_pika.abc.AbstractIncomingMessage
    ) -> None:
        delivery = Delivery(
            body=message.body,
            endpoint=endpoint,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            redelivered=bool(message.redelivered),
        )
        try:
            # Handler errors are swallowed inside, so process() acks; only a cancellation (the
            # channel is closing) leaves it with an exception, and then requeue=True.
            async with message.process(requeue=True, ignore_processed=True):
                try:
                    await handler(delivery)
                except Exception:
                    self.handler_errors += 1
                    log.exception("handler for %s failed; message acked and dropped", endpoint)
        except ChannelInvalidStateError:
            log.info("ack for %s lost with its channel; the broker will redeliver", endpoint)

    async def _ensure_reply_queue(self) -> str:
        channel = self._open_channel()
        async with self._reply_lock:
            if self._reply_queue is not None:
                return self._reply_queue
            name = f"fedcast.{self.config.federation}.reply.{uuid.uuid4().hex}"
            with _translated("declare reply queue"):
                async with asyncio.timeout(self.config.operation_timeout):
                    queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
                    await queue.consume(self._on_reply, no_ack=True)
            self._reply_queue = name
            return name

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.debug("late or unknown reply %s dropped", message.correlation_id)
            return
        future.set_result(message.body)


def _check_endpoint(endpoint: str) -> None:
    if not _ENDPOINT.fullmatch(endpoint):
        raise TransportError(f"invalid endpoint name {endpoint!r}")
