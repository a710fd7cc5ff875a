"""RabbitMQ transport (aio-pika): one robust connection per process.

Topology of federation ``F`` (all names derive from the federation id):

* ``fedcast.F``: durable **topic** exchange, routing key = endpoint (bindings use no
  wildcards, so it routes like a direct exchange; a topic exchange lets the broker check
  *topic permissions* on routing keys: a device may publish to ``aggregator`` and
  ``keyserver`` only, shared/transport/brokeradmin.py);
* ``fedcast.F.broadcast``: durable **fanout** exchange;
* ``fedcast.F.<endpoint>``: durable **quorum** queue per endpoint, bound to ``fedcast.F``
  with the endpoint as routing key, and to the fanout once consumed with ``broadcast=True``.
  ``client.*`` queues also carry ``x-message-ttl`` (default 1 h: round messages are stale
  by then), ``x-max-length`` (default 1,000) and ``x-overflow: drop-head``, so an
  offline device cannot fill the broker: its oldest (stalest) messages go first, and a
  full queue never makes the broker nack a publish, which for a fanout would fail the
  aggregator's broadcast to every other client (a quorum queue holds one message past
  the limit);
* RPC reply queues, bound to ``fedcast.F`` with routing key ``reply.<name>``, which is what
  a request's ``reply_to`` carries; the answer goes through ``fedcast.F`` (so the key
  service needs no right to the default exchange, which reaches every queue): in a
  self-declaring process ``fedcast.F.reply.<uuid>``, classic, exclusive, auto-delete; in a
  provisioned one (``declare=False``) ``fedcast.F.reply.<identity>``, made by the tooling.

Two ways to run. *Self-declaring* (``declare=True``, development and tests): every process
declares the exchanges and the queues it uses. *Provisioned* (``declare=False``, production):
``fedcast broker`` made the topology and one user per party beforehand, and the process
only checks that its queue exists (a passive declaration, which needs no right) and
consumes it; it holds no right to configure anything. ``amqps://`` needs the pinned CA
(:class:`fedcast.shared.tls.TlsSettings`).

Broker-side bounds of the ``keyserver`` and ``aggregator`` queues (max length with
``reject-publish``: a publisher to a full queue gets a nack, raised here as
:class:`TransportError`) and a byte bound of the ``client.*`` queues come from the broker
policies of :func:`broker_policies`, which the deployment applies (k8s/base/rabbitmq,
docker-compose.yml, docs/DEPLOY.md), not from ``x-`` arguments: a queue's arguments are
fixed when it is first declared, and declaring an existing queue with other arguments
fails with PRECONDITION_FAILED, whereas RabbitMQ applies a policy, and a change of it,
to existing queues without any redeclaration.

Broadcasts are published *mandatory*: one that no queue is bound to (no client has
consumed yet, as at the aggregator's first announcement) comes back from the broker and
is counted in :attr:`AmqpTransport.unroutable_broadcasts`, not raised. Announcements
carry a per-message expiration (``broadcast(expiration=...)``), so an offline client's
queue keeps no backlog of stale ones.

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
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import aio_pika
import aio_pika.abc
import pamqp.exceptions
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from pamqp.commands import Basic

from fedcast.shared.errors import ConfigurationError, RequestTimeoutError, TransportError
from fedcast.shared.params import DEFAULT_MAX_CLIENTS
from fedcast.shared.tls import TlsSettings
from fedcast.shared.transport.base import Delivery, Handler, Transport, UnroutableBroadcasts

__all__ = [
    "CLIENT_QUEUE_MAX_BYTES",
    "SERVICE_QUEUE_MAX_BYTES",
    "SERVICE_QUEUE_MAX_LENGTH",
    "AmqpConfig",
    "AmqpTransport",
    "BrokerPolicy",
    "SendHook",
    "broker_policies",
]

log = logging.getLogger(__name__)

SendHook = Callable[[str, int], None]
"""``on_send(endpoint, n_bytes)``: called once per published message (a broadcast counts once)."""

_FEDERATION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REPLY_KEY = re.compile(r"reply\.[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BROKER_ERRORS = (AMQPError, OSError, pamqp.exceptions.PAMQPException)  # OSError covers TimeoutError
_RABBITMQ_MAX_MESSAGE = 128 * 1024 * 1024  # RabbitMQ's default max_message_size
_MAX_EXPIRATION_S = 2**32 / 1000 - 1  # AMQP's expiration is a 32-bit count of milliseconds

#: Messages a ``keyserver`` or ``aggregator`` queue holds before the broker refuses publishes.
#: Four per client of the largest online set (``DEFAULT_MAX_CLIENTS``, 1,000): a full round's
#: READY, UPLOAD and RESPONSE from every client waiting at once, with as much again for
#: retries and the requests of clients starting together, all fit; the audit's flood (10,000
#: invented senders) backed the key-service queue up by 2,373, and a flood now stops at 4,000
#: with the flooder's publishes nacked instead of memory and disk growing.
SERVICE_QUEUE_MAX_LENGTH = 4 * DEFAULT_MAX_CLIENTS
#: Bytes a service queue holds before publishes are refused: with 4 MiB messages (the broker's
#: max_message_size, docs/DEPLOY.md) 4,000 of them could otherwise fill the broker's 8 GiB
#: volume and raise its disk alarm, which blocks every publisher. 512 MiB is ~7 rounds of the
#: largest sizing example (100 clients x 10^5 parameters: ~75 MB of uploads a round) and
#: thousands of rounds of the default model (~4.3 kB per upload).
SERVICE_QUEUE_MAX_BYTES = 512 * 1024 * 1024
#: Bytes an offline client's queue keeps (its oldest messages go first: ``drop-head``, from
#: the queue's own arguments): four of the largest messages the default broker accepts.
CLIENT_QUEUE_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class BrokerPolicy:
    """A RabbitMQ policy fedcast's deployment applies (``rabbitmqctl set_policy``).

    The patterns match the queues of any federation whose id has no dot (``default`` in the
    shipped configuration); only one policy applies to a queue, the one of highest priority,
    so an operator's own policy for these queues must carry these keys too.
    """

    name: str
    pattern: str
    definition: Mapping[str, int | str] = field(hash=False)
    priority: int = 10
    apply_to: str = "queues"

    def rabbitmqctl_args(self, vhost: str | None = None) -> list[str]:
        """``rabbitmqctl`` arguments that create or update this policy (on ``vhost``, default ``/``)."""
        where = [] if vhost is None else ["-p", vhost]
        body = json.dumps(dict(self.definition), sort_keys=True, separators=(",", ":"))
        return [
            "set_policy",
            *where,
            "--apply-to",
            self.apply_to,
            "--priority",
            str(self.priority),
            self.name,
            self.pattern,
            body,
        ]


def broker_policies(
    *,
    service_max_length: int = SERVICE_QUEUE_MAX_LENGTH,
    service_max_bytes: int = SERVICE_QUEUE_MAX_BYTES,
    client_max_bytes: int = CLIENT_QUEUE_MAX_BYTES,
) -> tuple[BrokerPolicy, ...]:
    """The broker-side bounds of fedcast's queues, as the deployment must apply them."""
    for name, value in (
        ("service_max_length", service_max_length),
        ("service_max_bytes", service_max_bytes),
        ("client_max_bytes", client_max_bytes),
    ):
        if type(value) is not int or value < 1:
            raise ConfigurationError(f"{name} must be a positive int")
    return (
        BrokerPolicy(
            "fedcast-service-queues",
            r"^fedcast\.[^.]+\.(aggregator|keyserver)$",
            {
                "max-length": service_max_length,
                "max-length-bytes": service_max_bytes,
                "overflow": "reject-publish",
            },
        ),
        # Only a byte bound: count, age and drop-head come from the client queues' x-arguments
        # (the overflow of x-arguments wins over a policy's; the lower max-length of the two applies).
        BrokerPolicy(
            "fedcast-client-queues", r"^fedcast\.[^.]+\.client\.", {"max-length-bytes": client_max_bytes}
        ),
    )


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
    #: Self-declaring (True) or provisioned (False: declares nothing, ``fedcast broker``).
    declare: bool = True
    #: The endpoint this process is (``aggregator``, ``keyserver``, ``client.<id>``): names
    #: its provisioned reply queue. Needed to make requests when ``declare`` is False.
    identity: str | None = None
    #: The pinned CA (and client certificate) for ``amqps://``.
    tls: TlsSettings | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("amqp://", "amqps://")):
            raise ConfigurationError("url must start with amqp:// or amqps://")
        if self.url.startswith("amqps://") and self.tls is None:
            raise ConfigurationError(
                "amqps:// needs the broker's CA to pin (FEDCAST_AMQP_CA_FILE): the system's trust "
                "store is not used"
            )
        if self.url.startswith("amqp://") and self.tls is not None:
            raise ConfigurationError("TLS settings are given but the URL is amqp://: use amqps://")
        if self.identity is not None and not _ENDPOINT.fullmatch(self.identity):
            raise ConfigurationError(f"invalid identity {self.identity!r}")
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
        """The topic exchange (routing key = endpoint)."""
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


class _FirstConnectNoise(logging.Filter):
    """Drops what aio-pika and aiormq log when a *first* connect fails.

    aiormq logs the socket error at ERROR and aio-pika announces "Reconnecting after 1
    seconds" although nothing will reconnect: the connect raises, :meth:`AmqpTransport.connect`
    closes the connection, and the caller's one retry policy (services/retrying.py) logs the
    failure once, clearly. Later reconnects of a working connection are logged as usual.
    """

    _NOISE = ("Reconnecting after", "error when creating transport")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in record.getMessage() for noise in self._NOISE)


_NOISY_LOGGERS = ("aio_pika.robust_connection", "aiormq.connection")


@contextlib.contextmanager
def _quiet_first_connect() -> Iterator[None]:
    noise = _FirstConnectNoise()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn aio-pika/aiormq/socket errors into TransportError at the module boundary."""
    try:
        yield
    except DeliveryError as exc:
        frame = exc.frame
        if isinstance(frame, Basic.Nack):
            # reject-publish: the destination queue is at its policy's max-length(-bytes).
            raise TransportError(f"{what}: rejected by the broker (destination queue full)") from exc
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
        config: AmqpConfig | None = None,
    ) -> None:
        """The common settings here; all of them (TLS, provisioned mode) through :meth:`from_config`."""
        self.config = config or AmqpConfig(
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
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._fanout: aio_pika.abc.AbstractExchange | None = None
        self._declared: set[str] = set()  # endpoints whose queue+binding this process declared
        self._reply_queue: str | None = None
        self._reply_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._handlers: set[asyncio.Task[object]] = set()  # running _on_message tasks
        self._unroutable = UnroutableBroadcasts(log)
        self._closed = False
        self.handler_errors = 0
        """Messages whose handler raised (each acked after one log line)."""
        self.reconnects = 0
        """Times the connection was re-established."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    @property
    def unroutable_broadcasts(self) -> int:
        """Broadcasts that reached no queue (none bound to the fanout yet); not errors."""
        return self._unroutable.count

    @classmethod
    def from_config(cls, config: AmqpConfig, *, on_send: SendHook | None = None) -> AmqpTransport:
        """A transport with every setting of ``config``."""
        return cls(config.url, config.federation, on_send=on_send, config=config)

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
            ssl_context=None if cfg.tls is None else cfg.tls.client_context(),
        )
        try:
            with _quiet_first_connect(), _translated(f"connect to federation {cfg.federation}"):
                async with asyncio.timeout(cfg.connect_timeout):
                    await connection.connect(timeout=cfg.connect_timeout)
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                    if cfg.declare:
                        self._exchange = await channel.declare_exchange(
                            cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                        )
                        self._fanout = await channel.declare_exchange(
                            cfg.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=True
                        )
                    else:  # provisioned: use them as they are (a passive check needs no right)
                        self._exchange = await channel.get_exchange(cfg.exchange, ensure=True)
                        self._fanout = await channel.get_exchange(cfg.broadcast_exchange, ensure=True)
        except BaseException:
            with _quiet_first_connect(), contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await connection.close()
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection, self._channel = connection, channel

    async def close(self) -> None:
        """Interrupt running handlers, fail pending requests, close the connection; idempotent.

        The handlers are cancelled first, as the in-process transport does: their messages
        are redelivered (unacked), and a handler can no longer go on to send on the closed
        transport, which it would log as a failure ("transport is closed") although the
        shutdown was clean. A request made outside a handler fails with TransportError.
        """
        if self._closed:
            return
        self._closed = True
        me = asyncio.current_task()
        handlers = [task for task in self._handlers if task is not me and not task.done()]
        for task in handlers:
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("transport closed while waiting for a reply"))
        if handlers:
            # Bounded: a handler that swallows the cancellation must not hold up the shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.operation_timeout):
                    await asyncio.gather(*handlers, return_exceptions=True)
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

    async def broadcast(self, body: bytes, *, expiration: float | None = None) -> None:
        """Publish to the fanout; returns once every bound queue has it (publisher confirm).

        Mandatory, so that the broker says when no queue is bound to the fanout (no client has
        consumed yet): aio-pika publishes mandatory by default, and with the confirm channel's
        ``on_return_raises`` that return used to surface as ``TransportError(... NO_ROUTE)``,
        the aggregator's failed first announcement at start-up. It is now counted in
        :attr:`unroutable_broadcasts` and logged once per stretch, not raised: nobody was
        there to miss it, and the aggregator announces again every ready window.

        ``expiration`` (seconds) is the copies' per-message TTL in every queue. Raises
        :class:`TransportError` if a bound queue rejected the message (the broker nacks the
        publish as a whole although the other queues got it; client queues drop their head
        instead, so this only happens with a non-fedcast queue bound to the fanout).
        """
        channel = self._open_channel()
        assert self._fanout is not None
        self._check_size(body)
        message = self._message(body, expiration=_checked_expiration(expiration))
        with _translated("broadcast"):
            try:
                async with asyncio.timeout(self.config.operation_timeout):
                    await channel.ready()
                    await self._fanout.publish(message, routing_key="", mandatory=True)
            except DeliveryError as exc:
                if not isinstance(exc.frame, Basic.Return):
                    raise
                self._unroutable.unroutable(str(exc.frame.reply_text))
                return
        self._unroutable.routed()
        if self._on_send is not None:
            self._on_send("*", len(body))

    async def reply(self, request: Delivery, body: bytes) -> None:
        """Answer ``request`` through ``fedcast.F``; dropped by the broker if the requester is gone.

        ``reply_to`` must be a ``reply.<name>`` routing key: a requester cannot make the key
        service publish into another party's queue (``aggregator``, ``client.<id>``).
        """
        channel = self._open_channel()
        assert self._exchange is not None
        if request.reply_to is None:
            raise TransportError("cannot reply to a message without reply_to")
        if not _REPLY_KEY.fullmatch(request.reply_to):
            raise TransportError(f"reply_to {request.reply_to[:80]!r} is not a reply.<name> routing key")
        self._check_size(body)
        message = aio_pika.Message(body, correlation_id=request.correlation_id)
        with _translated(f"reply to {request.reply_to}"):
            async with asyncio.timeout(self.config.operation_timeout):
                await channel.ready()
                await self._exchange.publish(message, routing_key=request.reply_to, mandatory=False)
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
        assert self._exchange is not None
        _check_endpoint(endpoint)
        self._check_size(body)
        with _translated(f"send to {endpoint}"):
            try:
                async with asyncio.timeout(self.config.operation_timeout):
                    await channel.ready()  # during a reconnect: wait, within the timeout
                    if self.config.declare and endpoint not in self._declared:
                        # Sends may precede the consumer: create its queue and binding now, with the
                        # consumer's exact arguments; not robust (durable, nothing to restore).
                        queue = await channel.declare_queue(
                            self.config.queue_name(endpoint),
                            durable=True,
                            arguments=self.config.queue_arguments(endpoint),
                            robust=False,
                        )
                        await queue.bind(self._exchange, routing_key=endpoint, robust=False)
                        self._declared.add(endpoint)
                    message = self._message(body, correlation_id, reply_to, expiration)
                    await self._exchange.publish(message, routing_key=endpoint, mandatory=True)
            except DeliveryError as exc:
                if isinstance(exc.frame, Basic.Return):
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
                    if cfg.declare:
                        queue = await channel.declare_queue(
                            cfg.queue_name(endpoint), durable=True, arguments=cfg.queue_arguments(endpoint)
                        )
                        await queue.bind(cfg.exchange, routing_key=endpoint)
                        if broadcast:
                            await queue.bind(cfg.broadcast_exchange, routing_key="")
                    else:  # provisioned with its bindings; a passive check needs no right
                        queue = await channel.declare_queue(cfg.queue_name(endpoint), passive=True)
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
        if self._closed:
            # Delivered while close() runs: left unacked, the broker redelivers it to the next
            # consumer once this connection is gone.
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
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
        except asyncio.CancelledError:
            if not self.closed:
                raise
            # close() interrupted it: a clean shutdown, not a failure (the message is redelivered).
            log.debug("handler for %s interrupted by close; the broker will redeliver", endpoint)

    async def _ensure_reply_queue(self) -> str:
        """The ``reply_to`` routing key of this process's requests (its queue consumed)."""
        channel = self._open_channel()
        cfg = self.config
        async with self._reply_lock:
            if self._reply_queue is not None:
                return self._reply_queue
            with _translated("reply queue"):
                async with asyncio.timeout(cfg.operation_timeout):
                    if cfg.declare:
                        key = f"reply.{uuid.uuid4().hex}"
                        queue = await channel.declare_queue(
                            cfg.queue_name(key), exclusive=True, auto_delete=True
                        )
                        await queue.bind(cfg.exchange, routing_key=key)
                    else:
                        if cfg.identity is None:
                            raise ConfigurationError(
                                "a provisioned transport needs its identity to make requests"
                            )
                        key = f"reply.{cfg.identity}"
                        queue = await channel.declare_queue(cfg.queue_name(key), passive=True)
                    await queue.consume(self._on_reply, no_ack=True)
            self._reply_queue = key
            return key

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.debug("late or unknown reply %s dropped", message.correlation_id)
            return
        future.set_result(message.body)


def _check_endpoint(endpoint: str) -> None:
    if not _ENDPOINT.fullmatch(endpoint):
        raise TransportError(f"invalid endpoint name {endpoint!r}")


def _checked_expiration(expiration: float | None) -> float | None:
    """A per-message TTL in AMQP's range (whole ms, 32 bits); not positive is a caller's bug."""
    if expiration is None:
        return None
    if not expiration > 0 or math.isnan(expiration):
        raise ConfigurationError(f"expiration must be a positive number of seconds, got {expiration!r}")
    return min(max(expiration, 0.001), _MAX_EXPIRATION_S)
