"""What every fedcast service shell shares: logging, SIGTERM, transports, the message gate.

The gate is where untrusted bytes from the broker become protocol messages
(docs/PROTOCOL.md section 5.1). Everything that needs only the header comes
first, because it costs nothing whatever the message's size: the total size,
the header itself (only its bytes are read), federation and type, the length
limit of that type, and the service's screen (the aggregator's stale round,
attempt or stage). Then the sender's registered key, with lookups of unknown
senders bounded (:class:`SenderLookups`), and only then the full strict decode
and the Ed25519 signature. Anything that fails is counted in
``fedcast_messages_rejected_total{reason}``, logged once per (reason, sender),
and dropped; it never reaches a state machine, never raises into the transport
(so it is acked, not redelivered), and never stops the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from fedcast.services.retrying import retry_while_unreachable
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import (
    FedcastError,
    MalformedMessageError,
    StaleMessageError,
    UnknownSenderError,
)
from fedcast.shared.metrics import (
    MESSAGE_BYTES_RECEIVED,
    MESSAGE_BYTES_SENT,
    MESSAGES_RECEIVED,
    MESSAGES_REJECTED,
    MESSAGES_SENT,
)
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.tls import TlsSettings
from fedcast.shared.transport.amqp import AmqpConfig, AmqpTransport
from fedcast.shared.transport.base import Delivery, Transport
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport
from fedcast.shared.wire.messages import Header, MessageType, Signed
from fedcast.shared.wire.serde import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SizeLimits,
    WireContext,
    decode,
    encode,
    peek_header,
    verify,
)

__all__ = [
    "SENDER_CACHE_SIZE",
    "SENDER_LOOKUP_BUDGET",
    "SENDER_LOOKUP_INTERVAL_S",
    "UNKNOWN_SENDER_TTL_S",
    "HeaderScreen",
    "MessageGate",
    "Outbox",
    "RejectLog",
    "SenderLookups",
    "attempt_screen",
    "configure_logging",
    "install_stop_signals",
    "make_transport",
    "retry_while_unreachable",
]

log = logging.getLogger(__name__)

#: verify_key_of(sender) -> the sender's registered Ed25519 key, or None if unknown/revoked.
KeyLookup = Callable[[str], Awaitable[bytes | None]]
#: screen(header) raises a FedcastError (typically StaleMessageError) for a message the
#: service's state refuses from its header alone; it must not await or change any state.
HeaderScreen = Callable[[Header], None]

#: How long a sender whose lookup found nothing (unknown or revoked) is refused without asking
#: again. A flood that repeats invented ids then costs one lookup per id per TTL, and a device
#: that enrolls just after its first message is still admitted within 30 s (the aggregator
#: announces again every ready window while too few clients are ready).
UNKNOWN_SENDER_TTL_S = 30.0
#: Lookups of senders not known to be registered: a budget of SENDER_LOOKUP_BUDGET, refilled
#: evenly over SENDER_LOOKUP_INTERVAL_S (a token bucket). In the audit, 10,000 `ready` messages
#: with invented ids made 10,000 key-service lookups, backed the key-service queue up by 2,373
#: requests and stalled rounds for ~45 s. Now any flood costs at most 1,000 lookups at once (a
#: tenth of that) and then 100 a second, a bounded load for a key service that answers GET_KEYS
#: from memory, while a restarted aggregator, to which every sender is new, can still look up
#: the READYs of a full default online set (1,000 clients) arriving together. Senders found
#: registered are not budgeted.
SENDER_LOOKUP_BUDGET = 1000
SENDER_LOOKUP_INTERVAL_S = 10.0
#: Senders remembered as unknown, and as known: a flood of invented ids cannot grow either past it.
SENDER_CACHE_SIZE = 10_000


T = TypeVar("T")


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
    identity: str | None = None,
    broker: InProcessBroker | None = None,
    on_send: Callable[[str, int], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Transport:
    """RabbitMQ when a URL is given, else the in-process broker (the embedded demo).

    From the environment: ``FEDCAST_AMQP_DECLARE=0`` for a provisioned broker (the process
    declares nothing: ``fedcast broker``), and ``FEDCAST_AMQP_CA_FILE`` (with the optional
    ``FEDCAST_AMQP_CERT_FILE``/``FEDCAST_AMQP_KEY_FILE``) for ``amqps://``. ``identity`` is
    the endpoint this process is (its provisioned reply queue).
    """
    if amqp_url:
        env = os.environ if env is None else env
        config = AmqpConfig(
            amqp_url,
            federation,
            connection_name=f"fedcast-{service}",
            declare=env.get("FEDCAST_AMQP_DECLARE", "1") != "0",
            identity=identity,
            tls=TlsSettings.from_env(env),
        )
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


def attempt_screen(current: Callable[[], tuple[int, int, MessageType | None]]) -> HeaderScreen:
    """A screen for a receiver that takes each type only in one stage of its current attempt.

    ``current()`` returns (round, attempt, the type the current stage expects or None). That
    is the aggregator's rule (PROTOCOL.md 5.5): anything else is ``stale``, and is refused from
    the header alone, before the sender's key, the body or the signature cost anything. The
    state machine checks again when it handles the message (the state may move meanwhile).
    """

    def screen(header: Header) -> None:
        round_id, attempt, expects = current()
        if (header.round, header.attempt) != (round_id, attempt):
            raise StaleMessageError(
                f"{header.type.value} for round {header.round} attempt {header.attempt}; "
                f"current is {round_id}/{attempt}"
            )
        if header.type != expects:
            raise StaleMessageError(f"{header.type.value} is not expected in the current stage")

    return screen


class SenderLookups:
    """Bounds the key lookups that senders nobody knows can cause.

    A sender whose lookup returned a key is *known*, and is looked up (by the service's own
    lookup, which may cache) without limit. Any other sender costs one lookup from a budget of
    ``budget``, refilled evenly over ``interval_s``; when it is spent, the sender is refused as
    ``unknown_sender`` without a lookup. A lookup that finds nothing is remembered for
    ``ttl_s``, during which the sender is refused without one; afterwards it is asked again,
    so a device that enrolls later is found. A lookup that fails (timeout, broker) is not
    remembered. Not thread-safe: one event loop.
    """

    def __init__(
        self,
        *,
        ttl_s: float = UNKNOWN_SENDER_TTL_S,
        budget: int = SENDER_LOOKUP_BUDGET,
        interval_s: float = SENDER_LOOKUP_INTERVAL_S,
        max_entries: int = SENDER_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or budget < 0 or interval_s <= 0 or max_entries < 1:
            raise FedcastError("SenderLookups: ttl_s, budget >= 0, interval_s > 0, max_entries >= 1")
        self._ttl = ttl_s
        self._budget = budget
        self._interval = interval_s
        self._max_entries = max_entries
        self._clock = clock
        self._unknown: OrderedDict[str, float] = OrderedDict()  # sender -> refused unasked until
        self._known: OrderedDict[str, None] = OrderedDict()  # least recently confirmed first
        self._tokens = float(budget)
        self._refilled_at = clock()

    async def key_of(self, sender: str, lookup: KeyLookup) -> bytes:
        """``sender``'s verify key by ``lookup``; UnknownSenderError without a lookup if bounded."""
        if sender not in self._known:
            now = self._clock()
            until = self._unknown.get(sender)
            if until is not None:
                if now < until:
                    raise UnknownSenderError(f"{sender!r} is not an active registered party (cached)")
                del self._unknown[sender]
            if not self._spend(now):
                raise UnknownSenderError(
                    f"{sender!r} not looked up: the budget of {self._budget} lookups of unknown "
                    f"senders per {self._interval:g} s is spent"
                )
        key = await lookup(sender)
        if key is None:
            self._known.pop(sender, None)  # revoked since it was known
            self._remember(self._unknown, sender, self._clock() + self._ttl)
            raise UnknownSenderError(f"{sender!r} is not an active registered party")
        self._remember(self._known, sender, None)
        return key

    def _spend(self, now: float) -> bool:
        refill = max(0.0, now - self._refilled_at) * self._budget / self._interval
        self._tokens = min(float(self._budget), self._tokens + refill)
        self._refilled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _remember(self, cache: OrderedDict[str, T], sender: str, value: T) -> None:
        cache[sender] = value
        cache.move_to_end(sender)
        while len(cache) > self._max_entries:  # the oldest entry goes: the negative one expires first
            cache.popitem(last=False)


@dataclass
class MessageGate:
    """Check, decode, authenticate and count incoming messages of one service.

    ``limits`` (default: what ``ctx`` and ``max_bytes`` alone bound) refuses a message longer
    than its type allows; ``screen`` refuses what the service's state does not expect;
    ``lookups`` bounds the key lookups of unknown senders. All of them before the body.
    """

    service: str
    federation: str
    ctx: WireContext
    expected: Collection[MessageType]
    verify_key_of: KeyLookup
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    limits: SizeLimits | None = None
    screen: HeaderScreen | None = None
    lookups: SenderLookups = field(default_factory=SenderLookups)

    def __post_init__(self) -> None:
        self.rejected = RejectLog(self.service)
        self._limits = SizeLimits(self.ctx, max_bytes=self.max_bytes) if self.limits is None else self.limits

    async def admit(self, delivery: Delivery) -> Signed | None:
        """The verified message, or None if it was rejected (already counted and logged)."""
        sender: str | None = None
        data = delivery.body
        try:
            header = peek_header(data, max_bytes=self.max_bytes)  # reads the header's bytes only
            sender = header.sender
            self._check_header(header)
            self._limits.check(header.type, len(data))
            if self.screen is not None:
                self.screen(header)
            key = await self.lookups.key_of(header.sender, self.verify_key_of)
            msg = decode(data, self.ctx, max_bytes=self.max_bytes)
            verify(msg, key, self.ctx)
        except FedcastError as exc:
            self.rejected(exc, sender)
            return None
        MESSAGES_RECEIVED.labels(self.service, msg.header.type.value).inc()
        MESSAGE_BYTES_RECEIVED.labels(self.service, msg.header.type.value).inc(len(data))
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
