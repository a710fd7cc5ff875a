"""What every fedcast service shell shares: logging, SIGTERM, transports, the message gate.

The gate is where untrusted bytes from the broker become protocol messages:
size and header first (cheap), then the sender's registered key, then the
full strict decode and the Ed25519 signature. Anything that fails is counted in
``fedcast_messages_rejected_total{reason}``, logged once per (reason, sender),
and dropped; it never reaches a state machine, never raises into the transport
(so it is acked, not redelivered), and never stops the service.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from shared.crypto.signing import SigningKeyPair
from shared.errors import (
    FedcastError,
    MalformedMessageError,
    RequestTimeoutError,
    TransportError,
    UnknownSenderError,
)
from shared.metrics import (
    MESSAGE_BYTES_RECEIVED,
    MESSAGE_BYTES_SENT,
    MESSAGES_RECEIVED,
    MESSAGES_REJECTED,
    MESSAGES_SENT,
)
from shared.protocol.outgoing import Outgoing
from shared.transport.amqp import AmqpConfig, AmqpTransport
from shared.transport.base import Delivery, Transport
from shared.transport.inprocess import InProcessBroker, InProcessTransport
from shared.wire.messages import Header, MessageType, Signed
from shared.wire.serde import DEFAULT_MAX_MESSAGE_BYTES, WireContext, decode, encode, peek_header, verify

__all__ = [
    "MessageGate",
    "Outbox",
    "RejectLog",
    "configure_logging",
    "install_stop_signals",
    "make_transport",
    "retry_while_unreachable",
]

log = logging.getLogger(__name__)

#: verify_key_of(sender) -> the sender's registered Ed25519 key, or None if unknown/revoked.
KeyLookup = Callable[[str], Awaitable[bytes | None]]


T = TypeVar("T")


async def retry_while_unreachable(call: Callable[[], Awaitable[T]], *, max_delay: float = 10.0) -> T:
    """Retry ``call`` while the peer does not answer (services may start in any order)."""
    delay = 0.5
    while True:
        try:
            return await call()
        except (RequestTimeoutError, TransportError) as exc:
            log.info("peer not reachable yet (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: services finish the current step and shut down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread
            log.debug("cannot install a handler for %s here", sig)


def make_transport(
    amqp_url: str | None,
    federation: str,
    *,
    service: str,
    broker: InProcessBroker | None = None,
    on_send: Callable[[str, int], None] | None = None,
) -> Transport:
    """RabbitMQ when a URL is given, else the in-process broker (the embedded demo)."""
    if amqp_url:
        config = AmqpConfig(amqp_url, federation, connection_name=f"fedcast-{service}")
        return AmqpTransport.from_config(config, on_send=on_send)
    if broker is None:
        raise FedcastError("the in-process transport needs the process's InProcessBroker")
    return InProcessTransport(broker, on_send=on_send)


class RejectLog:
    """Count every rejection; log it once per (reason, sender), later repeats only at DEBUG.

    Thread-safe (the key service rejects from worker threads); the set of logged keys is
    bounded, so a flood of invented sender ids cannot grow it or the log.
    """

    def __init__(self, service: str, *, limit: int = 4096) -> None:
        self._service = service
        self._seen: set[tuple[str, str]] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, exc: FedcastError, sender: str | None) -> None:
        self.record(exc.reason, str(exc), sender)

    def record(self, reason: str, detail: str, sender: str | None) -> None:
        MESSAGES_REJECTED.labels(self._service, reason).inc()
        key = (reason, sender or "?")
        with self._lock:
            first = key not in self._seen
            if first and len(self._seen) < self._limit:
                self._seen.add(key)
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "%s rejected a message from %s [%s]: %s", self._service, key[1], reason, detail)


@dataclass
class MessageGate:
    """Decode, authenticate and count incoming messages of one service."""

    service: str
    federation: str
    ctx: WireContext
    expected: Collection[MessageType]
    verify_key_of: KeyLookup
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        self.rejected = RejectLog(self.service)

    async def admit(self, delivery: Delivery) -> Signed | None:
        """The verified message, or None if it was rejected (already counted and logged)."""
        sender: str | None = None
        try:
            header = peek_header(delivery.body, max_bytes=self.max_bytes)
            sender = header.sender
            self._check_header(header)
            key = await self.verify_key_of(header.sender)
            if key is None:
                raise UnknownSenderError(f"{header.sender!r} is not an active registered party")
            msg = decode(delivery.body, self.ctx, max_bytes=self.max_bytes)
            verify(msg, key, self.ctx)
        except FedcastError as exc:
            self.rejected(exc, sender)
            return None
        MESSAGES_RECEIVED.labels(self.service, msg.header.type.value).inc()
        MESSAGE_BYTES_RECEIVED.labels(self.service, msg.header.type.value).inc(len(delivery.body))
        return msg

    def _check_header(self, header: Header) -> None:
        if header.federation != self.federation:
            raise MalformedMessageError(f"message for federation {header.federation!r}")
        if header.type not in self.expected:
            raise MalformedMessageError(f"{header.type} is not a message this service accepts")


@dataclass
class Outbox:
    """Sign, encode and send what a state machine returns."""

    service: str
    transport: Transport
    federation: str
    sender: str
    signer: SigningKeyPair
    ctx: WireContext

    def encode(self, out: Outgoing) -> bytes:
        header = Header(out.type, self.federation, out.round, out.attempt, self.sender)
        return encode(header, out.body, self.signer, self.ctx)

    async def send(self, outgoing: Collection[Outgoing]) -> None:
        for out in outgoing:
            data = self.encode(out)
            if out.endpoint is None:
                await self.transport.broadcast(data)
            else:
                await self.transport.send(out.endpoint, data)
            MESSAGES_SENT.labels(self.service, out.type.value).inc()
            MESSAGE_BYTES_SENT.labels(self.service, out.type.value).inc(len(data))
